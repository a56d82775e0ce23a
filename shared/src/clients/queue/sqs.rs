//! SQS publisher (aws-sdk-sqs).

use aws_sdk_sqs::Client;
use tokio::sync::OnceCell;

use super::{QueueError, ReplyJob, ReplyQueue};

/// The reply queue of `Adapters` (state.rs): SQS at `REPLY_QUEUE_URL` (called only
/// when it is set).
pub fn queue(config: &crate::config::Config) -> std::sync::Arc<dyn ReplyQueue> {
    std::sync::Arc::new(SqsQueue::from_env(
        config.reply_queue_url.clone().unwrap_or_default(),
    ))
}

pub struct SqsQueue {
    client: OnceCell<Client>,
    queue_url: String,
}

impl SqsQueue {
    /// The client is built on first publish (credentials from the environment).
    pub fn from_env(queue_url: String) -> Self {
        Self {
            client: OnceCell::new(),
            queue_url,
        }
    }

    pub fn with_client(client: Client, queue_url: String) -> Self {
        Self {
            client: OnceCell::new_with(Some(client)),
            queue_url,
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(crate::clients::aws::sdk_config().await) })
            .await
    }
}

#[async_trait::async_trait]
impl ReplyQueue for SqsQueue {
    async fn publish(&self, job: ReplyJob) -> Result<(), QueueError> {
        self.send(job, None).await
    }

    async fn publish_after(
        &self,
        job: ReplyJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.send(job, Some(delay)).await
    }
}

impl SqsQueue {
    /// SendMessage; `delay` becomes DelaySeconds (SQS allows up to 900).
    async fn send(
        &self,
        job: ReplyJob,
        delay: Option<std::time::Duration>,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(&job).map_err(|e| QueueError(e.to_string()))?;
        self.client()
            .await
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .set_delay_seconds(delay.map(|d| d.as_secs().clamp(0, 900) as i32))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = ?e, "SQS publish failed");
                QueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
            })?;
        Ok(())
    }
}
