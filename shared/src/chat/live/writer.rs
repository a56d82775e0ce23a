//! The worker's side: a reply's pieces appended to its stream as they come (coalesced),
//! then its end entry; each write also learns whether the user cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::{cancel_key, stream_key};
use crate::chat::model::ReplySink;
use crate::store::redis::Redis;

/// Pieces that arrive within this window go out as one entry.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often an idle writer looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(500);
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
    /// The text of the current attempt so far (what the user sees of it).
    attempt: String,
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
            attempt: String::new(),
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
        self.attempt.clear();
    }

    /// The text of the current attempt so far.
    pub fn attempt_text(&self) -> &str {
        &self.attempt
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
            self.attempt.push_str(piece);
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
            // While the model sends nothing (a long think), the cancel flag is still
            // looked at every CANCEL_POLL, so a cancel is not ignored until the first text.
            match tokio::time::timeout(CANCEL_POLL, rx.recv()).await {
                Ok(Some(first)) => batch.push(first),
                Ok(None) => break,
                Err(_) => {
                    let exists: redis::RedisResult<bool> = redis::cmd("EXISTS")
                        .arg(&cancel)
                        .query_async(&mut conn)
                        .await;
                    if let Ok(true) = exists {
                        cancelled.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
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
