//! Searching the caller's own messages and replies: PostgreSQL full-text search over the
//! `messages_search` index (V12: `simple` configuration, the user id in the same GIN
//! index), ranked, with a highlighted snippet, a page at a time.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub const QUERY_MAX: usize = 1000;
pub const LIMIT_DEFAULT: i64 = 20;
pub const LIMIT_MAX: i64 = 50;

/// Around the matched words in the SQL snippet: private-use characters, removed from the
/// text first, so no message can forge a highlight.
const START: char = '\u{E000}';
const STOP: char = '\u{E001}';
/// Stand-ins for `<` and `>` while `ts_headline` runs: its parser takes `<b>` for a tag
/// and drops it, and a snippet should show the text as written.
const LT: char = '\u{E002}';
const GT: char = '\u{E003}';

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Hit {
    pub chatroom_id: Uuid,
    pub chatroom_name: Option<String>,
    pub message_id: Uuid,
    /// `user` or `model`.
    pub role: String,
    /// For a model reply: the user message it answers.
    pub reply_to: Option<Uuid>,
    /// The matching passage, as plain text.
    pub snippet: String,
    /// The same passage as HTML: the text escaped, the matched words in `<mark>`.
    pub snippet_html: String,
    pub created_at: DateTime<Utc>,
    /// Higher is better (PostgreSQL `ts_rank`); results come best first.
    pub rank: f32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Results {
    pub results: Vec<Hit>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Where the next page starts: after this (rank, seq) in result order.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cursor {
    rank: f32,
    seq: i64,
}

impl Cursor {
    /// `<rank bits in hex>_<seq>`: exact (a float printed in decimal may not round-trip).
    fn encode(&self) -> String {
        format!("{:08x}_{}", self.rank.to_bits(), self.seq)
    }

    fn parse(raw: &str) -> AppResult<Self> {
        let bad = || AppError::validation("cursor must be a next_cursor from GET /search");
        let (bits, seq) = raw.split_once('_').ok_or_else(bad)?;
        let rank = f32::from_bits(u32::from_str_radix(bits, 16).map_err(|_| bad())?);
        if !rank.is_finite() {
            return Err(bad());
        }
        Ok(Self {
            rank,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Trimmed, 1–1000 characters, no NUL.
pub fn parse_query(raw: &str) -> AppResult<&str> {
    let q = raw.trim();
    if q.is_empty() || q.chars().count() > QUERY_MAX || q.contains('\0') {
        return Err(AppError::validation(format!(
            "q must be 1 to {QUERY_MAX} characters, not blank"
        )));
    }
    Ok(q)
}

/// Matches ranked per search: the most recent this many. A word in more of the caller's
/// messages than that (a common one) is ranked among its newest 2,000 matches, so a search
/// costs about the same at 10 thousand messages as at a million (docs/performance.md).
pub const RANK_WINDOW: i64 = 2000;

/// The ranked page (`websearch_to_tsquery` syntax: words, "a phrase", `or`, `-word`),
/// best first, ties newest first. A query with no searchable word (only punctuation)
/// matches nothing. The query is written out where it is used (not in a CTE) so the
/// planner sees its words: a rare word is found through the `messages_search` GIN index,
/// a common one by walking `messages_by_user` newest first until the window is full.
const SEARCH: &str = "WITH hits AS ( \
         SELECT m.id, m.seq, m.chatroom_id, m.role, m.reply_to, m.content, m.created_at \
         FROM messages m \
         WHERE m.user_id = $1 \
             AND to_tsvector('simple'::regconfig, m.content) @@ websearch_to_tsquery('simple', $2) \
         ORDER BY m.seq DESC LIMIT $8), \
     page AS ( \
         SELECT h.*, ts_rank(to_tsvector('simple'::regconfig, h.content), \
             websearch_to_tsquery('simple', $2)) AS rank FROM hits h), \
     best AS ( \
         SELECT * FROM page WHERE $3::real IS NULL OR (rank, seq) < ($3, $4) \
         ORDER BY rank DESC, seq DESC LIMIT $5) \
     SELECT b.id, b.seq, b.chatroom_id, c.name, b.role, b.reply_to, b.created_at, b.rank, \
         ts_headline('simple', translate(b.content, $6, $9), websearch_to_tsquery('simple', $2), $7) \
             AS snippet \
     FROM best b JOIN chatrooms c ON c.id = b.chatroom_id \
     ORDER BY b.rank DESC, b.seq DESC";

pub async fn search(
    state: &AppState,
    user: Uuid,
    raw_query: &str,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> AppResult<Results> {
    let query = parse_query(raw_query)?;
    let after = cursor.map(Cursor::parse).transpose()?;
    let limit = limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(AppError::validation(format!(
            "limit must be between 1 and {LIMIT_MAX}"
        )));
    }
    // `<` and `>` become LT and GT; the markers are deleted (no counterpart).
    let from: String = ['<', '>', START, STOP].iter().collect();
    let to: String = [LT, GT].iter().collect();
    let options = format!(
        "StartSel={START}, StopSel={STOP}, MaxWords=30, MinWords=12, MaxFragments=2, \
         FragmentDelimiter=\" … \""
    );
    let db = state.db().await?;
    // Planned for this query's words each time (an unnamed statement, not a cached one):
    // a generic plan cannot tell a rare word from a common one (see SEARCH).
    let rows = db
        .query(
            SEARCH,
            &[
                &user,
                &query,
                &after.map(|c| c.rank),
                &after.map(|c| c.seq),
                &(limit + 1),
                &from,
                &options,
                &RANK_WINDOW,
                &to,
            ],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let mut last = None;
    let results = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            let marked: String = r.get("snippet");
            last = Some(Cursor {
                rank: r.get("rank"),
                seq: r.get("seq"),
            });
            Hit {
                chatroom_id: r.get("chatroom_id"),
                chatroom_name: r.get("name"),
                message_id: r.get("id"),
                role: r.get("role"),
                reply_to: r.get("reply_to"),
                snippet: marked
                    .replace([START, STOP], "")
                    .replace(LT, "<")
                    .replace(GT, ">"),
                snippet_html: snippet_html(&marked),
                created_at: r.get("created_at"),
                rank: r.get("rank"),
            }
        })
        .collect();
    Ok(Results {
        results,
        next_cursor: if more { last.map(|c| c.encode()) } else { None },
    })
}

/// The snippet as HTML: every character escaped, the markers turned into `<mark>`.
fn snippet_html(marked: &str) -> String {
    let mut out = String::with_capacity(marked.len() + 32);
    for c in marked.chars() {
        match c {
            START => out.push_str("<mark>"),
            STOP => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' | LT => out.push_str("&lt;"),
            '>' | GT => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_escape_everything_but_the_marks() {
        let marked = format!("a <b>&\"' {START}word{STOP} {LT}i{GT} end");
        assert_eq!(
            snippet_html(&marked),
            "a &lt;b&gt;&amp;&quot;&#39; <mark>word</mark> &lt;i&gt; end"
        );
    }

    #[test]
    fn cursors_round_trip_exactly_and_refuse_junk() {
        let c = Cursor {
            rank: 0.1f32 / 3.0,
            seq: 42,
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        assert!(Cursor::parse("zz_1").is_err());
        assert!(Cursor::parse("7fc00000_1").is_err()); // NaN
        assert!(Cursor::parse("nope").is_err());
    }

    #[test]
    fn queries_are_bounded() {
        assert!(parse_query("   ").is_err());
        assert_eq!(parse_query(" rust ").unwrap(), "rust");
        assert!(parse_query(&"a".repeat(1000)).is_ok());
        assert!(parse_query(&"a".repeat(1001)).is_err());
    }
}
