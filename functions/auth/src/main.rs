//! Lambda entry point of the auth function.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env("auth").await;
    lambda_http::run(shared::http::app(auth_fn::routes(state))).await
}
