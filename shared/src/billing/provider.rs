//! The payment provider as the billing rules see it: one trait (Stripe implements it),
//! its error, and the Checkout link it hands out. Below `AppState`, which holds one.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider error: {0}")]
pub struct ProviderError(pub String);

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckoutLink {
    pub checkout_url: String,
    pub session_id: String,
}

#[async_trait::async_trait]
pub trait BillingProvider: Send + Sync {
    /// The provider-side customer already created for `user` (found by its metadata),
    /// e.g. by an attempt that failed before its id was stored.
    async fn find_customer(&self, user: Uuid) -> Result<Option<String>, ProviderError>;
    /// Creates the provider-side customer for `user`. Each attempt is independent: a
    /// failed one never blocks the next.
    async fn create_customer(&self, user: Uuid, email: &str) -> Result<String, ProviderError>;
    /// A Checkout Session for the Pro plan, open until `expires_at`.
    async fn create_checkout(
        &self,
        customer: &str,
        user: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<CheckoutLink, ProviderError>;
    async fn create_portal(&self, customer: &str) -> Result<String, ProviderError>;
    /// The subscription as the provider holds it now: its API object, read by the
    /// webhook's own parser (the same few fields as in an event).
    async fn fetch_subscription(&self, id: &str) -> Result<serde_json::Value, ProviderError>;
    /// Cancels the subscription now (no further charge); one already canceled is fine.
    async fn cancel_subscription(&self, id: &str) -> Result<(), ProviderError>;
}
