//! Lambda entry point of the stream function (a Function URL in RESPONSE_STREAM mode).

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env("stream", Adapters::TOKENS).await;
    lambda_http::run_with_streaming_response(shared::http::app(stream_fn::routes(state))).await
}
