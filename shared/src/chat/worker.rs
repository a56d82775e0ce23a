//! Answering one queued message: load the conversation, ask the model (retrying
//! transient errors inside a time budget), and store the reply exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::chat::cache;
use crate::chat::chatrooms;
use crate::chat::live::{self, End};
use crate::chat::messages::{self, Message, Status};
use crate::chat::model::{CANCELLED, ModelError, ModelReply, ReplyModel, Role, Turn};
use crate::clients::queue::ReplyJob;
use crate::error::AppError;
use crate::state::AppState;

pub const BLOCKED_TEXT: &str =
    "I can't help with that request: it was blocked by the model's safety filters.";

pub const DEAD_LETTER_REASON: &str =
    "no reply could be produced: every delivery of this message failed";

const INSERT_REPLY: &str = "INSERT INTO messages \
     (id, chatroom_id, user_id, role, content, status, reply_to, finish_reason) \
     VALUES ($1, $2, $3, 'model', $4, 'complete', $5, $6) \
     ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING";
const FLIP_STATUS: &str = "UPDATE messages SET status = $2, updated_at = now() \
     WHERE id = $1 AND status = 'pending'";
const TOUCH_ROOM: &str =
    "UPDATE chatrooms SET last_activity_at = now() WHERE id = $1 RETURNING name IS NULL";

/// A chatroom title is a nicety: it may not eat into the Lambda's time.
const TITLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Worker {
    pub state: AppState,
    pub model: Arc<dyn ReplyModel>,
}

/// The job is finished (the queue record can be deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    Blocked,
    /// Marked `failed`; retrying cannot help.
    Failed(String),
    /// Nothing to do: unknown message, or already processed (a redelivery).
    Skipped(&'static str),
}

/// The job must be delivered again (the queue record stays, or goes to the DLQ).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry later: {0}")]
pub struct Retry(pub String);

impl From<AppError> for Retry {
    fn from(e: AppError) -> Self {
        Retry(e.to_string())
    }
}

impl Worker {
    /// `receive_count` is how many times the queue has delivered this job (1 the first time).
    pub async fn process(&self, job: ReplyJob, receive_count: u32) -> Result<Outcome, Retry> {
        let claimed = messages::claim_pending(&self.state.db().await?, job.message_id).await?;
        let Some(message) = claimed else {
            return Ok(Outcome::Skipped("message gone or already processed"));
        };
        let conversation = self.conversation(&message).await?;

        // The reply is written live to the message's stream as it is produced.
        let mut live = live::Writer::open(&self.state.redis, message.id).await;
        let reply = match self.ask_with_retries(&conversation, &mut live).await {
            Ok(reply) => reply,
            Err(ModelError::Permanent { message: reason }) => {
                tracing::warn!(message_id = %message.id, %reason, "model refused the request; message failed");
                live.close().await;
                self.fail(message.id, &reason).await?;
                return Ok(Outcome::Failed(reason));
            }
            Err(ModelError::Transient {
                message: reason, ..
            }) => {
                live.close().await;
                let max = self.state.config.max_receive_count;
                if receive_count >= max {
                    // Last delivery: end the message as failed; the record still goes on
                    // to the dead-letter queue for inspection.
                    let why =
                        format!("the model stayed unavailable after {max} deliveries: {reason}");
                    self.fail(message.id, &why).await?;
                    tracing::error!(message_id = %message.id, %why, "giving up; message failed");
                }
                return Err(Retry(reason));
            }
        };
        if matches!(reply, ModelReply::Blocked { .. }) {
            // Whatever was shown before the block is withdrawn.
            live.replace(BLOCKED_TEXT);
        }
        let saved = self.save(&message, reply).await;
        match &saved {
            Ok((Outcome::Answered, _)) => live.finish(End::Done).await,
            Ok((Outcome::Blocked, _)) => live.finish(End::Blocked).await,
            // Stored by another delivery (which ends the stream), or to be retried.
            _ => live.close().await,
        }
        let (outcome, title_from) = saved?;
        if let Some(reply) = title_from {
            self.title(&message, &reply).await;
        }
        Ok(outcome)
    }

    /// The last stop of a job whose every delivery failed (a record from the dead-letter
    /// queue, or the local worker giving up), whatever the cause: a crash, a timeout, the
    /// database. Its message ends `failed` rather than `pending` forever.
    pub async fn dead_letter(&self, job: ReplyJob) -> Result<Outcome, Retry> {
        if self.fail(job.message_id, DEAD_LETTER_REASON).await? {
            tracing::error!(message_id = %job.message_id, "dead-lettered; message failed");
            Ok(Outcome::Failed(DEAD_LETTER_REASON.into()))
        } else {
            Ok(Outcome::Skipped("message gone or already finished"))
        }
    }

    /// Ends a still-pending message as `failed` and refreshes its owner's chatroom list;
    /// `false` when it was no longer pending.
    async fn fail(&self, id: Uuid, reason: &str) -> Result<bool, Retry> {
        let owner = messages::mark_failed(&self.state.db().await?, id, reason).await?;
        if let Some(owner) = owner {
            cache::invalidate(&self.state.redis, owner).await;
            live::end(&self.state.redis, id, End::Failed).await;
        }
        Ok(owner.is_some())
    }

    /// Earlier turns, newest kept first within the message and character budgets.
    pub async fn conversation(&self, message: &Message) -> Result<Vec<Turn>, Retry> {
        let settings = &self.state.config.gemini;
        let db = self.state.db().await?;
        let earlier = messages::history(
            &db,
            message.chatroom_id,
            message.seq,
            settings.history_max_messages as i64,
        )
        .await?;
        let mut budget = settings
            .history_max_chars
            .saturating_sub(message.content.chars().count());
        let mut kept = Vec::new();
        for m in earlier.iter().rev() {
            // A reply cancelled before any text has nothing to give the model.
            if m.content.is_empty() {
                continue;
            }
            let n = m.content.chars().count();
            if n > budget {
                break;
            }
            budget -= n;
            kept.push(Turn {
                role: if m.role == "model" {
                    Role::Model
                } else {
                    Role::User
                },
                text: m.content.clone(),
            });
        }
        kept.reverse();
        // The model expects the conversation to open with a user turn.
        while kept.first().is_some_and(|t| t.role == Role::Model) {
            kept.remove(0);
        }
        kept.push(Turn {
            role: Role::User,
            text: message.content.clone(),
        });
        Ok(kept)
    }

    async fn ask_with_retries(
        &self,
        conversation: &[Turn],
        live: &mut live::Writer,
    ) -> Result<ModelReply, ModelError> {
        let budget = self.state.config.gemini.retry_budget;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            if live.refresh_cancel().await {
                // Stopped before (another) attempt began: nothing was produced.
                live.restart();
                return Ok(ModelReply::Text {
                    text: String::new(),
                    finish_reason: CANCELLED.into(),
                });
            }
            // A new attempt (or a redelivery) withdraws the text of the one before.
            live.restart();
            match self.model.reply_streaming(conversation, live).await {
                Err(ModelError::Transient {
                    message,
                    retry_after,
                }) => {
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
                        .min(Duration::from_secs(8));
                    let delay = retry_after.unwrap_or(backoff);
                    if started.elapsed() + delay > budget {
                        return Err(ModelError::Transient {
                            message,
                            retry_after,
                        });
                    }
                    tracing::info!(attempt, delay_ms = delay.as_millis() as u64, %message, "model busy; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Stores the reply and flips the user message in one transaction. The unique
    /// index on `reply_to` makes a concurrent or repeated delivery a no-op. Also returns
    /// the reply text when it answered the first exchange of a still unnamed chatroom.
    async fn save(
        &self,
        message: &Message,
        reply: ModelReply,
    ) -> Result<(Outcome, Option<String>), Retry> {
        let (text, finish_reason, status, outcome) = match reply {
            ModelReply::Text {
                text,
                finish_reason,
            } => (text, finish_reason, Status::Answered, Outcome::Answered),
            ModelReply::Blocked { reason } => {
                tracing::info!(message_id = %message.id, %reason, "blocked by safety filters");
                (
                    BLOCKED_TEXT.to_string(),
                    "SAFETY".to_string(),
                    Status::Blocked,
                    Outcome::Blocked,
                )
            }
        };
        let mut db = self.state.db().await?;
        let tx = db.transaction().await.map_err(AppError::from)?;
        // Prepared once per connection: these run for every reply.
        let (insert, flip, touch) = tokio::try_join!(
            tx.prepare_cached(INSERT_REPLY),
            tx.prepare_cached(FLIP_STATUS),
            tx.prepare_cached(TOUCH_ROOM),
        )
        .map_err(AppError::from)?;
        let id = Uuid::now_v7();
        let inserted = tx
            .execute(
                &insert,
                &[
                    &id,
                    &message.chatroom_id,
                    &message.user_id,
                    &text,
                    &message.id,
                    &finish_reason,
                ],
            )
            .await
            .map_err(AppError::from)?;
        let flipped = tx
            .execute(&flip, &[&message.id, &status.as_str()])
            .await
            .map_err(AppError::from)?;
        if inserted == 0 || flipped == 0 {
            tx.rollback().await.map_err(AppError::from)?;
            return Ok((Outcome::Skipped("message already processed"), None));
        }
        let untitled: bool = tx
            .query_one(&touch, &[&message.chatroom_id])
            .await
            .map_err(AppError::from)?
            .get(0);
        tx.commit().await.map_err(AppError::from)?;
        cache::invalidate(&self.state.redis, message.user_id).await;
        tracing::info!(message_id = %message.id, status = status.as_str(), "reply stored");
        let title_from = (untitled && outcome == Outcome::Answered).then_some(text);
        Ok((outcome, title_from))
    }

    /// Names an unnamed chatroom from its first exchange. Best effort: failures only log.
    async fn title(&self, message: &Message, reply: &str) {
        let result: Result<(), String> = async {
            let title =
                tokio::time::timeout(TITLE_TIMEOUT, self.model.title(&message.content, reply))
                    .await
                    .map_err(|_| "the title request timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            let db = self.state.db().await.map_err(|e| e.to_string())?;
            // Only if still unnamed: the user may have named it meanwhile.
            if let Some(owner) = chatrooms::set_title_if_unnamed(&db, message.chatroom_id, &title)
                .await
                .map_err(|e| e.to_string())?
            {
                cache::invalidate(&self.state.redis, owner).await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(chatroom_id = %message.chatroom_id, error = %e, "could not title the chatroom");
        }
    }
}
