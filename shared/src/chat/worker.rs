//! Answering one queued message: load the conversation, ask the model (retrying
//! transient errors inside a time budget), and store the reply exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use tokio::task::JoinSet;

use crate::chat::cache;
use crate::chat::chatrooms;
use crate::chat::idempotency;
use crate::chat::live::{self, End};
use crate::chat::messages::{self, Claim, Message, Status};
use crate::chat::model::{
    CANCELLED, ModelError, ModelReply, Prompt, ReplyModel, Role, Turn, failure,
};
use crate::clients::queue::ReplyJob;
use crate::error::AppError;
use crate::state::AppState;

pub use crate::chat::outcome::Outcome;

pub const BLOCKED_TEXT: &str =
    "I can't help with that request: it was blocked by the model's safety filters.";

pub const DEAD_LETTER_REASON: &str = failure::DEAD_LETTERED;

pub const STUCK_REASON: &str = failure::STUCK;

/// Stale messages one sweep takes at most; they are answered concurrently, each within
/// the model's retry budget, so a sweep fits in the worker's timeout.
pub const SWEEP_BATCH: i64 = 20;
/// Expired idempotency keys deleted per statement, and statements per sweep.
const PURGE_BATCH: i64 = 10_000;
const PURGE_MAX_BATCHES: u32 = 50;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Stale pending messages taken.
    pub taken: usize,
    /// Of those, answered (or blocked) now.
    pub answered: usize,
    /// Of those, ended `failed` (out of deliveries, or refused by the model).
    pub failed: usize,
    /// Of those, still pending (model busy, or a panic): a later sweep takes them again.
    pub retry_later: usize,
    /// Expired idempotency keys deleted.
    pub keys_purged: u64,
}

/// Stores a reply in one statement (one round trip, no transaction): the user message
/// leaves `pending` (and the sweeper's pending list) and, only if it did, its reply is
/// inserted; the unique index on `reply_to` makes a concurrent or repeated delivery
/// insert nothing. Also says whether the chatroom is still unnamed. The chatroom row
/// itself is not written: its latest activity is read from its newest message.
/// A cancel the user got a 202 for (recorded on the row, see `live::cancel`) makes an
/// answered reply `cancelled`, even when the model had finished meanwhile.
const SAVE_REPLY: &str = "WITH flipped AS ( \
         UPDATE messages SET status = $6, updated_at = now() \
         WHERE id = $5 AND status = 'pending' RETURNING id, cancel_requested_at), \
     reply AS ( \
         INSERT INTO messages (id, chatroom_id, user_id, role, content, status, reply_to, finish_reason) \
         SELECT $1, $2, $3, 'model', $4, 'complete', flipped.id, \
             CASE WHEN flipped.cancel_requested_at IS NOT NULL AND $6 = 'answered' \
                  THEN 'cancelled' ELSE $7 END FROM flipped \
         ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING RETURNING id), \
     unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM flipped)) \
     SELECT EXISTS (SELECT 1 FROM reply), \
            coalesce((SELECT name IS NULL FROM chatrooms WHERE id = $2), false)";

/// How long a rate-limited job waits when Gemini names no delay.
const RATE_LIMIT_DELAY: Duration = Duration::from_secs(30);

/// A chatroom title is a nicety: it may not eat into the Lambda's time.
const TITLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Worker {
    pub state: AppState,
    pub model: Arc<dyn ReplyModel>,
}

/// The job must be delivered again (the queue record stays, or goes to the DLQ).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry later: {0}")]
pub struct Retry(pub String);

/// What [`Retry`] says when the job was handed back to the queue itself (rate-limited):
/// the delivery is settled and no attempt is spent.
const REQUEUED: &str = "re-queued after a rate limit";

impl Retry {
    fn requeued() -> Self {
        Retry(REQUEUED.into())
    }
}

impl From<AppError> for Retry {
    fn from(e: AppError) -> Self {
        Retry(e.to_string())
    }
}

impl Worker {
    /// `receive_count` is how many times the queue has delivered this job (1 the first time).
    pub async fn process(&self, job: ReplyJob, receive_count: u32) -> Result<Outcome, Retry> {
        // One writer per message: this delivery's lease, or a skip.
        let owner = Uuid::new_v4();
        let claimed =
            messages::claim_pending(&self.state.db().await?, job.message_id, owner).await?;
        let message = match claimed {
            Claim::Taken(message) => *message,
            Claim::Held => {
                tracing::info!(message_id = %job.message_id, "another delivery holds the message; skipped");
                return Ok(Outcome::Skipped("another delivery is answering it"));
            }
            Claim::Done => return Ok(Outcome::Skipped("message gone or already processed")),
        };
        let result = self.answer(message, receive_count).await;
        let requeued = matches!(&result, Err(Retry(r)) if r == REQUEUED);
        if result.is_err() {
            // To be retried: the next delivery need not wait for the lease to run out;
            // a rate limit also gives its attempt back.
            let released = match self.state.db().await {
                Ok(db) => messages::release_claim(&db, job.message_id, owner, requeued).await,
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                tracing::warn!(message_id = %job.message_id, error = %e, "could not release the claim; it runs out by itself");
            }
        }
        if requeued {
            return Ok(Outcome::Skipped("rate-limited; queued again"));
        }
        result
    }

    /// The claimed message's reply: asked, streamed, stored.
    async fn answer(&self, message: Message, receive_count: u32) -> Result<Outcome, Retry> {
        let conversation = self.conversation(&message).await?;

        // The reply is written live to the message's stream as it is produced.
        let mut live = live::Writer::open(&self.state.redis, message.id).await;
        let reply = match self.ask_with_retries(&conversation, &mut live).await {
            Ok(reply) => reply,
            Err(ModelError::Permanent {
                message: detail,
                reason,
            }) => {
                tracing::warn!(message_id = %message.id, %detail, reason, "model refused the request; message failed");
                live.close().await;
                self.fail(message.id, reason).await?;
                return Ok(Outcome::Failed(reason.to_string()));
            }
            Err(ModelError::Operator { message: detail }) => {
                // A bad key or model name: the operator's to fix, so never the user's
                // failure. The job is retried while its deliveries last (about half an
                // hour), and the metric alarms (docs/operations.md).
                tracing::error!(message_id = %message.id, %detail, receive_count,
                    "Gemini refused the service's credentials or model; fix GOOGLE_API_KEY / GEMINI_MODEL");
                crate::telemetry::metrics::gemini_operator_error();
                live.close().await;
                return Err(Retry(format!("operator error: {detail}")));
            }
            Err(ModelError::RateLimited {
                message: reason,
                retry_after,
            }) => {
                live.close().await;
                // Gemini's quota, not this message, is the trouble: back to the queue
                // after the wait it asked for, without spending a delivery (the record is
                // settled; the claim and its attempt are given back by the caller).
                let delay = retry_after
                    .unwrap_or(RATE_LIMIT_DELAY)
                    .clamp(Duration::from_secs(1), Duration::from_secs(900));
                if let Some(queue) = &self.state.queue {
                    let job = ReplyJob {
                        message_id: message.id,
                    };
                    match queue.publish_after(job, delay).await {
                        Ok(()) => {
                            if let Ok(db) = self.state.db().await
                                && let Err(e) = messages::mark_enqueued(&db, message.id).await
                            {
                                tracing::warn!(message_id = %message.id, error = %e, "could not record the re-queued job");
                            }
                            tracing::info!(message_id = %message.id, delay_s = delay.as_secs(), %reason, "rate-limited; queued again");
                            return Err(Retry::requeued());
                        }
                        Err(e) => {
                            tracing::warn!(message_id = %message.id, error = %e.0, "could not re-queue a rate-limited job; the queue delivers it again");
                        }
                    }
                }
                return Err(Retry(reason));
            }
            Err(ModelError::Transient {
                message: reason, ..
            }) => {
                live.close().await;
                let max = self.state.config.max_receive_count;
                if receive_count >= max {
                    // Last delivery: end the message as failed; the record still goes on
                    // to the dead-letter queue for inspection.
                    let why = failure::model_unavailable(max);
                    self.fail(message.id, &why).await?;
                    tracing::error!(message_id = %message.id, %why, %reason, "giving up; message failed");
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

    /// The scheduled sweep: pending messages whose job is lost (never enqueued: a send
    /// that died between commit and publish; or enqueued longer ago than the queue keeps
    /// messages) and idle for `sweep_after` are answered here, as a delivery of their job
    /// would be, or ended `failed` once they had `max_receive_count` deliveries; then
    /// expired idempotency keys are purged. A message merely waiting in the queue's
    /// backlog is the queue's: the sweep leaves it alone. Safe beside the queue's own deliveries: the
    /// claim and the one-reply index make a second answer a no-op.
    pub async fn sweep(&self) -> Result<SweepReport, Retry> {
        let stale = messages::take_stale_pending(
            &self.state.db().await?,
            self.state.config.sweep_after,
            self.state.config.queue_retention,
            SWEEP_BATCH,
        )
        .await?;
        let mut report = SweepReport {
            taken: stale.len(),
            ..SweepReport::default()
        };
        let max = self.state.config.max_receive_count;
        let mut tasks = JoinSet::new();
        for (id, attempts) in stale {
            let worker = self.clone();
            tasks.spawn(async move {
                let deliveries = attempts.max(0) as u32;
                if deliveries >= max {
                    worker.fail(id, STUCK_REASON).await?;
                    tracing::error!(message_id = %id, deliveries, "stuck message failed by the sweeper");
                    return Ok(Outcome::Failed(STUCK_REASON.into()));
                }
                tracing::warn!(message_id = %id, deliveries, "answering a stuck message");
                worker
                    .process(ReplyJob { message_id: id }, deliveries + 1)
                    .await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Outcome::Answered | Outcome::Blocked)) => report.answered += 1,
                Ok(Ok(Outcome::Failed(_))) => report.failed += 1,
                Ok(Ok(Outcome::Skipped(_))) => {}
                Ok(Err(retry)) => {
                    tracing::warn!(reason = %retry.0, "stuck message left for the next sweep");
                    report.retry_later += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, "sweep task panicked; left for the next sweep");
                    report.retry_later += 1;
                }
            }
        }
        report.keys_purged =
            idempotency::purge_expired(&self.state.db().await?, PURGE_BATCH, PURGE_MAX_BATCHES)
                .await?;
        tracing::info!(?report, "sweep done");
        Ok(report)
    }

    /// Ends a still-pending message as `failed` and refreshes its owner's chatroom list;
    /// `false` when it was no longer pending.
    /// The day's unit the send counted is given back: a message that got no reply does
    /// not use up the sender's cap.
    async fn fail(&self, id: Uuid, reason: &str) -> Result<bool, Retry> {
        let failed = messages::mark_failed(&self.state.db().await?, id, reason).await?;
        if let Some((owner, sent_at)) = failed {
            // Counted where the row changes, whichever path failed it (last delivery,
            // dead letter, sweep), and only once.
            crate::telemetry::metrics::reply_outcome(&Outcome::Failed(reason.to_string()));
            if let Err(e) = self
                .state
                .quota
                .refund(owner, crate::quota::today(sent_at))
                .await
            {
                tracing::warn!(message_id = %id, error = %e, "could not give the failed message's unit back");
            }
            cache::invalidate(&self.state.redis, owner).await;
            live::end(&self.state.redis, id, End::Failed).await;
        }
        Ok(failed.is_some())
    }

    /// Earlier exchanges, newest kept first within the message and character budgets,
    /// then this message: strictly alternating user/model turns, opening with a user turn;
    /// with the chatroom's instructions (which count against the character budget) and
    /// model (the default when it is not allowed to the owner's tier any more).
    pub async fn conversation(&self, message: &Message) -> Result<Prompt, Retry> {
        let settings = &self.state.config.gemini;
        let db = self.state.db().await?;
        // Two statements pipelined on one connection: one round trip.
        let (earlier, room) = tokio::try_join!(
            messages::history(
                &db,
                message.chatroom_id,
                message.seq,
                (settings.history_max_messages / 2) as i64,
            ),
            chatrooms::reply_settings(&db, message.chatroom_id),
        )?;
        let room = room.unwrap_or_default();
        let instructions_len = room
            .instructions
            .as_deref()
            .map_or(0, |i| i.chars().count());
        let mut budget = settings
            .history_max_chars
            .saturating_sub(message.content.chars().count())
            .saturating_sub(instructions_len);
        let mut kept = Vec::new();
        // Whole exchanges only: half of one would put two turns of a role in a row.
        for exchange in earlier.into_iter().rev() {
            // A reply cancelled before any text has nothing to give the model, and an
            // empty model turn is refused: leave that exchange out whole.
            if exchange.reply.is_empty() {
                continue;
            }
            let n = exchange.prompt.chars().count() + exchange.reply.chars().count();
            if n > budget {
                break;
            }
            budget -= n;
            kept.push(exchange);
        }
        let mut turns = Vec::with_capacity(kept.len() * 2 + 1);
        for exchange in kept.into_iter().rev() {
            turns.push(Turn {
                role: Role::User,
                text: exchange.prompt,
            });
            turns.push(Turn {
                role: Role::Model,
                text: exchange.reply,
            });
        }
        turns.push(Turn {
            role: Role::User,
            text: message.content.clone(),
        });
        Ok(Prompt {
            turns,
            model: super::settings::model_for_reply(settings, room.model.as_deref(), &room.tier),
            instructions: room.instructions,
        })
    }

    async fn ask_with_retries(
        &self,
        conversation: &Prompt,
        live: &mut live::Writer,
    ) -> Result<ModelReply, ModelError> {
        let budget = self.state.config.gemini.retry_budget;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            if live.refresh_cancel().await {
                // Stopped before (another) attempt began: the reply is what the user
                // saw of the attempt before it (nothing at all on a first attempt or a
                // redelivery, whose stale text is withdrawn).
                let shown = live.attempt_text().to_string();
                if shown.is_empty() {
                    live.restart();
                }
                return Ok(ModelReply::Text {
                    text: shown,
                    finish_reason: CANCELLED.into(),
                });
            }
            // A new attempt (or a redelivery) withdraws the text of the one before.
            live.restart();
            match self.model.reply_streaming(conversation, live).await {
                Err(error @ (ModelError::Transient { .. } | ModelError::RateLimited { .. })) => {
                    let (message, retry_after) = match &error {
                        ModelError::Transient {
                            message,
                            retry_after,
                        }
                        | ModelError::RateLimited {
                            message,
                            retry_after,
                        } => (message.clone(), *retry_after),
                        _ => unreachable!(),
                    };
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(6)))
                        .min(Duration::from_secs(8));
                    let delay = retry_after.unwrap_or(backoff);
                    if started.elapsed() + delay > budget {
                        return Err(error);
                    }
                    tracing::info!(attempt, delay_ms = delay.as_millis() as u64, %message, "model busy; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Stores the reply and flips the user message together ([`SAVE_REPLY`]); a
    /// concurrent or repeated delivery stores nothing. Also returns
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
        let db = self.state.db().await?;
        let row = db
            .query_one(
                &db.prepare_cached(SAVE_REPLY)
                    .await
                    .map_err(AppError::from)?,
                &[
                    &Uuid::now_v7(),
                    &message.chatroom_id,
                    &message.user_id,
                    &text,
                    &message.id,
                    &status.as_str(),
                    &finish_reason,
                ],
            )
            .await
            .map_err(AppError::from)?;
        drop(db);
        let (stored, untitled): (bool, bool) = (row.get(0), row.get(1));
        if !stored {
            return Ok((Outcome::Skipped("message already processed"), None));
        }
        crate::telemetry::metrics::reply_outcome(&outcome);
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
