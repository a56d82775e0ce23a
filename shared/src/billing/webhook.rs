//! Stripe webhooks: signature check over the raw bytes, then one transaction that
//! records the event id (idempotency) and applies the subscription state in order.
//!
//! The signature scheme is verified here rather than with async-stripe-webhook: that
//! crate also parses the event into API-version-specific types, and a version drift
//! between the account and the crate would then reject genuine events. We read only
//! the few fields we need, so any API version works.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::PRO_STATUSES;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Stripe's default tolerance between the signed timestamp and now.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `t=<unix>,v1=<hex>[,v1=...]` against HMAC-SHA256(secret, "t.payload").
pub fn verify_signature(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => {
                signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // abs_diff: a hostile `t` (e.g. i64::MIN) must not overflow.
    if now.abs_diff(timestamp) > TOLERANCE_SECS as u64 {
        return Err(SignatureError::Stale);
    }
    for candidate in signatures {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        // verify_slice compares in constant time.
        if mac.verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Signs a payload the way Stripe does (for tests, scripts and local tooling).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

/// A subscription state carried by an event, with its place in the event order.
struct SubscriptionState {
    id: String,
    customer: String,
    status: String,
    current_period_end: Option<i64>,
    cancel_at_period_end: bool,
    user_hint: Option<Uuid>,
    rank: i16,
    /// The subscription's Stripe Price (`items.data[0].price`), when the event says.
    price: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        // Expanded objects carry their id.
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn user_hint(v: &Value) -> Option<Uuid> {
    v.get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Reads a subscription object. `current_period_end` moved onto the items in newer API
/// versions; both places are read.
fn subscription_state(obj: &Value, rank: i16) -> Option<SubscriptionState> {
    let period_end = obj
        .get("current_period_end")
        .and_then(Value::as_i64)
        .or_else(|| {
            obj.pointer("/items/data/0/current_period_end")
                .and_then(Value::as_i64)
        });
    Some(SubscriptionState {
        id: text(obj, "id")?,
        customer: text(obj, "customer")?,
        status: text(obj, "status")?,
        current_period_end: period_end,
        cancel_at_period_end: obj
            .get("cancel_at_period_end")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        user_hint: user_hint(obj),
        rank,
        price: obj
            .pointer("/items/data/0/price")
            .and_then(|p| p.get("id").and_then(Value::as_str).or(p.as_str()))
            .or_else(|| obj.pointer("/plan/id").and_then(Value::as_str))
            .map(str::to_owned),
    })
}

fn invalid(message: &str) -> AppError {
    AppError::BadRequest(format!("unreadable webhook event: {message}"))
}

/// Verifies, parses and applies one delivery. Idempotent and order-safe.
pub async fn handle(
    state: &AppState,
    payload: &[u8],
    signature: Option<&str>,
) -> AppResult<Outcome> {
    let secret =
        state
            .config
            .stripe
            .webhook_secret
            .as_ref()
            .ok_or_else(|| AppError::Unavailable {
                code: "billing_unavailable",
                message: "webhooks are disabled: STRIPE_WEBHOOK_SECRET is not set".into(),
            })?;
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify_signature(payload, signature, secret.expose(), now) {
        tracing::warn!(reason = %e, "webhook refused");
        return Err(AppError::InvalidSignature(e.to_string()));
    }
    let event: Event = serde_json::from_slice(payload).map_err(|e| invalid(&e.to_string()))?;
    apply(state, &event).await
}

async fn apply(state: &AppState, event: &Event) -> AppResult<Outcome> {
    let obj = &event.data.object;
    let mut db = state.db().await.map_err(retry_later)?;
    let tx = db.transaction().await.map_err(|e| retry_later(e.into()))?;
    let fresh = tx
        .execute(
            "INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&event.id, &event.kind, &event.created],
        )
        .await
        .map_err(|e| retry_later(e.into()))?;
    if fresh == 0 {
        tracing::info!(event_id = %event.id, kind = %event.kind, "duplicate webhook event acknowledged");
        return Ok(Outcome::Duplicate);
    }

    // Whether the session is one this service opened (for the Pro price, the only one it
    // sells); another product's checkout on the same Stripe account grants nothing.
    let mut ours = false;
    if matches!(
        event.kind.as_str(),
        "checkout.session.completed" | "checkout.session.expired"
    ) && let Some(session) = text(obj, "id")
    {
        // No longer open: the next `POST /subscribe/pro` must not hand it out again.
        ours = tx
            .execute(
                "UPDATE users SET checkout_session_id = NULL, checkout_url = NULL, \
                     checkout_expires_at = NULL WHERE checkout_session_id = $1",
                &[&session],
            )
            .await
            .map_err(|e| retry_later(e.into()))?
            > 0;
    }
    let sub = match event.kind.as_str() {
        "checkout.session.expired" => None,
        "checkout.session.completed" => {
            let paid = matches!(
                obj.get("payment_status").and_then(Value::as_str),
                Some("paid" | "no_payment_required")
            );
            match (text(obj, "subscription"), text(obj, "customer")) {
                (Some(id), Some(customer))
                    if ours && text(obj, "mode").as_deref() == Some("subscription") =>
                {
                    Some(SubscriptionState {
                        id,
                        customer,
                        status: if paid { "active" } else { "incomplete" }.into(),
                        current_period_end: None,
                        cancel_at_period_end: false,
                        user_hint: text(obj, "client_reference_id").and_then(|s| s.parse().ok()),
                        rank: 0,
                        // Not in the event; the subscription events that follow carry it.
                        price: None,
                    })
                }
                _ => None,
            }
        }
        "customer.subscription.created" => subscription_state(obj, 1),
        "customer.subscription.updated" => subscription_state(obj, 2),
        "customer.subscription.deleted" => subscription_state(obj, 3),
        "invoice.paid" | "invoice.payment_failed" => {
            // The subscription id sits at the top (older API versions) or under `parent`.
            let sub_id = text(obj, "subscription").or_else(|| {
                obj.pointer("/parent/subscription_details/subscription")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            if let Some(sub_id) = sub_id {
                let status = if event.kind == "invoice.paid" {
                    "paid"
                } else {
                    "payment_failed"
                };
                // Only a newer invoice event replaces the status; in the same second (Stripe's
                // resolution) `paid` wins, the usual end of a failed-then-retried payment.
                let changed = tx
                    .execute(
                        "UPDATE subscriptions SET last_invoice_status = $2, \
                             last_invoice_event_created = $3, updated_at = now() \
                         WHERE id = $1 AND (last_invoice_event_created IS NULL \
                             OR last_invoice_event_created < $3 \
                             OR (last_invoice_event_created = $3 AND $2 = 'paid'))",
                        &[&sub_id, &status, &event.created],
                    )
                    .await
                    .map_err(|e| retry_later(e.into()))?;
                tracing::info!(event_id = %event.id, subscription = %sub_id, status, stale = changed == 0, "invoice event recorded");
            }
            None
        }
        other => {
            tracing::info!(event_id = %event.id, kind = other, "webhook event type ignored");
            tx.commit().await.map_err(|e| retry_later(e.into()))?;
            return Ok(Outcome::Ignored);
        }
    };

    let Some(sub) = sub else {
        tx.commit().await.map_err(|e| retry_later(e.into()))?;
        return Ok(Outcome::Applied);
    };
    // The user: by the customer we created for them, else by the id we put in metadata.
    let user: Option<Uuid> = tx
        .query_opt(
            "SELECT id FROM users WHERE stripe_customer_id = $1 OR id = $2 \
             ORDER BY (stripe_customer_id IS NOT DISTINCT FROM $1) DESC LIMIT 1",
            &[&sub.customer, &sub.user_hint],
        )
        .await
        .map_err(|e| retry_later(e.into()))?
        .map(|r| r.get(0));
    let Some(user) = user else {
        tracing::warn!(event_id = %event.id, customer = %sub.customer, "webhook for an unknown customer ignored");
        tx.commit().await.map_err(|e| retry_later(e.into()))?;
        return Ok(Outcome::Ignored);
    };
    tx.execute(
        "UPDATE users SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL",
        &[&user, &sub.customer],
    )
    .await
    .map_err(|e| retry_later(e.into()))?;
    let period_end = sub
        .current_period_end
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
    // Only a strictly newer (created, rank) replaces what is stored: replays and late
    // deliveries of older events change nothing. A checkout event (rank 0) never
    // overwrites a subscription event of the same second.
    let stored = tx.execute(
        "INSERT INTO subscriptions (id, user_id, customer_id, status, current_period_end, \
             cancel_at_period_end, event_created, event_rank, price_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
             current_period_end = COALESCE(EXCLUDED.current_period_end, subscriptions.current_period_end), \
             cancel_at_period_end = EXCLUDED.cancel_at_period_end, \
             price_id = COALESCE(EXCLUDED.price_id, subscriptions.price_id), \
             event_created = EXCLUDED.event_created, event_rank = EXCLUDED.event_rank, updated_at = now() \
         WHERE (subscriptions.event_created, subscriptions.event_rank) < (EXCLUDED.event_created, EXCLUDED.event_rank)",
        &[
            &sub.id,
            &user,
            &sub.customer,
            &sub.status,
            &period_end,
            &sub.cancel_at_period_end,
            &event.created,
            &sub.rank,
            &sub.price,
        ],
    )
    .await
    .map_err(|e| retry_later(e.into()))?;
    let mut status = sub.status.clone();
    if stored == 0
        && sub.rank > 0
        && let Some(settled) = settle_tie(state, &tx, &sub, event).await?
    {
        status = settled;
    }
    let tier: String = tx
        .query_one(
            &format!(
                "UPDATE users SET tier = CASE WHEN EXISTS (SELECT 1 FROM subscriptions \
                     WHERE user_id = $1 AND {}) THEN 'pro' ELSE 'basic' END, updated_at = now() \
                 WHERE id = $1 RETURNING tier",
                super::GRANTS_PRO
            ),
            &[&user, &PRO_STATUSES, &state.config.stripe.pro_price_id],
        )
        .await
        .map_err(|e| retry_later(e.into()))?
        .get(0);
    tx.commit().await.map_err(|e| retry_later(e.into()))?;
    tracing::info!(event_id = %event.id, kind = %event.kind, user_id = %user, subscription = %sub.id, %status, %tier, "subscription state applied");
    Ok(Outcome::Applied)
}

/// Two events of one subscription with the same second and kind (Stripe's `created` has
/// one-second resolution) cannot be ordered from their payloads: whichever arrived first
/// was kept. On such a tie the subscription is read back from Stripe and what Stripe says
/// now is stored. The row stays locked by the upsert above, so ties settle one at a time.
/// Returns the stored status, or `None` when there was no tie.
async fn settle_tie(
    state: &AppState,
    tx: &deadpool_postgres::Transaction<'_>,
    sub: &SubscriptionState,
    event: &Event,
) -> AppResult<Option<String>> {
    let tie = tx
        .query_opt(
            "SELECT 1 FROM subscriptions WHERE id = $1 AND event_created = $2 AND event_rank = $3",
            &[&sub.id, &event.created, &sub.rank],
        )
        .await
        .map_err(|e| retry_later(e.into()))?
        .is_some();
    if !tie {
        return Ok(None);
    }
    let Some(provider) = &state.billing else {
        tracing::warn!(event_id = %event.id, subscription = %sub.id,
            "two events in the same second: the first stays, since Stripe cannot be asked \
             (STRIPE_API_KEY and STRIPE_PRO_PRICE_ID are not set on this function)");
        return Ok(None);
    };
    // A failed read answers 500 and rolls back the event id: Stripe delivers it again.
    let fetched = provider.fetch_subscription(&sub.id).await.map_err(|e| {
        tracing::error!(event_id = %event.id, subscription = %sub.id, error = %e,
            "reading the subscription back from Stripe failed");
        AppError::RetryLater(RETRY_LATER.into())
    })?;
    let truth = subscription_state(&fetched, sub.rank)
        .filter(|t| t.id == sub.id)
        .ok_or_else(|| {
            tracing::error!(subscription = %sub.id, "Stripe answered an unreadable subscription");
            AppError::RetryLater(RETRY_LATER.into())
        })?;
    let period_end = truth
        .current_period_end
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
    tx.execute(
        "UPDATE subscriptions SET status = $2, \
             current_period_end = COALESCE($3, current_period_end), \
             cancel_at_period_end = $4, price_id = COALESCE($5, price_id), updated_at = now() \
         WHERE id = $1",
        &[
            &sub.id,
            &truth.status,
            &period_end,
            &truth.cancel_at_period_end,
            &truth.price,
        ],
    )
    .await
    .map_err(|e| retry_later(e.into()))?;
    tracing::info!(event_id = %event.id, subscription = %sub.id, event_status = %sub.status,
        status = %truth.status, "same-second events: the subscription was read back from Stripe");
    Ok(Some(truth.status))
}

/// What Stripe reads in a 500 answer: the event is delivered again.
const RETRY_LATER: &str = "the event could not be processed; it will be retried";

/// Database trouble while handling a webhook: answer 500 so Stripe delivers it again.
fn retry_later(e: AppError) -> AppError {
    tracing::error!(error = %e, "webhook processing failed; Stripe will retry");
    AppError::RetryLater(RETRY_LATER.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_unit";

    #[test]
    fn accepts_a_valid_signature_among_several() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(body, SECRET, 1_000);
        let header = format!(
            "t=1000,v1={},{}",
            "00".repeat(32),
            good.split_once(',').unwrap().1
        );
        assert_eq!(verify_signature(body, Some(&header), SECRET, 1_100), Ok(()));
    }

    #[test]
    fn hostile_timestamps_do_not_overflow() {
        let body = b"{}";
        let header = format!("t={},v1={}", i64::MIN, "00".repeat(32));
        assert_eq!(
            verify_signature(body, Some(&header), SECRET, 1_000),
            Err(SignatureError::Stale)
        );
        let header = format!("t={},v1={}", i64::MAX, "00".repeat(32));
        assert_eq!(
            verify_signature(body, Some(&header), SECRET, -5),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn refuses_bad_signatures() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1_000);
        assert_eq!(
            verify_signature(body, None, SECRET, 1_000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(body, Some("nonsense"), SECRET, 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(body, Some(&header), SECRET, 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(body, Some(&header), "whsec_other", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(br#"{"id":"evt_2"}"#, Some(&header), SECRET, 1_000),
            Err(SignatureError::Mismatch)
        );
    }
}
