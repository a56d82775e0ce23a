//! The user's cancel: a flag beside the message's stream, which the writer picks up so
//! that the worker stops and keeps the text so far.

use uuid::Uuid;

use super::{cancel_key, load};
use crate::chat::messages::{self, Message};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// A cancel request outlives any delivery of the job, the sweeper's included (it takes
/// messages idle for SWEEP_AFTER_SECONDS, 600 by default, every 5 minutes).
const CANCEL_TTL_SECS: u64 = 3600;

/// Asks the worker to stop: it keeps the text so far as the reply (`cancelled`).
/// Decided in one statement on the message row, which the worker's save reads too: a
/// cancel accepted here always ends the reply `cancelled`, and a message already
/// answered (or failed) is 409 `already_finished`. The Redis flag then tells the live
/// writer to stop reading the model now.
pub async fn cancel(state: &AppState, user: Uuid, chatroom: Uuid, id: Uuid) -> AppResult<Message> {
    let (message, _) = load(state, user, chatroom, id).await?;
    let accepted = messages::request_cancel(&state.db().await?, id).await?;
    if !accepted {
        let (now, _) = load(state, user, chatroom, id).await?;
        return Err(AppError::Conflict {
            code: "already_finished",
            message: format!("this message is already {}", now.status),
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
            // Recorded in the database already: the reply will end `cancelled`, only
            // the model is not stopped early.
            tracing::warn!(message_id = %id, error = %e, "could not signal a cancel to the live writer");
            AppError::redis_unavailable()
        })?;
    tracing::info!(message_id = %id, "reply cancel requested");
    Ok(message)
}
