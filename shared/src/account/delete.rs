//! `DELETE /user/me`: closing an account, confirmed by a fresh sign-in code.
//!
//! In order, so a failure leaves nothing half done that matters: the code is checked;
//! every live Stripe subscription is cancelled at once (Stripe unreachable: 503
//! `billing_unavailable`, nothing deleted); then one transaction closes the account
//! (the address and name scrubbed, the password dropped, every token revoked, the
//! subscription rows deleted); then its messages go in bounded batches and the user row
//! last (chatrooms, idempotency keys and the rest cascade). What one request cannot
//! finish in its time budget, the worker's sweep does ([`finish_closed`]); a closed
//! account can never be signed into meanwhile (its address is gone).
//!
//! What stays, and why: at Stripe, the customer and its invoices (tax and accounting law
//! requires invoices be kept, typically 6–10 years; Stripe holds them, this service
//! does not). Here: the daily counters (a number per user id and day, no address) until
//! they expire within two days, and processed webhook event ids (no address).

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::auth::email::Email;
use crate::auth::otp::Purpose;
use crate::auth::users::User;
use crate::chat::{cache, live, messages};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Time a request spends deleting before it leaves the rest to the sweep.
pub const REQUEST_BUDGET: Duration = Duration::from_secs(10);

const LIVE_SUBSCRIPTIONS: &str = "SELECT id FROM subscriptions \
     WHERE user_id = $1 AND status NOT IN ('canceled', 'incomplete_expired')";

fn billing_unavailable(detail: impl std::fmt::Display) -> AppError {
    tracing::error!(error = %detail, "could not cancel a subscription for an account deletion");
    AppError::Unavailable {
        code: "billing_unavailable",
        message: "the payment provider could not be reached to cancel the subscription; \
                  nothing was deleted: retry shortly with a new code"
            .into(),
    }
}

/// Closes `user`'s account if `otp` is a live sign-in code for its address (`source`:
/// the client's address, for the wrong-code throttle).
pub async fn delete_account(
    state: &AppState,
    user: &User,
    otp: &str,
    source: Option<&str>,
) -> AppResult<()> {
    let codes = state.otp_codes.as_ref().ok_or_else(|| {
        AppError::internal(anyhow::anyhow!("account deletion needs OTP_HASH_KEY"))
    })?;
    let email = Email::parse(&user.email)?;
    let live: Vec<String> = state
        .db()
        .await?
        .query(LIVE_SUBSCRIPTIONS, &[&user.id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Refused before the code is used up when it cannot succeed.
    if !live.is_empty() && state.billing.is_none() {
        return Err(billing_unavailable("no payment provider configured"));
    }
    codes.verify(Purpose::Login, &email, otp, source).await?;
    if let Some(billing) = &state.billing {
        for id in &live {
            billing
                .cancel_subscription(id)
                .await
                .map_err(billing_unavailable)?;
            tracing::info!(user_id = %user.id, subscription = %id, "subscription cancelled for an account deletion");
        }
    }
    let pending = close(state, user.id).await?;
    tracing::info!(user_id = %user.id, "account closed");
    // Nothing below can bring the account back: failures are logged and left to expire.
    if let Err(e) = codes.revoke(Purpose::PasswordReset, &email).await {
        tracing::warn!(error = %e, "could not revoke a reset code of a closed account");
    }
    cache::invalidate(&state.redis, user.id).await;
    for message in pending {
        live::forget(&state.redis, message).await;
    }
    if !purge(state, user.id, Instant::now() + REQUEST_BUDGET).await? {
        tracing::info!(user_id = %user.id, "account data left for the sweep to delete");
    }
    Ok(())
}

/// The closing transaction; returns the messages still waiting for a reply (their live
/// streams are dropped after).
async fn close(state: &AppState, user: Uuid) -> AppResult<Vec<Uuid>> {
    let mut db = state.db().await?;
    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE users SET email = 'deleted-' || id || '@deleted.invalid', name = NULL, \
             password_hash = NULL, stripe_customer_id = NULL, email_verified_at = NULL, \
             tier = 'basic', token_version = token_version + 1, deleted_at = now(), \
             updated_at = now() \
         WHERE id = $1",
        &[&user],
    )
    .await?;
    tx.execute("DELETE FROM subscriptions WHERE user_id = $1", &[&user])
        .await?;
    let pending = tx
        .query(
            "SELECT id FROM messages WHERE user_id = $1 AND status = 'pending'",
            &[&user],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().await?;
    Ok(pending)
}

/// Deletes a closed account's messages a batch at a time, then the account; `false`
/// when `deadline` came first (the rest is left for [`finish_closed`]).
async fn purge(state: &AppState, user: Uuid, deadline: Instant) -> AppResult<bool> {
    let mut db = state.db().await?;
    while messages::delete_user_batch(&mut db, user).await? > 0 {
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
    db.execute(
        "DELETE FROM users WHERE id = $1 AND deleted_at IS NOT NULL",
        &[&user],
    )
    .await?;
    Ok(true)
}

/// The sweep's part: finishes closed accounts left by requests that ran out of time (or
/// failed after closing), oldest first, within `budget`; returns how many it finished.
pub async fn finish_closed(state: &AppState, budget: Duration) -> AppResult<u64> {
    let deadline = Instant::now() + budget;
    let closed: Vec<Uuid> = state
        .db()
        .await?
        .query(
            "SELECT id FROM users WHERE deleted_at IS NOT NULL ORDER BY deleted_at LIMIT 20",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut finished = 0;
    for user in closed {
        if Instant::now() >= deadline || !purge(state, user, deadline).await? {
            break;
        }
        finished += 1;
    }
    Ok(finished)
}
