//! In-process queue for the local server: the same worker code consumes it.

use tokio::sync::mpsc;

use super::{QueueError, ReplyJob, ReplyQueue};

pub struct MemoryQueue {
    tx: mpsc::UnboundedSender<ReplyJob>,
}

impl MemoryQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ReplyJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

#[async_trait::async_trait]
impl ReplyQueue for MemoryQueue {
    async fn publish(&self, job: ReplyJob) -> Result<(), QueueError> {
        self.tx
            .send(job)
            .map_err(|_| QueueError("local worker has stopped".into()))
    }
}
