//! Lambda entry point of the chatroom function.

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env(
        "chatroom",
        Adapters {
            queue: Some(shared::clients::queue::sqs::queue),
            dynamodb_quota: Some(shared::quota::dynamodb::store),
            tokens: true,
            ..Adapters::NONE
        },
    )
    .await;
    if state.queue.is_none() {
        tracing::error!("REPLY_QUEUE_URL is not set: sending messages will answer 503");
    }
    lambda_http::run(shared::http::app(chatroom_fn::routes(state))).await
}
