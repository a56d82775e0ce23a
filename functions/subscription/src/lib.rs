//! Routes of the subscription function: Checkout for Pro, status, billing portal.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use shared::billing::{self, CheckoutLink, Status};
use shared::http::AuthUser;
use shared::{AppResult, AppState};

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/subscribe/pro"),
    ("GET", "/subscription/status"),
    ("POST", "/subscription/portal"),
];

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/subscribe/pro", post(subscribe))
        .route("/subscription/status", get(status))
        .route("/subscription/portal", post(portal))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(subscribe, status, portal))]
pub struct Api;

#[derive(Serialize, ToSchema)]
struct PortalLink {
    portal_url: String,
}

/// Start Stripe Checkout for Pro.
#[utoipa::path(post, path = "/subscribe/pro", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = CheckoutLink), (status = 409, description = "already_subscribed")))]
async fn subscribe(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> AppResult<Json<CheckoutLink>> {
    Ok(Json(billing::start_checkout(&state, &user).await?))
}

/// Tier, subscription state and today's usage.
#[utoipa::path(get, path = "/subscription/status", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Status)))]
async fn status(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> AppResult<Json<Status>> {
    Ok(Json(billing::status(&state, &user).await?))
}

/// A Stripe Billing Portal session to cancel or update payment.
#[utoipa::path(post, path = "/subscription/portal", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = PortalLink), (status = 409, description = "no_billing_account")))]
async fn portal(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> AppResult<Json<PortalLink>> {
    let portal_url = billing::portal(&state, &user).await?;
    Ok(Json(PortalLink { portal_url }))
}
