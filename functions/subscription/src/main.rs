//! Lambda entry point of the subscription function.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env("subscription").await;
    if state.billing.is_none() {
        tracing::error!(
            "STRIPE_API_KEY or STRIPE_PRO_PRICE_ID is not set: billing routes will answer 503"
        );
    }
    lambda_http::run(shared::http::app(subscription_fn::routes(state))).await
}
