//! The daily cap on `POST /chatroom/{id}/message`, as a route middleware.
//!
//! Order matters: authentication and ownership first (a 401 or 404 costs nothing),
//! then idempotent replays (free), then one atomic count; a request that fails after
//! being counted gives its unit back.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use shared::http::AuthUser;
use shared::quota::{self, Decision};
use shared::{AppError, AppState, chat};

/// Set on a 202 that repeats an earlier answer; such a request costs no quota.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn enforce(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(chatroom): Path<Uuid>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    chat::owned_chatroom(&state, user.id, chatroom).await?;
    let mut request = request;
    if let Some(key) = crate::idempotency_key(request.headers())? {
        // Buffer the body so a reused key with different content is told apart.
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, shared::http::BODY_LIMIT)
            .await
            .map_err(|_| AppError::PayloadTooLarge)?;
        let content = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("content").and_then(|c| c.as_str()).map(str::to_owned));
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
        // A body without `content` cannot be compared with the stored request: let the
        // handler reject it (the unit it costs is given back).
        if let Some(content) = content.as_deref()
            && let Some(body) =
                chat::find_replay(&state, user.id, &key, chatroom, Some(content)).await?
        {
            let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            return Ok(response);
        }
    }

    let now = Utc::now();
    let day = quota::today(now);
    let limit = quota::limit_for(&user.tier, state.config.basic_daily_limit);
    let retry_after = quota::seconds_until_reset(now);
    // If the counter cannot be reached the cap cannot be checked: fail closed (503).
    let used = match state.quota.try_consume(user.id, day, limit).await? {
        Decision::Admitted { used } => used,
        Decision::Refused { used } => {
            let limit = limit.unwrap_or(0);
            tracing::info!(user_id = %user.id, used, limit, "daily limit reached");
            shared::telemetry::metrics::daily_cap_refused();
            let mut response = AppError::DailyLimitReached { limit, retry_after }.into_response();
            rate_limit_headers(response.headers_mut(), Some(limit), used, retry_after);
            return Ok(response);
        }
    };

    let mut response = next.run(request).await;
    let refund =
        !response.status().is_success() || response.headers().contains_key(REPLAYED_HEADER);
    let used = if refund {
        if let Err(e) = state.quota.refund(user.id, day).await {
            tracing::error!(user_id = %user.id, error = %e, "could not give back a daily unit");
        }
        used.saturating_sub(1)
    } else {
        used
    };
    rate_limit_headers(response.headers_mut(), limit, used, retry_after);
    Ok(response)
}

/// `RateLimit-*` headers; Pro users (no limit) get only the reset time.
fn rate_limit_headers(headers: &mut HeaderMap, limit: Option<u32>, used: u32, reset: u64) {
    if let Some(limit) = limit {
        headers.insert("ratelimit-limit", HeaderValue::from(limit));
        headers.insert(
            "ratelimit-remaining",
            HeaderValue::from(limit.saturating_sub(used)),
        );
    }
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}
