//! The user's cancel: a flag beside the message's stream, which the writer picks up so
//! that the worker stops and keeps the text so far.

use uuid::Uuid;

use super::{cancel_key, load};
use crate::chat::messages::Message;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// A cancel request outlives any delivery of the job, the sweeper's included (it takes
/// messages idle for SWEEP_AFTER_SECONDS, 600 by default, every 5 minutes).
const CANCEL_TTL_SECS: u64 = 3600;

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
