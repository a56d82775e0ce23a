//! Routes of the subscription function: Checkout for Pro, status, billing portal.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

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

async fn subscribe(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> AppResult<Json<CheckoutLink>> {
    Ok(Json(billing::start_checkout(&state, &user).await?))
}

async fn status(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> AppResult<Json<Status>> {
    Ok(Json(billing::status(&state, &user).await?))
}

async fn portal(State(state): State<AppState>, AuthUser(user): AuthUser) -> AppResult<Json<Value>> {
    let url = billing::portal(&state, &user).await?;
    Ok(Json(json!({ "portal_url": url })))
}
