//! Lambda entry point of the stripe-webhook function.

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env(
        "stripe-webhook",
        Adapters {
            // Two events of one second are settled by reading the subscription back.
            billing: Some(shared::billing::stripe::provider),
            ..Adapters::NONE
        },
    )
    .await;
    // Never run without a secret: unsigned events must not be accepted.
    if state
        .config
        .stripe
        .webhook_secret
        .as_ref()
        .is_none_or(|s| s.expose().trim().is_empty())
    {
        let message = "configuration error: STRIPE_WEBHOOK_SECRET is required";
        tracing::error!("{message}");
        eprintln!("stripe-webhook: {message}");
        std::process::exit(1);
    }
    lambda_http::run(shared::http::app(stripe_webhook_fn::routes(state))).await
}
