//! Messages: user messages and the model replies that answer them.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::error::AppResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Answered,
    Failed,
    Blocked,
    /// A model reply.
    Complete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Answered => "answered",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
            Self::Complete => "complete",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub chatroom_id: Uuid,
    pub role: String,
    pub content: String,
    pub status: String,
    /// For a model reply: the user message it answers.
    pub reply_to: Option<Uuid>,
    pub finish_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub seq: i64,
    #[serde(skip)]
    pub user_id: Uuid,
}

impl Message {
    pub fn is_terminal(&self) -> bool {
        self.status != Status::Pending.as_str()
    }
}

pub const CONTENT_MAX: usize = 4000;

const COLUMNS: &str = "id, seq, chatroom_id, user_id, role, content, status, reply_to, \
                       finish_reason, failure_reason, created_at";

pub fn from_row(row: &Row) -> Message {
    Message {
        id: row.get("id"),
        seq: row.get("seq"),
        chatroom_id: row.get("chatroom_id"),
        user_id: row.get("user_id"),
        role: row.get("role"),
        content: row.get("content"),
        status: row.get("status"),
        reply_to: row.get("reply_to"),
        finish_reason: row.get("finish_reason"),
        failure_reason: row.get("failure_reason"),
        created_at: row.get("created_at"),
    }
}

/// Stores a pending user message; `None` when `user` owns no such chatroom. The chatroom
/// row is only read (its latest activity is this message, see `chatrooms::COLUMNS`), so
/// concurrent senders into one chatroom do not queue on its row.
pub async fn insert_user_message<C: GenericClient>(
    db: &C,
    user: Uuid,
    chatroom: Uuid,
    content: &str,
) -> AppResult<Option<Message>> {
    // One statement: the message and its entry in the sweeper's pending list.
    let sql = format!(
        "WITH m AS ( \
             INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
             SELECT $1, c.id, c.user_id, 'user', $4, 'pending' FROM chatrooms c \
             WHERE c.id = $2 AND c.user_id = $3 RETURNING {COLUMNS}), \
         listed AS (INSERT INTO pending_messages (message_id) SELECT id FROM m) \
         SELECT * FROM m"
    );
    let result = db
        .query_opt(
            &db.prepare_cached(&sql).await?,
            &[&Uuid::now_v7(), &chatroom, &user, &content],
        )
        .await;
    match result {
        Ok(row) => Ok(row.as_ref().map(from_row)),
        // The chatroom was deleted between this statement's read and its foreign-key
        // check: as gone as if the read had missed it.
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn by_id<C: GenericClient>(db: &C, id: Uuid) -> AppResult<Option<Message>> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE id = $1");
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id])
        .await?
        .as_ref()
        .map(from_row))
}

/// A message of `user` in `chatroom`, or `None`.
pub async fn owned<C: GenericClient>(
    db: &C,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
) -> AppResult<Option<Message>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE id = $1 AND chatroom_id = $2 AND user_id = $3"
    );
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id, &chatroom, &user])
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn reply_to<C: GenericClient>(db: &C, message: Uuid) -> AppResult<Option<Message>> {
    let sql = format!("SELECT {COLUMNS} FROM messages WHERE reply_to = $1");
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&message])
        .await?
        .as_ref()
        .map(from_row))
}

/// Up to `limit` messages older than `before_seq` (all when `None`), oldest first.
/// Returns whether older ones remain.
pub async fn page<C: GenericClient>(
    db: &C,
    chatroom: Uuid,
    before_seq: Option<i64>,
    limit: i64,
) -> AppResult<(Vec<Message>, bool)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE chatroom_id = $1 AND seq < $2 \
         ORDER BY seq DESC LIMIT $3"
    );
    let rows = db
        .query(
            &db.prepare_cached(&sql).await?,
            &[&chatroom, &before_seq.unwrap_or(i64::MAX), &(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let mut out: Vec<Message> = rows.iter().take(limit as usize).map(from_row).collect();
    out.reverse();
    Ok((out, more))
}

/// One earlier exchange: a user message and the model reply that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub prompt: String,
    pub reply: String,
}

/// The conversation before message `seq`: up to `max_exchanges` of the newest answered
/// user messages, each paired with its reply, oldest first. Pairing (rather than reading
/// rows in insertion order) keeps the turns strictly alternating: a blocked prompt and
/// its canned reply are left out together, and a reply stored after a later message
/// still follows the message it answers.
pub async fn history<C: GenericClient>(
    db: &C,
    chatroom: Uuid,
    before_seq: i64,
    max_exchanges: i64,
) -> AppResult<Vec<Exchange>> {
    // Bounded: only the latest rows (four per exchange asked for, room for failed or
    // pending messages in between) are looked at, whatever the chatroom's size.
    let sql = "WITH recent AS ( \
                   SELECT id, seq, content, role, status FROM messages \
                   WHERE chatroom_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $4) \
               SELECT u.content, r.content FROM recent u \
               JOIN messages r ON r.reply_to = u.id \
               WHERE u.role = 'user' AND u.status = 'answered' \
               ORDER BY u.seq DESC LIMIT $3";
    let rows = db
        .query(
            &db.prepare_cached(sql).await?,
            &[&chatroom, &before_seq, &max_exchanges, &(max_exchanges * 4)],
        )
        .await?;
    let mut out: Vec<Exchange> = rows
        .iter()
        .map(|r| Exchange {
            prompt: r.get(0),
            reply: r.get(1),
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Marks a still-pending user message `failed`; its owner when it was still pending.
pub async fn mark_failed<C: GenericClient>(
    db: &C,
    id: Uuid,
    reason: &str,
) -> AppResult<Option<Uuid>> {
    let sql = "WITH failed AS ( \
                   UPDATE messages SET status = 'failed', failure_reason = $2, updated_at = now() \
                   WHERE id = $1 AND status = 'pending' RETURNING id, user_id), \
               unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM failed)) \
               SELECT user_id FROM failed";
    let row = db
        .query_opt(&db.prepare_cached(sql).await?, &[&id, &reason])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A message that never reached the queue: it fails, and its idempotency key is freed
/// in the same statement, so a retry with that key starts afresh instead of replaying.
pub async fn fail_unqueued<C: GenericClient>(db: &C, id: Uuid, reason: &str) -> AppResult<()> {
    db.execute(
        "WITH failed AS ( \
             UPDATE messages SET status = 'failed', failure_reason = $2, updated_at = now() \
             WHERE id = $1 AND status = 'pending' RETURNING id), \
         unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM failed)) \
         DELETE FROM idempotency_keys WHERE message_id = $1",
        &[&id, &reason],
    )
    .await?;
    Ok(())
}

/// Takes a pending user message for a delivery of its reply job, counting the attempt;
/// `None` when it is gone or no longer pending (a redelivery of finished work).
pub async fn claim_pending<C: GenericClient>(db: &C, id: Uuid) -> AppResult<Option<Message>> {
    let sql = format!(
        "UPDATE messages SET attempts = attempts + 1, updated_at = now() \
         WHERE id = $1 AND role = 'user' AND status = 'pending' RETURNING {COLUMNS}"
    );
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id])
        .await?
        .as_ref()
        .map(from_row))
}

/// Takes up to `limit` user messages still pending with no activity (creation or claim)
/// for `idle`: a send that died between commit and publish, or jobs lost on the way.
/// Taking them touches `updated_at`, so concurrent sweeps never take the same message.
/// Returns each id with the deliveries it has had.
pub async fn take_stale_pending<C: GenericClient>(
    db: &C,
    idle: std::time::Duration,
    limit: i64,
) -> AppResult<Vec<(Uuid, i32)>> {
    let rows = db
        .query(
            "UPDATE messages SET updated_at = now() WHERE id IN ( \
                 SELECT m.id FROM pending_messages p JOIN messages m ON m.id = p.message_id \
                 WHERE m.status = 'pending' AND m.role = 'user' \
                 AND m.updated_at < now() - make_interval(secs => $1) \
                 ORDER BY m.updated_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED) \
             RETURNING id, attempts",
            &[&idle.as_secs_f64(), &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
