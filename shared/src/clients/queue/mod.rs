//! The reply queue: the send route publishes `{message_id}`, the reply-worker consumes.
//! SQS in AWS; an in-process channel for the local server.

pub mod memory;
#[cfg(feature = "sqs")]
pub mod sqs;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The body of one queue record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyJob {
    pub message_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
#[error("queue unavailable: {0}")]
pub struct QueueError(pub String);

#[async_trait::async_trait]
pub trait ReplyQueue: Send + Sync {
    async fn publish(&self, job: ReplyJob) -> Result<(), QueueError>;

    /// The job again, delivered no sooner than `delay` from now (a rate-limited reply
    /// waits out Gemini's quota without spending a delivery). Queues without delays
    /// deliver at once.
    async fn publish_after(
        &self,
        job: ReplyJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let _ = delay;
        self.publish(job).await
    }
}
