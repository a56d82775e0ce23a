//! Pro subscriptions: Checkout, the billing portal, status, and webhook-driven state.
//! The payment provider sits behind a trait; Stripe (async-stripe) implements it.

pub mod provider;
#[cfg(feature = "stripe")]
pub mod stripe;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use provider::{BillingProvider, CheckoutLink, ProviderError};

use crate::auth::users::User;
use crate::error::{AppError, AppResult};
use crate::quota;
use crate::state::AppState;

fn unavailable() -> AppError {
    AppError::Unavailable {
        code: "billing_unavailable",
        message:
            "billing is not configured on this server (STRIPE_API_KEY and STRIPE_PRO_PRICE_ID)"
                .into(),
    }
}

fn provider_failed(e: ProviderError) -> AppError {
    tracing::error!(error = %e, "payment provider call failed");
    AppError::Unavailable {
        code: "billing_unavailable",
        message: "the payment provider could not be reached; retry shortly".into(),
    }
}

/// Statuses that keep (or grant) Pro. `past_due` keeps Pro while Stripe retries the
/// payment (its Smart Retries run for days); the subscription turns `unpaid` or
/// `canceled` when they give up, and the user drops back to Basic then.
pub const PRO_STATUSES: &[&str] = &["active", "trialing", "past_due"];

/// SQL over `subscriptions` ($2 [`PRO_STATUSES`], $3 `STRIPE_PRO_PRICE_ID`): the row grants
/// Pro. Pro means the Pro price: a subscription to any other Price of the Stripe account
/// grants nothing. A NULL price is one no event has named yet: a checkout this service
/// opened (it sells only Pro), until its subscription events arrive, or a row from before
/// prices were recorded.
pub const GRANTS_PRO: &str = "status = ANY($2) AND (price_id IS NULL OR price_id = $3)";

/// How long a Checkout Session stays open (Stripe allows 30 minutes to 24 hours).
const CHECKOUT_LIFETIME_HOURS: i64 = 23;
/// A stored session this close to its expiry is not handed out again.
const CHECKOUT_REUSE_MARGIN_MINUTES: i64 = 30;

/// Opens (or reopens) Checkout for `user`. The user's row is locked for the duration, so
/// concurrent requests of one user take turns: the first creates the customer and the
/// session, the others get that same session (one open session, one subscription).
pub async fn start_checkout(state: &AppState, user: &User) -> AppResult<CheckoutLink> {
    let provider = state.billing.clone().ok_or_else(unavailable)?;
    if user.tier == "pro" {
        return Err(AppError::Conflict {
            code: "already_subscribed",
            message: "you already have Pro; manage it with POST /subscription/portal".into(),
        });
    }
    let mut db = state.db().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_one(
            "SELECT stripe_customer_id, checkout_session_id, checkout_url, \
                 checkout_expires_at > now() + make_interval(mins => $2) \
             FROM users WHERE id = $1 FOR UPDATE",
            &[&user.id, &(CHECKOUT_REUSE_MARGIN_MINUTES as i32)],
        )
        .await?;
    if let (Some(session_id), Some(checkout_url), Some(true)) = (
        row.get::<_, Option<String>>(1),
        row.get::<_, Option<String>>(2),
        row.get::<_, Option<bool>>(3),
    ) {
        tx.commit().await?;
        tracing::info!(user_id = %user.id, %session_id, "open checkout session reused");
        return Ok(CheckoutLink {
            checkout_url,
            session_id,
        });
    }
    let customer = match row.get::<_, Option<String>>(0) {
        Some(id) => id,
        None => {
            // An earlier attempt may have created it and failed before storing its id.
            let found = provider
                .find_customer(user.id)
                .await
                .map_err(provider_failed)?;
            let id = match found {
                Some(id) => id,
                None => provider
                    .create_customer(user.id, &user.email)
                    .await
                    .map_err(provider_failed)?,
            };
            tx.execute(
                "UPDATE users SET stripe_customer_id = $2 WHERE id = $1",
                &[&user.id, &id],
            )
            .await?;
            id
        }
    };
    let expires_at = Utc::now() + chrono::Duration::hours(CHECKOUT_LIFETIME_HOURS);
    let link = match provider
        .create_checkout(&customer, user.id, expires_at)
        .await
    {
        Ok(link) => link,
        Err(e) => {
            // Keep the customer id: the next attempt needs no lookup.
            tx.commit().await?;
            return Err(provider_failed(e));
        }
    };
    tx.execute(
        "UPDATE users SET checkout_session_id = $2, checkout_url = $3, checkout_expires_at = $4 \
         WHERE id = $1",
        &[&user.id, &link.session_id, &link.checkout_url, &expires_at],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, session_id = %link.session_id, "checkout session created");
    Ok(link)
}

pub async fn portal(state: &AppState, user: &User) -> AppResult<String> {
    let provider = state.billing.clone().ok_or_else(unavailable)?;
    let db = state.db().await?;
    let customer: Option<String> = db
        .query_one(
            "SELECT stripe_customer_id FROM users WHERE id = $1",
            &[&user.id],
        )
        .await?
        .get(0);
    let customer = customer.ok_or_else(|| AppError::Conflict {
        code: "no_billing_account",
        message: "there is no billing account yet: subscribe first with POST /subscribe/pro".into(),
    })?;
    provider
        .create_portal(&customer)
        .await
        .map_err(provider_failed)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub used_today: u32,
    pub daily_limit: Option<u32>,
    pub resets_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub tier: String,
    /// The Stripe subscription status, or `"none"`.
    pub status: String,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub usage: Usage,
}

pub async fn status(state: &AppState, user: &User) -> AppResult<Status> {
    let db = state.db().await?;
    // The subscription that decides the tier: a Pro-granting one first, then the latest.
    // Prepared once per connection: clients poll this after checkout.
    let sql = format!(
        "SELECT status, current_period_end, cancel_at_period_end FROM subscriptions \
         WHERE user_id = $1 \
         ORDER BY ({GRANTS_PRO}) DESC, event_created DESC LIMIT 1"
    );
    let row = db
        .query_opt(
            &db.prepare_cached(&sql).await?,
            &[&user.id, &PRO_STATUSES, &state.config.stripe.pro_price_id],
        )
        .await?;
    drop(db);
    let now = Utc::now();
    let used_today = state.quota.used(user.id, quota::today(now)).await?;
    Ok(Status {
        tier: user.tier.clone(),
        status: row
            .as_ref()
            .map_or_else(|| "none".to_string(), |r| r.get(0)),
        current_period_end: row.as_ref().and_then(|r| r.get(1)),
        cancel_at_period_end: row.as_ref().is_some_and(|r| r.get(2)),
        usage: Usage {
            used_today,
            daily_limit: quota::limit_for(&user.tier, state.config.basic_daily_limit),
            resets_at: quota::reset_at(now),
        },
    })
}
