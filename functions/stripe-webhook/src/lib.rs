//! The Stripe webhook endpoint (no JWT: the signature is the authentication).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

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

#[derive(OpenApi)]
#[openapi(paths(receive))]
pub struct Api;

#[derive(Serialize, ToSchema)]
struct Ack {
    received: bool,
    /// `applied`, `duplicate` or `ignored`.
    outcome: &'static str,
}

/// Stripe events, authenticated by `Stripe-Signature` (HMAC-SHA256 over `t.payload`).
/// `body` is the exact bytes received (lambda_http has already decoded a base64 body).
/// Two events of one subscription with the same `created` second and kind are settled by
/// reading the subscription back from Stripe; 500 while that read fails (Stripe retries).
#[utoipa::path(post, path = "/webhook/stripe", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex hmac>")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = Ack), (status = 400, description = "invalid_signature"),
        (status = 500, description = "processing_failed: the database or, on a same-second tie, Stripe could not be reached; Stripe delivers the event again")))]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<Json<Ack>> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let outcome = webhook::handle(&state, &body, signature).await;
    shared::telemetry::metrics::webhook_event(&outcome);
    let outcome = outcome?;
    Ok(Json(Ack {
        received: true,
        outcome: outcome.as_str(),
    }))
}
