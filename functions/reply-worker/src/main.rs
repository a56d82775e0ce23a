//! Lambda entry point of the reply-worker (SQS event source with partial batch responses,
//! and an EventBridge schedule for the sweep).

use shared::state::Adapters;

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use shared::chat::worker::Worker;
use shared::clients::gemini::GeminiClient;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let state = shared::bootstrap::state_from_env(
        "reply-worker",
        Adapters {
            // A failed reply gives its day's unit back, wherever the counters live.
            dynamodb_quota: Some(shared::quota::dynamodb::store),
            // A rate-limited job goes back to the queue with a delay.
            queue: Some(shared::clients::queue::sqs::queue),
            ..Adapters::NONE
        },
    )
    .await;
    // No offline fallback here: a deployed worker without a key must fail loudly.
    let model = GeminiClient::new(&state.config.gemini).unwrap_or_else(|e| {
        tracing::error!("{e}");
        eprintln!("reply-worker: {e}");
        std::process::exit(1)
    });
    let worker = Worker {
        state,
        model: Arc::new(model),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let worker = worker.clone();
        async move {
            reply_worker_fn::handle_event(&worker, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
