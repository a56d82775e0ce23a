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
    /// For a user message edited after it was sent (`PATCH`): when.
    pub edited_at: Option<DateTime<Utc>>,
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
                       finish_reason, failure_reason, created_at, edited_at";

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
        edited_at: row.get("edited_at"),
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
    Ok(oldest_first(rows.iter(), limit))
}

/// [`page`] without a cursor for many `(chatroom, limit)` pairs in one statement: one
/// answer per pair, in their order (see `page_reads`).
pub async fn newest_pages<C: GenericClient>(
    db: &C,
    wanted: &[(Uuid, i64)],
) -> AppResult<Vec<(Vec<Message>, bool)>> {
    let sql = format!(
        "SELECT r.i, m.* FROM unnest($1::uuid[], $2::int8[]) WITH ORDINALITY \
         AS r(chatroom_id, lim, i) CROSS JOIN LATERAL ( \
             SELECT {COLUMNS} FROM messages \
             WHERE messages.chatroom_id = r.chatroom_id ORDER BY seq DESC LIMIT r.lim + 1) m \
         ORDER BY r.i, m.seq DESC"
    );
    let (chatrooms, limits): (Vec<Uuid>, Vec<i64>) = wanted.iter().copied().unzip();
    let rows = db
        .query(&db.prepare_cached(&sql).await?, &[&chatrooms, &limits])
        .await?;
    let mut each: Vec<Vec<&Row>> = vec![Vec::new(); wanted.len()];
    for row in &rows {
        each[crate::store::batched::position(row)].push(row);
    }
    Ok(each
        .into_iter()
        .zip(limits)
        .map(|(rows, limit)| oldest_first(rows.into_iter(), limit))
        .collect())
}

/// Up to `limit` of `rows` (newest first, one more than a page when older ones remain),
/// oldest first, and whether older ones remain.
fn oldest_first<'a>(
    rows: impl ExactSizeIterator<Item = &'a Row>,
    limit: i64,
) -> (Vec<Message>, bool) {
    let more = rows.len() as i64 > limit;
    let mut out: Vec<Message> = rows.take(limit as usize).map(from_row).collect();
    out.reverse();
    (out, more)
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

/// Ends a pending message `failed`; its owner and when its reply was asked for (sent,
/// or last regenerated or edited: the day its unit was counted), or `None` when it was
/// no longer pending.
pub async fn mark_failed<C: GenericClient>(
    db: &C,
    id: Uuid,
    reason: &str,
) -> AppResult<Option<(Uuid, DateTime<Utc>)>> {
    let sql = "WITH failed AS ( \
                   UPDATE messages SET status = 'failed', failure_reason = $2, updated_at = now() \
                   WHERE id = $1 AND status = 'pending' \
                   RETURNING id, user_id, coalesce(requested_at, created_at) AS asked_at), \
               unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM failed)) \
               SELECT user_id, asked_at FROM failed";
    let row = db
        .query_opt(&db.prepare_cached(sql).await?, &[&id, &reason])
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// A message that never reached the queue: it fails, and its idempotency key is freed
/// in the same statement, so a retry with that key starts afresh instead of replaying.
/// Only when this statement failed it: a message the worker answered meanwhile (the
/// publish went through after all) keeps its key, so a retry replays its 202 instead of
/// sending it twice.
pub async fn fail_unqueued<C: GenericClient>(db: &C, id: Uuid, reason: &str) -> AppResult<()> {
    db.execute(
        "WITH failed AS ( \
             UPDATE messages SET status = 'failed', failure_reason = $2, updated_at = now() \
             WHERE id = $1 AND status = 'pending' RETURNING id), \
         unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM failed)) \
         DELETE FROM idempotency_keys WHERE message_id IN (SELECT id FROM failed)",
        &[&id, &reason],
    )
    .await?;
    Ok(())
}

/// How long a delivery's claim on a message lasts: past the worker's 60 s timeout, so a
/// live delivery always holds it, and short enough that one that died frees it well
/// before the sweeper looks (`SWEEP_AFTER_SECONDS`).
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// What a delivery's claim found.
#[derive(Debug)]
pub enum Claim {
    /// Ours until the lease ends (the attempt is counted).
    Taken(Box<Message>),
    /// Another delivery holds a live lease on it: this one must not write.
    Held,
    /// Gone, or no longer pending (a redelivery of finished work).
    Done,
}

/// Takes a pending user message for a delivery of its reply job (`owner`), counting the
/// attempt, unless another delivery's lease on it is still live.
pub async fn claim_pending<C: GenericClient>(db: &C, id: Uuid, owner: Uuid) -> AppResult<Claim> {
    let sql = format!(
        "WITH claimed AS ( \
             UPDATE messages SET attempts = attempts + 1, updated_at = now(), \
                 lease_owner = $2, lease_until = now() + make_interval(secs => $3) \
             WHERE id = $1 AND role = 'user' AND status = 'pending' \
               AND (lease_until IS NULL OR lease_until < now()) \
             RETURNING {COLUMNS}) \
         SELECT {COLUMNS}, true AS taken FROM claimed \
         UNION ALL \
         SELECT {COLUMNS}, false FROM messages \
         WHERE id = $1 AND role = 'user' AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM claimed)"
    );
    let row = db
        .query_opt(
            &db.prepare_cached(&sql).await?,
            &[&id, &owner, &CLAIM_LEASE.as_secs_f64()],
        )
        .await?;
    Ok(match row {
        Some(row) if row.get::<_, bool>("taken") => Claim::Taken(Box::new(from_row(&row))),
        Some(_) => Claim::Held,
        None => Claim::Done,
    })
}

/// Gives a claim up early (a delivery that will be retried): the next one need not wait
/// for the lease to run out. Only the owner's own lease is released.
/// With `give_back_attempt` the claim's attempt is not counted either (a rate limit).
pub async fn release_claim<C: GenericClient>(
    db: &C,
    id: Uuid,
    owner: Uuid,
    give_back_attempt: bool,
) -> AppResult<()> {
    db.execute(
        &db.prepare_cached(
            "UPDATE messages SET lease_until = NULL, \
                 attempts = CASE WHEN $3 THEN greatest(attempts - 1, 0) ELSE attempts END \
             WHERE id = $1 AND lease_owner = $2",
        )
        .await?,
        &[&id, &owner, &give_back_attempt],
    )
    .await?;
    Ok(())
}

/// The message's job was handed to the queue now (the sweeper leaves it to the queue).
pub async fn mark_enqueued<C: GenericClient>(db: &C, id: Uuid) -> AppResult<()> {
    db.execute(
        &db.prepare_cached("UPDATE pending_messages SET enqueued_at = now() WHERE message_id = $1")
            .await?,
        &[&id],
    )
    .await?;
    Ok(())
}

/// Takes up to `limit` user messages still pending with no activity (creation or claim)
/// for `idle` whose job is lost: never enqueued (a send that died between commit and
/// publish), or enqueued longer than `retention` (the queue's) ago.
/// Taking them touches `updated_at`, so concurrent sweeps never take the same message.
/// Returns each id with the deliveries it has had.
pub async fn take_stale_pending<C: GenericClient>(
    db: &C,
    idle: std::time::Duration,
    retention: std::time::Duration,
    limit: i64,
) -> AppResult<Vec<(Uuid, i32)>> {
    let rows = db
        .query(
            "UPDATE messages SET updated_at = now() WHERE id IN ( \
                 SELECT m.id FROM pending_messages p JOIN messages m ON m.id = p.message_id \
                 WHERE m.status = 'pending' AND m.role = 'user' \
                 AND m.updated_at < now() - make_interval(secs => $1) \
                 AND (p.enqueued_at IS NULL OR p.enqueued_at < now() - make_interval(secs => $3)) \
                 ORDER BY m.updated_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED) \
             RETURNING id, attempts",
            &[&idle.as_secs_f64(), &limit, &retention.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Messages deleted per statement when a chatroom or an account goes, each statement
/// under its own timeout: one huge cascading DELETE could run past any request's deadline.
pub const DELETE_BATCH: i64 = 2_000;

/// Deletes up to [`DELETE_BATCH`] of a chatroom's messages (newest first, so replies go
/// before what they answer); returns how many went.
pub async fn delete_batch(db: &mut deadpool_postgres::Client, chatroom: Uuid) -> AppResult<u64> {
    delete_batch_where(
        db,
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
         WHERE chatroom_id = $1 ORDER BY seq DESC LIMIT $2)",
        chatroom,
    )
    .await
}

/// [`delete_batch`] over every chatroom of a closed account (`messages_by_user`).
pub async fn delete_user_batch(db: &mut deadpool_postgres::Client, user: Uuid) -> AppResult<u64> {
    delete_batch_where(
        db,
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
         WHERE user_id = $1 ORDER BY seq DESC LIMIT $2)",
        user,
    )
    .await
}

async fn delete_batch_where(
    db: &mut deadpool_postgres::Client,
    sql: &str,
    id: Uuid,
) -> AppResult<u64> {
    let tx = db.transaction().await?;
    tx.batch_execute("SET LOCAL statement_timeout = '5s'")
        .await?;
    let n = tx
        .execute(&tx.prepare_cached(sql).await?, &[&id, &DELETE_BATCH])
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Records the user's cancel while the message is pending; `false` when it is not.
pub async fn request_cancel<C: GenericClient>(db: &C, id: Uuid) -> AppResult<bool> {
    let n = db
        .execute(
            &db.prepare_cached(
                "UPDATE messages SET cancel_requested_at = coalesce(cancel_requested_at, now()) \
                 WHERE id = $1 AND role = 'user' AND status = 'pending'",
            )
            .await?,
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// The user message `id` of `user` in `chatroom`, locked for the rest of the transaction,
/// with the `seq` of the chatroom's newest user message; `None` when there is no such
/// message.
pub async fn lock_with_newest<C: GenericClient>(
    db: &C,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
) -> AppResult<Option<(Message, i64)>> {
    let sql = format!(
        "SELECT {COLUMNS}, (SELECT max(n.seq) FROM messages n \
             WHERE n.chatroom_id = $2 AND n.role = 'user') AS newest \
         FROM messages WHERE id = $1 AND chatroom_id = $2 AND user_id = $3 AND role = 'user' \
         FOR UPDATE"
    );
    let row = db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id, &chatroom, &user])
        .await?;
    Ok(row.map(|r| (from_row(&r), r.get("newest"))))
}

/// Asks again for a reply to a finished user message: its reply goes, the message is
/// pending again (with `content` replacing its text, for an edit) and back on the
/// sweeper's list, with no attempts, lease or cancel left from before.
pub async fn reopen<C: GenericClient>(
    db: &C,
    id: Uuid,
    content: Option<&str>,
) -> AppResult<Message> {
    let sql = format!(
        "WITH gone AS (DELETE FROM messages WHERE reply_to = $1), \
         listed AS (INSERT INTO pending_messages (message_id) VALUES ($1) ON CONFLICT DO NOTHING) \
         UPDATE messages SET content = coalesce($2, content), \
             edited_at = CASE WHEN $2 IS NULL THEN edited_at ELSE now() END, \
             status = 'pending', failure_reason = NULL, attempts = 0, lease_owner = NULL, \
             lease_until = NULL, cancel_requested_at = NULL, requested_at = now(), \
             updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = db
        .query_one(&db.prepare_cached(&sql).await?, &[&id, &content])
        .await?;
    Ok(from_row(&row))
}
