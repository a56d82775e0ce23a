//! The stream route's side: a message's stream replayed from `Last-Event-ID` and followed
//! to its end, or the reply stored in PostgreSQL when the stream has nothing more.

use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadReply};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::{load, slots, stream_key};
use crate::chat::messages::{self, Message};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Longest single blocking read; between reads the route checks PostgreSQL.
const BLOCK_MAX: Duration = Duration::from_secs(15);
/// How long past its block time an `XREAD` may take to answer before Redis is taken
/// for gone.
const READ_MARGIN: Duration = Duration::from_secs(3);
/// A slot outlives its stream's `stream_max` by this much before it expires by itself.
const SLOT_MARGIN: Duration = Duration::from_secs(30);
/// Entries read per `XREAD`.
const READ_COUNT: usize = 200;

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
/// end (`0-2`); only what follows `after` (`0-<n>`), and the end always: a client
/// resuming from the end itself gets it again, and nothing else.
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
    out.push(end_event(STORED_END_ID, message, reply));
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
        // Finished: the stored reply is the whole story, with no need for Redis (and
        // over at once, so it takes no stream slot).
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
    // The slot is freed below when the stream ends, however it ends; if this process
    // dies first, it expires a little after the stream's longest life.
    let hold = state.config.stream_max + SLOT_MARGIN;
    let slot = slots::acquire(&state.redis, user, state.config.streams_per_user, hold).await?;
    let conn = match state.redis.dedicated().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "no Redis connection for a live stream");
            if let Some(slot) = slot {
                slot.release(&state.redis).await;
            }
            return Err(AppError::redis_unavailable());
        }
    };
    let state = state.clone();
    let after = last_event_id.map(str::to_owned);
    let finished = message.is_terminal();
    tokio::spawn(async move {
        let deadline = Instant::now() + state.config.stream_max;
        let ids = (user, chatroom, id);
        let result = relay(&state, conn, ids, after, finished, deadline, &tx).await;
        // Before the last event goes out: the body ends when `tx` drops, and on Lambda
        // the invocation with it.
        if let Some(slot) = slot {
            slot.release(&state.redis).await;
        }
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
    if finished
        && let Some(after) = &after
        && resumes_from_the_end(state, &key, after).await?
    {
        // The client already had the end: the end again, and nothing before it.
        let (message, reply) = load(state, user, chatroom, id).await?;
        return send(tx, end_event(after, &message, reply.as_ref())).await;
    }
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
        // A Redis that stops answering (black-holed, failing over) must not hold the
        // stream past its deadline: the read gets its block time plus a margin, and
        // the deadline ends the stream whatever Redis does.
        let answer_within = (deadline - now).min(BLOCK_MAX) + READ_MARGIN;
        let reply: Option<StreamReadReply> = tokio::select! {
            r = tokio::time::timeout(answer_within, read.query_async(&mut conn)) => match r {
                Ok(r) => r.map_err(|e| AppError::internal(anyhow::anyhow!("XREAD: {e}")))?,
                Err(_) => return Err(AppError::internal(anyhow::anyhow!(
                    "XREAD: no answer from Redis within {answer_within:?}"
                ))),
            },
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
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

/// Whether `after` is the id of the stream's end entry (its last one).
async fn resumes_from_the_end(state: &AppState, key: &str, after: &str) -> AppResult<bool> {
    let mut conn = state.redis.conn();
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("XREVRANGE: {e}")))?;
    Ok(newest.ids.first().is_some_and(|entry| {
        let kind: String = entry.get("kind").unwrap_or_default();
        entry.id == after && matches!(kind.as_str(), "done" | "blocked" | "failed")
    }))
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
