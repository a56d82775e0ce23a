//! Live replies: while the worker produces a reply it appends the text to a Redis Stream
//! of that message; the stream route replays and follows it; a cancel flag beside it
//! asks the worker to stop. Best effort on the writing side: Redis trouble never costs
//! a reply (it is stored in PostgreSQL as always), and readers fall back to PostgreSQL.
//!
//! Entries: `reset` (drop the text so far: a new attempt starts), `delta` (`text`), and
//! one end entry, `done`, `blocked` or `failed`. Both keys of a message share one hash
//! tag, so one Redis Cluster slot.

mod cancel;
mod reader;
pub mod slots;
mod writer;

use uuid::Uuid;

use crate::chat::messages::{self, Message};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::redis::Redis;

pub use cancel::cancel;
pub use reader::{LiveEvent, follow, parse_last_event_id};
pub use writer::{COALESCE, End, MAX_ENTRIES, TTL_AFTER_END_SECS, Writer, end};

fn tag(id: Uuid) -> String {
    format!("{{{id}}}")
}

pub fn stream_key(redis: &Redis, message: Uuid) -> String {
    redis.key(&["reply", &tag(message), "stream"])
}

pub fn cancel_key(redis: &Redis, message: Uuid) -> String {
    redis.key(&["reply", &tag(message), "cancel"])
}

/// Drops what an earlier reply left of a message's stream and cancel flag, before the
/// message is answered again (regenerate, edit): its readers must not replay the old
/// reply's end. Best effort: a stream left behind expires within a minute of its end.
pub async fn forget(redis: &Redis, message: Uuid) {
    let removed: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(stream_key(redis, message))
        .arg(cancel_key(redis, message))
        .query_async(&mut redis.conn())
        .await;
    if let Err(e) = removed {
        tracing::warn!(message_id = %message, error = %e, "could not drop the old live stream");
    }
}

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
