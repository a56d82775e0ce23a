//! Lambda entry point of the subscription function.

use shared::state::Adapters;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let state = shared::bootstrap::state_from_env(
        "subscription",
        Adapters {
            billing: Some(shared::billing::stripe::provider),
            // GET /subscription/status reads the daily counter, which may live in DynamoDB.
            dynamodb_quota: Some(shared::quota::dynamodb::store),
            tokens: true,
            ..Adapters::NONE
        },
    )
    .await;
    if state.billing.is_none() {
        tracing::error!(
            "STRIPE_API_KEY or STRIPE_PRO_PRICE_ID is not set: billing routes will answer 503"
        );
    }
    lambda_http::run(shared::http::app(subscription_fn::routes(state))).await
}
