//! Stripe through async-stripe (1.0 line; customer, checkout and portal only).

use std::collections::HashMap;
use std::time::Duration;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{CancelSubscription, RetrieveSubscription};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::{CreateCustomer, SearchCustomer};
use uuid::Uuid;

use super::provider::{BillingProvider, CheckoutLink, ProviderError};
use crate::config::StripeSettings;

/// The payment provider of `Adapters` (state.rs): Stripe, when its key and the Pro
/// price are configured.
pub fn provider(
    config: &crate::config::Config,
) -> anyhow::Result<Option<std::sync::Arc<dyn BillingProvider>>> {
    Ok(StripeBilling::from_settings(&config.stripe)?
        .map(|b| std::sync::Arc::new(b) as std::sync::Arc<dyn BillingProvider>))
}

pub struct StripeBilling {
    client: Client,
    price_id: String,
    frontend_url: String,
}

impl StripeBilling {
    /// `None` unless both the API key and the Pro price are configured.
    pub fn from_settings(settings: &StripeSettings) -> anyhow::Result<Option<Self>> {
        let (Some(key), Some(price_id)) = (&settings.api_key, &settings.pro_price_id) else {
            return Ok(None);
        };
        let mut builder = ClientBuilder::new(key.expose()).timeout(Duration::from_secs(10));
        if let Some(base) = &settings.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder.build().map_err(|e| {
            anyhow::anyhow!("configuration error: STRIPE_API_KEY/STRIPE_API_BASE: {e}")
        })?;
        Ok(Some(Self {
            client,
            price_id: price_id.clone(),
            frontend_url: settings.frontend_url.clone(),
        }))
    }
}

fn key(raw: &str) -> Result<RequestStrategy, ProviderError> {
    IdempotencyKey::new(raw)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| ProviderError(format!("idempotency key: {e}")))
}

fn err(e: stripe::StripeError) -> ProviderError {
    ProviderError(e.to_string())
}

#[async_trait::async_trait]
impl BillingProvider for StripeBilling {
    async fn find_customer(&self, user: Uuid) -> Result<Option<String>, ProviderError> {
        let found = SearchCustomer::new(format!("metadata['user_id']:'{user}'"))
            .limit(1)
            .send(&self.client)
            .await
            .map_err(err)?;
        Ok(found.data.first().map(|c| c.id.to_string()))
    }

    async fn create_customer(&self, user: Uuid, email: &str) -> Result<String, ProviderError> {
        let metadata = HashMap::from([("user_id".to_string(), user.to_string())]);
        let customer = CreateCustomer::new()
            .email(email)
            .metadata(metadata)
            .customize()
            // A key per attempt: Stripe replays a failed attempt's error for 24 hours under
            // its key. Concurrent first checkouts are serialised by the caller instead.
            .request_strategy(key(&format!("customer-{user}-{}", Uuid::new_v4()))?)
            .send(&self.client)
            .await
            .map_err(err)?;
        Ok(customer.id.to_string())
    }

    async fn create_checkout(
        &self,
        customer: &str,
        user: Uuid,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<CheckoutLink, ProviderError> {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(self.price_id.clone());
        item.quantity = Some(1);
        let metadata = HashMap::from([("user_id".to_string(), user.to_string())]);
        let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
        subscription_data.metadata = Some(metadata.clone());
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(customer)
            .client_reference_id(user.to_string())
            .line_items(vec![item])
            .metadata(metadata)
            .subscription_data(subscription_data)
            .success_url(format!(
                "{}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
                self.frontend_url
            ))
            .cancel_url(format!("{}/billing/cancel", self.frontend_url))
            .expires_at(expires_at.timestamp())
            .customize()
            .request_strategy(key(&format!("checkout-{}", Uuid::new_v4()))?)
            .send(&self.client)
            .await
            .map_err(err)?;
        let checkout_url = session
            .url
            .ok_or_else(|| ProviderError("checkout session without a url".into()))?;
        Ok(CheckoutLink {
            checkout_url,
            session_id: session.id.to_string(),
        })
    }

    async fn create_portal(&self, customer: &str) -> Result<String, ProviderError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(format!("{}/billing", self.frontend_url))
            .send(&self.client)
            .await
            .map_err(err)?;
        Ok(session.url)
    }

    async fn fetch_subscription(&self, id: &str) -> Result<serde_json::Value, ProviderError> {
        // Read as a plain JSON value, not the typed `Subscription`: the webhook reads only
        // a few fields, so an account on another API version still parses.
        let raw = RetrieveSubscription::new(id)
            .build()
            .customize::<miniserde::json::Value>()
            .send(&self.client)
            .await
            .map_err(err)?;
        serde_json::from_str(&miniserde::json::to_string(&raw))
            .map_err(|e| ProviderError(format!("subscription {id}: {e}")))
    }

    async fn cancel_subscription(&self, id: &str) -> Result<(), ProviderError> {
        let cancelled = CancelSubscription::new(id)
            .build()
            .customize::<miniserde::json::Value>()
            .send(&self.client)
            .await;
        match cancelled {
            Ok(_) => Ok(()),
            // Stripe refuses to cancel twice: a retry after a lost answer reads it instead.
            Err(e) => match self.fetch_subscription(id).await {
                Ok(sub)
                    if matches!(
                        sub["status"].as_str(),
                        Some("canceled" | "incomplete_expired")
                    ) =>
                {
                    Ok(())
                }
                _ => Err(err(e)),
            },
        }
    }
}
