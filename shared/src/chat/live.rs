//! Live replies: while the worker produces a reply it appends the text to a Redis Stream
//! of that message; the stream route replays and follows it; a cancel flag beside it
//! asks the worker to stop. Best effort on the writing side: Redis trouble never costs
//! a reply (it is stored in PostgreSQL as always), and readers fall back to PostgreSQL.
//!
//! Entries: `reset` (drop the text so far: a new attempt starts), `delta` (`text`), and
//! one end entry, `done`, `blocked` or `failed`. Both keys of a message share one hash
//! tag, so one Redis Cluster slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::streams::StreamReadReply;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::chat::messages::{self, Message};
use crate::chat::model::ReplySink;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::redis::Redis;

/// Pieces that arrive within this window go out as one entry.
pub const COALESCE: Duration = Duration::from_millis(50);
/// Entries kept per stream (`MAXLEN ~`): far more than a reply's coalesced pieces.
pub const MAX_ENTRIES: usize = 10_000;
/// How long a finished stream stays readable: long enough for a client that lost its
/// connection near the end to resume with `Last-Event-ID`. Later readers get the stored
/// reply from PostgreSQL. Kept short because a stream costs about 4.7 KB of Redis memory
/// however short the reply (Redis preallocates each stream node): at 1,500 replies/s,
/// 10 minutes held 4 GB (bench, sustained send).
pub const TTL_AFTER_END_SECS: i64 = 60;
/// A stream whose worker died without an end entry still goes away.
const TTL_WHILE_OPEN_SECS: i64 = 3600;
/// A cancel request outlives any delivery of the job, the sweeper's included (it takes
/// messages idle for SWEEP_AFTER_SECONDS, 600 by default, every 5 minutes).
const CANCEL_TTL_SECS: u64 = 3600;
/// Longest single blocking read; between reads the route checks PostgreSQL.
const BLOCK_MAX: Duration = Duration::from_secs(15);
/// Entries read per `XREAD`.
const READ_COUNT: usize = 200;

fn tag(id: Uuid) -> String {
    format!("{{{id}}}")
}

pub fn stream_key(redis: &Redis, message: Uuid) -> String {
    redis.key(&["reply", &tag(message), "stream"])
}

pub fn cancel_key(redis: &Redis, message: Uuid) -> String {
    redis.key(&["reply", &tag(message), "cancel"])
}

/// How a reply ended, as the last entry of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Done,
    Blocked,
    Failed,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::Blocked => "blocked",
            End::Failed => "failed",
        }
    }
}

enum Entry {
    Reset,
    Delta(String),
    End(End),
}

/// The worker's side of one delivery: pieces go through a channel to a task that
/// coalesces them and appends them, so Redis latency never slows the model's reading.
pub struct Writer {
    tx: Option<mpsc::UnboundedSender<Entry>>,
    task: Option<tokio::task::JoinHandle<()>>,
    cancelled: Arc<AtomicBool>,
    redis: Redis,
    message: Uuid,
    /// The stream holds text that a new attempt must withdraw first.
    dirty: bool,
}

impl Writer {
    /// Looks at what an earlier delivery left (a redelivery starts with `reset`) and
    /// whether the user already cancelled.
    pub async fn open(redis: &Redis, message: Uuid) -> Self {
        let key = stream_key(redis, message);
        let probe: redis::RedisResult<(i64, bool)> = redis::pipe()
            .cmd("XLEN")
            .arg(&key)
            .cmd("EXISTS")
            .arg(cancel_key(redis, message))
            .query_async(&mut redis.conn())
            .await;
        let (len, cancelled) = probe.unwrap_or_else(|e| {
            tracing::warn!(message_id = %message, error = %e, "live stream unavailable; the reply is only stored");
            (0, false)
        });
        let cancelled = Arc::new(AtomicBool::new(cancelled));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(append(redis.clone(), message, rx, cancelled.clone()));
        Self {
            tx: Some(tx),
            task: Some(task),
            cancelled,
            redis: redis.clone(),
            message,
            dirty: len > 0,
        }
    }

    fn send(&mut self, entry: Entry) {
        if let Some(tx) = &self.tx {
            // The task only stops after an end entry or a close.
            let _ = tx.send(entry);
        }
    }

    /// Before an attempt: withdraws the text of an earlier one, if there is any.
    pub fn restart(&mut self) {
        if self.dirty {
            self.send(Entry::Reset);
            self.dirty = false;
        }
    }

    /// Asks Redis again whether the user cancelled (the appending task only learns it
    /// when it writes, and nothing is written while waiting to retry).
    pub async fn refresh_cancel(&self) -> bool {
        if !self.cancelled.load(Ordering::Relaxed) {
            let exists: redis::RedisResult<bool> = redis::cmd("EXISTS")
                .arg(cancel_key(&self.redis, self.message))
                .query_async(&mut self.redis.conn())
                .await;
            if let Ok(true) = exists {
                self.cancelled.store(true, Ordering::Relaxed);
            }
        }
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The reply is stored: withdraws the text shown so far and shows `text` instead.
    pub fn replace(&mut self, text: &str) {
        self.dirty = true;
        self.restart();
        self.text(text);
    }

    /// Appends the end entry and waits until everything is written.
    pub async fn finish(mut self, end: End) {
        self.send(Entry::End(end));
        self.close().await;
    }

    /// Waits until what was sent is written, without an end entry: the job will be
    /// delivered again, or its end is written by [`end`].
    pub async fn close(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl ReplySink for Writer {
    fn text(&mut self, piece: &str) {
        if !piece.is_empty() {
            self.dirty = true;
            self.send(Entry::Delta(piece.to_string()));
        }
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// The appending task: the first piece and the end entry go out at once, other pieces at
/// most every [`COALESCE`]; each write also learns whether the user cancelled.
async fn append(
    redis: Redis,
    message: Uuid,
    mut rx: mpsc::UnboundedReceiver<Entry>,
    cancelled: Arc<AtomicBool>,
) {
    let key = stream_key(&redis, message);
    let cancel = cancel_key(&redis, message);
    let mut conn = redis.conn();
    let mut warned = false;
    let mut batch = Vec::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => break,
            }
        }
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut pipe = redis::pipe();
        let mut pending = String::new();
        let mut ended = false;
        for entry in batch.drain(..) {
            match entry {
                Entry::Delta(text) => pending.push_str(&text),
                other => {
                    flush_delta(&mut pipe, &key, &mut pending);
                    let kind = match other {
                        Entry::Reset => "reset",
                        Entry::End(end) => {
                            ended = true;
                            end.as_str()
                        }
                        Entry::Delta(_) => unreachable!(),
                    };
                    xadd(&mut pipe, &key, &[("kind", kind)]);
                }
            }
        }
        flush_delta(&mut pipe, &key, &mut pending);
        if ended {
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(TTL_AFTER_END_SECS)
                .ignore()
                .cmd("DEL")
                .arg(&cancel)
                .ignore();
        } else {
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(TTL_WHILE_OPEN_SECS)
                .ignore();
        }
        pipe.cmd("EXISTS").arg(&cancel);
        match pipe.query_async::<(bool,)>(&mut conn).await {
            Ok((true,)) if !ended => cancelled.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(message_id = %message, error = %e, "could not append to the live stream");
            }
            Err(_) => {}
        }
        if ended {
            break;
        }
        // Later pieces wait out the window; the end entry does not: the worker waits for
        // it (a whole window per reply before), and the reply is already stored.
        let until = Instant::now() + COALESCE;
        while let Ok(Some(entry)) = tokio::time::timeout_at(until, rx.recv()).await {
            let end = matches!(entry, Entry::End(_));
            batch.push(entry);
            if end {
                break;
            }
        }
    }
}

fn flush_delta(pipe: &mut redis::Pipeline, key: &str, pending: &mut String) {
    if !pending.is_empty() {
        xadd(pipe, key, &[("kind", "delta"), ("text", pending)]);
        pending.clear();
    }
}

fn xadd(pipe: &mut redis::Pipeline, key: &str, fields: &[(&str, &str)]) {
    let cmd = pipe
        .cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAX_ENTRIES)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.ignore();
}

/// Writes only an end entry (a message ended outside a streaming delivery, e.g. from
/// the dead-letter queue). Best effort.
pub async fn end(redis: &Redis, message: Uuid, end: End) {
    let key = stream_key(redis, message);
    let mut pipe = redis::pipe();
    xadd(&mut pipe, &key, &[("kind", end.as_str())]);
    pipe.cmd("EXPIRE")
        .arg(&key)
        .arg(TTL_AFTER_END_SECS)
        .ignore();
    if let Err(e) = pipe.query_async::<()>(&mut redis.conn()).await {
        tracing::warn!(message_id = %message, error = %e, "could not end the live stream");
    }
}

/// One server-sent event of the stream route.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// Resume point for `Last-Event-ID`.
    pub id: String,
    /// `delta`, `reset`, `done` or `error`.
    pub event: &'static str,
    pub data: Value,
}

/// `Last-Event-ID`: a Redis Stream entry id (`<ms>-<seq>`). Ids `0-1` and `0-2` are the
/// two events of a reply read from PostgreSQL.
pub fn parse_last_event_id(raw: &str) -> AppResult<(u64, u64)> {
    raw.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| AppError::validation("Last-Event-ID must be an event id of this stream"))
}

const STORED_RESET_ID: &str = "0-0";
const STORED_DELTA_ID: &str = "0-1";
const STORED_END_ID: &str = "0-2";

/// The user's message or 404 (someone else's message is not found, as everywhere).
async fn load(
    state: &AppState,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
) -> AppResult<(Message, Option<Message>)> {
    let db = state.db().await?;
    let message = messages::owned(&db, user, chatroom, id)
        .await?
        .filter(|m| m.role == "user")
        .ok_or_else(|| AppError::NotFound("message not found".into()))?;
    let reply = messages::reply_to(&db, id).await?;
    Ok((message, reply))
}

/// The terminal event of a finished message, with `id`.
fn end_event(id: &str, message: &Message, reply: Option<&Message>) -> LiveEvent {
    if message.status == messages::Status::Failed.as_str() {
        LiveEvent {
            id: id.into(),
            event: "error",
            data: json!({ "error": {
                "code": "reply_failed",
                "message": message.failure_reason.clone().unwrap_or_else(|| "no reply could be produced".into()),
            }}),
        }
    } else {
        LiveEvent {
            id: id.into(),
            event: "done",
            data: json!({ "message": message, "reply": reply }),
        }
    }
}

/// A finished message read from PostgreSQL: its reply as one `delta` (`0-1`), then the
/// end (`0-2`); only what follows `after` (`0-<n>`, or nothing).
fn stored_events(message: &Message, reply: Option<&Message>, after: u64) -> Vec<LiveEvent> {
    let mut out = Vec::new();
    if after < 1
        && let Some(reply) = reply
    {
        out.push(LiveEvent {
            id: STORED_DELTA_ID.into(),
            event: "delta",
            data: json!({ "text": reply.content }),
        });
    }
    if after < 2 {
        out.push(end_event(STORED_END_ID, message, reply));
    }
    out
}

/// Opens the live view of a message: checks ownership (404) and `Last-Event-ID`
/// (422) before anything is sent, then streams events into the returned receiver
/// until the end or `config.stream_max`. Dropping the receiver stops the reading.
pub async fn follow(
    state: &AppState,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
    last_event_id: Option<&str>,
) -> AppResult<mpsc::Receiver<LiveEvent>> {
    let resume = last_event_id.map(parse_last_event_id).transpose()?;
    let (message, reply) = load(state, user, chatroom, id).await?;
    let (tx, rx) = mpsc::channel(64);
    if message.is_terminal()
        && let None | Some((0, _)) = resume
    {
        // Finished: the stored reply is the whole story, with no need for Redis.
        let after = resume.map_or(0, |(_, n)| n);
        let events = stored_events(&message, reply.as_ref(), after);
        tokio::spawn(async move {
            for e in events {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        return Ok(rx);
    }
    let conn = state.redis.dedicated().await.map_err(|e| {
        tracing::warn!(error = %e, "no Redis connection for a live stream");
        AppError::redis_unavailable()
    })?;
    let state = state.clone();
    let after = last_event_id.map(str::to_owned);
    let finished = message.is_terminal();
    tokio::spawn(async move {
        let deadline = Instant::now() + state.config.stream_max;
        let ids = (user, chatroom, id);
        let result = relay(&state, conn, ids, after, finished, deadline, &tx).await;
        if let Err(e) = result
            && !tx.is_closed()
        {
            tracing::warn!(message_id = %id, error = %e, "live stream ended early");
            let _ = tx
                .send(LiveEvent {
                    id: String::new(),
                    event: "error",
                    data: json!({ "error": {
                        "code": "stream_unavailable",
                        "message": "the live stream broke off; reconnect with Last-Event-ID, or poll the message",
                    }}),
                })
                .await;
        }
    });
    Ok(rx)
}

/// Reads the Redis Stream from `after` (the start when `None`) and forwards it until
/// its end entry, the deadline, or the client leaving.
async fn relay(
    state: &AppState,
    mut conn: crate::store::redis::RedisConnection,
    (user, chatroom, id): (Uuid, Uuid, Uuid),
    after: Option<String>,
    finished: bool,
    deadline: Instant,
    tx: &mpsc::Sender<LiveEvent>,
) -> AppResult<()> {
    // A finished message whose stream expired must not wait for entries that never come.
    let mut wait = !finished;
    let key = stream_key(&state.redis, id);
    // Whether the client holds text from this stream (then a fallback starts with reset).
    let mut shown = after.is_some();
    let mut last = after.unwrap_or_else(|| "0".into());
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT").arg(READ_COUNT);
        if wait {
            let block = (deadline - now).min(BLOCK_MAX);
            read.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        wait = true;
        read.arg("STREAMS").arg(&key).arg(&last);
        let reply: Option<StreamReadReply> = tokio::select! {
            r = read.query_async(&mut conn) =>
                r.map_err(|e| AppError::internal(anyhow::anyhow!("XREAD: {e}")))?,
            _ = tx.closed() => return Ok(()),
        };
        let entries = reply
            .and_then(|r| r.keys.into_iter().next())
            .map(|k| k.ids)
            .unwrap_or_default();
        if entries.is_empty() {
            // Nothing for a while: if the message finished without an end entry
            // reaching the stream (Redis trouble, an expired stream), finish from
            // PostgreSQL.
            let (message, reply) = load(state, user, chatroom, id).await?;
            if message.is_terminal() {
                if shown {
                    send(tx, reset_event(STORED_RESET_ID)).await?;
                }
                for e in stored_events(&message, reply.as_ref(), 0) {
                    send(tx, e).await?;
                }
                return Ok(());
            }
            continue;
        }
        for entry in entries {
            last = entry.id.clone();
            let kind: String = entry.get("kind").unwrap_or_default();
            match kind.as_str() {
                "delta" => {
                    let text: String = entry.get("text").unwrap_or_default();
                    shown = true;
                    send(
                        tx,
                        LiveEvent {
                            id: entry.id,
                            event: "delta",
                            data: json!({ "text": text }),
                        },
                    )
                    .await?;
                }
                "reset" => {
                    shown = false;
                    send(tx, reset_event(&entry.id)).await?;
                }
                "done" | "blocked" | "failed" => {
                    let (message, reply) = load(state, user, chatroom, id).await?;
                    send(tx, end_event(&entry.id, &message, reply.as_ref())).await?;
                    return Ok(());
                }
                other => {
                    tracing::warn!(message_id = %id, kind = other, "unknown live stream entry")
                }
            }
        }
    }
}

fn reset_event(id: &str) -> LiveEvent {
    LiveEvent {
        id: id.into(),
        event: "reset",
        data: json!({}),
    }
}

/// The client left: stop quietly.
async fn send(tx: &mpsc::Sender<LiveEvent>, event: LiveEvent) -> AppResult<()> {
    if tx.send(event).await.is_err() {
        return Err(AppError::internal(anyhow::anyhow!("client gone")));
    }
    Ok(())
}

/// Asks the worker to stop: it keeps the text so far as the reply (`cancelled`).
/// A message that already has its answer (or failed) is 409 `already_finished`.
pub async fn cancel(state: &AppState, user: Uuid, chatroom: Uuid, id: Uuid) -> AppResult<Message> {
    let (message, _) = load(state, user, chatroom, id).await?;
    if message.is_terminal() {
        return Err(AppError::Conflict {
            code: "already_finished",
            message: format!("this message is already {}", message.status),
        });
    }
    let _: () = redis::cmd("SET")
        .arg(cancel_key(&state.redis, id))
        .arg(1)
        .arg("EX")
        .arg(CANCEL_TTL_SECS)
        .query_async(&mut state.redis.conn())
        .await
        .map_err(|e| {
            tracing::warn!(message_id = %id, error = %e, "could not record a cancel request");
            AppError::redis_unavailable()
        })?;
    tracing::info!(message_id = %id, "reply cancel requested");
    Ok(message)
}
