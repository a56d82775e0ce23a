//! Lambda entry point of the auth function.

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env(
        "auth",
        Adapters {
            mailer: Some(shared::clients::ses::mailer),
            tokens: true,
            otp_codes: true,
            ..Adapters::NONE
        },
    )
    .await;
    lambda_http::run(shared::http::app(auth_fn::routes(state))).await
}
