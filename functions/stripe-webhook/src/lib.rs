//! The Stripe webhook endpoint (no JWT: the signature is the authentication).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use shared::billing::webhook;
use shared::{AppResult, AppState};

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[("POST", "/webhook/stripe")];

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/webhook/stripe", post(receive))
        .with_state(state)
}

/// `body` is the exact bytes received (lambda_http has already decoded a base64 body).
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<Value>> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let outcome = webhook::handle(&state, &body, signature).await?;
    Ok(Json(
        json!({ "received": true, "outcome": outcome.as_str() }),
    ))
}
