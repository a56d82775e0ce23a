//! Lambda entry point of the user function.

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env(
        "user",
        Adapters {
            // DELETE /user/me: a sign-in code confirms it; a live subscription is cancelled.
            billing: Some(shared::billing::stripe::provider),
            otp_codes: true,
            tokens: true,
            ..Adapters::NONE
        },
    )
    .await;
    lambda_http::run(shared::http::app(user_fn::routes(state))).await
}
