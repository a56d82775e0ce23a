//! Asking again on the newest exchange: regenerate its reply, or edit the user message
//! and have it answered afresh. The exchange's reply is replaced (the old one is deleted:
//! there is one reply per message, as the one-reply index and the live stream assume),
//! and the message is queued like a send: counted against the daily cap (by the route),
//! safe to retry with an `Idempotency-Key`, answered by the same worker and live stream.

use serde_json::json;
use uuid::Uuid;

use super::{
    Action, Sent, message_view, queue_committed, record_key, replay_after_race, replay_on,
    validate_content, validate_idempotency_key,
};
use crate::chat::{cache, live, messages};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// What is asked again.
#[derive(Debug, Clone)]
pub enum Resend {
    /// The same message, a new reply.
    Regenerate,
    /// The message with this text instead, and a new reply.
    Edit(String),
}

impl Resend {
    fn action(&self, message: Uuid) -> Action<'_> {
        match self {
            Resend::Regenerate => Action::Regenerate(message),
            Resend::Edit(content) => Action::Edit(message, content),
        }
    }
}

/// Queues a new reply to `message`, the newest user message of `chatroom`: 409
/// `not_latest_message` for an older one, 409 `reply_in_progress` while its reply is
/// being written; 404 when `user` has no such message.
pub async fn resend(
    state: &AppState,
    user: Uuid,
    chatroom: Uuid,
    message: Uuid,
    what: Resend,
    idempotency_key: Option<&str>,
) -> AppResult<Sent> {
    if let Resend::Edit(content) = &what {
        validate_content(content)?;
    }
    if let Some(key) = idempotency_key {
        validate_idempotency_key(key)?;
    }
    // On a task of its own, like a send: a client that hangs up cannot leave a committed
    // change unqueued.
    tokio::spawn(reopen_and_queue(
        state.clone(),
        user,
        chatroom,
        message,
        what,
        idempotency_key.map(str::to_owned),
    ))
    .await
    .map_err(AppError::internal)?
}

async fn reopen_and_queue(
    state: AppState,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
    what: Resend,
    key: Option<String>,
) -> AppResult<Sent> {
    let action = what.action(id);
    let mut db = state.db().await?;
    let tx = db.transaction().await?;
    // The row lock orders concurrent regenerates and edits of one message, and the
    // worker's claim and reply (which update it) with them.
    let (current, newest) = messages::lock_with_newest(&tx, user, chatroom, id)
        .await?
        .ok_or_else(|| AppError::NotFound("message not found".into()))?;
    // A retry of a request that went through is answered as it was, before the checks
    // below (which its own success would now fail).
    if let Some(key) = key.as_deref()
        && let Some(body) = replay_on(&tx, user, key, chatroom, Some(action)).await?
    {
        tx.rollback().await?;
        return Ok(Sent {
            body,
            replayed: true,
        });
    }
    if current.seq != newest {
        return Err(AppError::Conflict {
            code: "not_latest_message",
            message: "only the newest message of a chatroom can be regenerated or edited".into(),
        });
    }
    if !current.is_terminal() {
        return Err(AppError::Conflict {
            code: "reply_in_progress",
            message: "the reply to this message is still being written: wait for it, or stop it \
                      (POST .../cancel), then try again"
                .into(),
        });
    }
    let content = match &what {
        Resend::Edit(content) => Some(content.as_str()),
        Resend::Regenerate => None,
    };
    let message = messages::reopen(&tx, id, content).await?;
    if let Some(key) = key.as_deref()
        && !record_key(&tx, user, key, chatroom, action, &message).await?
    {
        tx.rollback().await?;
        return replay_after_race(&db, user, key, chatroom, action).await;
    }
    tx.commit().await?;
    drop(db);
    tracing::info!(message_id = %id, edited = content.is_some(), "reply asked for again");
    live::forget(&state.redis, id).await;
    // The list shows each chatroom's latest activity, which the dropped reply was.
    cache::invalidate(&state.redis, user).await;
    let body = json!({ "message": message_view(&message) });
    queue_committed(state, user, chatroom, id).await?;
    Ok(Sent {
        body,
        replayed: false,
    })
}
