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
}
