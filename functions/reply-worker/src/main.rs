//! Lambda entry point of the reply-worker (SQS event source, partial batch responses).

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use shared::chat::worker::Worker;
use shared::clients::gemini::GeminiClient;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let state = shared::bootstrap::state_from_env("reply-worker").await;
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
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move {
            Ok::<SqsBatchResponse, lambda_runtime::Error>(
                reply_worker_fn::handle_batch(&worker, event.payload).await,
            )
        }
    }))
    .await
}
