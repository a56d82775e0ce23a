//! The daily cap on everything that asks the model for a reply (`POST .../message`,
//! `POST .../messages/{message_id}/regenerate`, `PATCH .../messages/{message_id}`), as a
//! route middleware.
//!
//! Order matters: authentication and ownership first (a 401 or 404 costs nothing),
//! then idempotent retries (free: the stored answer, or 409 `request_in_progress` while
//! the first request with the key is still in flight), then one atomic count; a request
//! that fails after being counted gives its unit back. Every answer past the ownership
//! check carries the `RateLimit-*` headers.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use uuid::Uuid;

use shared::chat::idempotency;
use shared::http::AuthUser;
use shared::quota::{self, Decision};
use shared::{AppError, AppState, chat};

/// Set on a 202 that repeats an earlier answer; such a request costs no quota.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

pub async fn enforce(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let id = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| {
                Uuid::parse_str(v)
                    .map_err(|_| AppError::BadRequest(format!("{name} is not a UUID")))
            })
            .transpose()
    };
    let chatroom =
        id("id").and_then(|c| c.ok_or_else(|| AppError::BadRequest("no chatroom id".into())));
    let message = id("message_id");
    let regenerate = request.uri().path().ends_with("/regenerate");
    // The caller first (a 401 before a 400 for a malformed id), with the ownership in the
    // same query; the handler's `AuthUser` reuses the caller.
    let (mut parts, body) = request.into_parts();
    let (AuthUser(user), owns) = match &chatroom {
        Ok(room) => AuthUser::with_chatroom(&mut parts, &state, *room).await?,
        Err(_) => (
            AuthUser::from_request_parts(&mut parts, &state).await?,
            false,
        ),
    };
    let (chatroom, message) = (chatroom?, message?);
    if !owns {
        return Err(chat::not_found());
    }
    let request = Request::from_parts(parts, body);
    let now = Utc::now();
    let day = quota::today(now);
    let limit = quota::limit_for(&user.tier, state.config.basic_daily_limit);
    let retry_after = quota::seconds_until_reset(now);
    let mut request = request;
    let mut in_flight = None;
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
        let action = match (message, content.as_deref()) {
            (Some(message), _) if regenerate => Some(chat::Action::Regenerate(message)),
            (Some(message), Some(content)) => Some(chat::Action::Edit(message, content)),
            (None, Some(content)) => Some(chat::Action::Send(content)),
            _ => None,
        };
        // A body without `content` cannot be compared with the stored request: let the
        // handler reject it (the unit it costs is given back).
        if let Some(action) = action {
            let mut marked = false;
            let early = answer_retry(&state, user.id, &key, chatroom, action, &mut marked).await;
            if marked {
                in_flight = Some(key);
            }
            let mut response = match early {
                Ok(None) => None,
                Ok(Some(response)) => Some(response),
                Err(e) => Some(e.into_response()),
            };
            // Retries cost nothing but say where the caller stands, like every send answer.
            if let Some(response) = response.as_mut() {
                let used = match state.quota.used(user.id, day).await {
                    Ok(used) => Some(used),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the daily count for a replay");
                        None
                    }
                };
                rate_limit_headers(
                    response.headers_mut(),
                    limit.filter(|_| used.is_some()),
                    used.unwrap_or(0),
                    retry_after,
                );
            }
            if let Some(response) = response {
                return Ok(response);
            }
        }
    }

    let response = count_and_run(&state, user.id, day, limit, retry_after, request, next).await;
    if let Some(key) = in_flight {
        idempotency::clear_in_flight(&state.redis, user.id, &key).await;
    }
    response
}

/// Answers a retry without counting it: the stored 202, or 409 `request_in_progress`
/// while the first request with its key is still being handled (never a cap refusal),
/// or 409 `idempotency_key_reused`. `Ok(None)`: a new request, which `marked` says is
/// now marked in flight.
async fn answer_retry(
    state: &AppState,
    user: Uuid,
    key: &str,
    chatroom: Uuid,
    action: chat::Action<'_>,
    marked: &mut bool,
) -> Result<Option<Response>, AppError> {
    let replayed = |body| {
        let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    };
    // Mark first, then look: a first request that finishes in between is then seen.
    let held_elsewhere = match idempotency::mark_in_flight(&state.redis, user, key).await {
        Ok(mine) => {
            *marked = mine;
            !mine
        }
        Err(e) => {
            // Without the mark, the handler's insert still settles two racing requests.
            tracing::warn!(error = %e, "could not mark an idempotency key in flight");
            false
        }
    };
    match chat::find_replay(state, user, key, chatroom, Some(action)).await {
        Ok(Some(body)) => {
            if *marked {
                idempotency::clear_in_flight(&state.redis, user, key).await;
                *marked = false;
            }
            Ok(Some(replayed(body)))
        }
        Ok(None) if held_elsewhere => Err(AppError::RequestInProgress {
            retry_after: idempotency::IN_FLIGHT_RETRY_AFTER,
        }),
        Ok(None) => Ok(None),
        Err(e) => {
            if *marked {
                idempotency::clear_in_flight(&state.redis, user, key).await;
                *marked = false;
            }
            Err(e)
        }
    }
}

/// One atomic count, then the handler; a request that fails (or turns out to be a
/// replay) gives its unit back.
async fn count_and_run(
    state: &AppState,
    user: Uuid,
    day: chrono::NaiveDate,
    limit: Option<u32>,
    retry_after: u64,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    // If the counter cannot be reached the cap cannot be checked: fail closed (503). A
    // count whose answer was lost (a timed-out script, a failed write) may have been
    // applied: it is given back, so uncertainty never strands a unit (at worst the user
    // gains one back that was not taken; the counter never goes below zero).
    let decision = match state.quota.try_consume(user, day, limit).await {
        Ok(decision) => decision,
        Err(e) => {
            if let Err(refund) = state.quota.refund(user, day).await {
                tracing::warn!(user_id = %user, error = %refund, "could not give back an uncertain unit");
            }
            return Err(e);
        }
    };
    let used = match decision {
        Decision::Admitted { used } => used,
        Decision::Refused { used } => {
            let limit = limit.unwrap_or(0);
            tracing::info!(user_id = %user, used, limit, "daily limit reached");
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
        if let Err(e) = state.quota.refund(user, day).await {
            tracing::error!(user_id = %user, error = %e, "could not give back a daily unit");
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
