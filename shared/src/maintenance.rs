//! The scheduled sweep as a whole: the reply worker's part (stuck messages, expired
//! idempotency keys) and closed accounts left to finish (DELETE /user/me). Above both
//! `chat` and `account`, so neither depends on the other.

use std::time::Duration;

use serde::Serialize;

use crate::chat::worker::{Retry, SweepReport, Worker};

/// Time one sweep spends finishing closed accounts.
const ACCOUNT_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub messages: SweepReport,
    /// Closed accounts whose data this sweep finished deleting.
    pub accounts_deleted: u64,
}

pub async fn sweep(worker: &Worker) -> Result<Report, Retry> {
    let messages = worker.sweep().await?;
    let accounts_deleted =
        crate::account::delete::finish_closed(&worker.state, ACCOUNT_BUDGET).await?;
    if accounts_deleted > 0 {
        tracing::info!(accounts_deleted, "closed accounts finished by the sweep");
    }
    Ok(Report {
        messages,
        accounts_deleted,
    })
}
