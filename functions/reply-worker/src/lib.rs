//! The reply-worker: an SQS batch in, the ids of the records to retry out; and, on an
//! EventBridge schedule, the sweep of messages left pending.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::HashMap;

use tokio::task::JoinSet;

use shared::chat::worker::{Outcome, Worker};
use shared::clients::queue::ReplyJob;

/// Dispatches one invocation: an SQS batch (answers `batchItemFailures`) or the
/// scheduled sweep (answers its report). Anything else is refused, not guessed at.
pub async fn handle_event(
    worker: &Worker,
    event: serde_json::Value,
) -> Result<serde_json::Value, String> {
    if event.get("Records").is_some() {
        let batch: SqsEvent =
            serde_json::from_value(event).map_err(|e| format!("unreadable SQS event: {e}"))?;
        let response = handle_batch(worker, batch).await;
        return serde_json::to_value(response).map_err(|e| e.to_string());
    }
    if event.get("detail-type").and_then(|v| v.as_str()) == Some("Scheduled Event") {
        let report = shared::maintenance::sweep(worker).await;
        shared::telemetry::metrics::flush();
        let report = report.map_err(|e| e.to_string())?;
        return serde_json::to_value(report).map_err(|e| e.to_string());
    }
    Err("unrecognised event: expected an SQS batch or a scheduled sweep".into())
}

/// Processes every record concurrently; only the records that must be delivered again
/// are reported in `batchItemFailures`. A record that can never succeed (unreadable
/// body) is logged and dropped rather than retried. Records from the dead-letter queue
/// (`DEAD_LETTER_QUEUE_ARN`) end their messages as `failed`.
pub async fn handle_batch(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
    let mut tasks = JoinSet::new();
    let mut record_ids = HashMap::new();
    for record in event.records {
        let worker = worker.clone();
        let id = record.message_id.clone().unwrap_or_default();
        let handle = tasks.spawn(async move { handle_record(&worker, record).await });
        record_ids.insert(handle.id(), id);
    }
    let mut response = SqsBatchResponse::default();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (task, done) = match joined {
            Ok((task, done)) => (task, done),
            Err(e) => {
                tracing::error!(error = %e, "record task panicked; it will be retried");
                (e.id(), false)
            }
        };
        if !done {
            response.add_failure(record_ids.remove(&task).unwrap_or_default());
        }
    }
    shared::telemetry::metrics::flush();
    response
}

/// `true` when the record is done with (delete it), `false` to retry.
async fn handle_record(worker: &Worker, record: SqsMessage) -> bool {
    let record_id = record.message_id.as_deref().unwrap_or("?");
    let body = record.body.as_deref().unwrap_or_default();
    let job: ReplyJob = match serde_json::from_str(body) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(record_id, error = %e, "unreadable record body; dropped");
            return true;
        }
    };
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dead_letter = record.event_source_arn.is_some()
        && record.event_source_arn == worker.state.config.dead_letter_queue_arn;
    let result = if dead_letter {
        worker.dead_letter(job).await
    } else {
        worker.process(job, receive_count).await
    };
    match result {
        // Replies are counted by the worker where they are stored or failed.
        Ok(outcome) => {
            match &outcome {
                Outcome::Skipped(why) => {
                    tracing::info!(record_id, message_id = %job.message_id, why, "skipped")
                }
                Outcome::Failed(why) => {
                    tracing::warn!(record_id, message_id = %job.message_id, why, "failed permanently")
                }
                _ => tracing::info!(record_id, message_id = %job.message_id, ?outcome, "done"),
            }
            true
        }
        Err(retry) => {
            tracing::warn!(record_id, message_id = %job.message_id, receive_count, reason = %retry.0, "will be retried");
            false
        }
    }
}
