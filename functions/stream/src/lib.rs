//! Routes of the stream function, whatever is better streamed than buffered: a message's
//! reply as server-sent events, live, and the account's data export. Served by a Lambda
//! Function URL in response-streaming mode (API Gateway HTTP APIs buffer responses, up to
//! 6 MB), and by the local server on the same paths.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use utoipa::OpenApi;
use uuid::Uuid;

use shared::chat::live::{self, LiveEvent};
use shared::http::AuthUser;
use shared::{AppError, AppResult, AppState, account};

/// Every (method, path) this function serves; `cargo lambda watch` must route exactly
/// these here (checked by the route tests). On AWS the function has its own URL.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/chatroom/{id}/messages/{message_id}/stream"),
    ("GET", "/user/export"),
];

/// Comment lines sent while nothing else is, so proxies keep the connection open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/chatroom/{id}/messages/{message_id}/stream", get(stream))
        .route("/user/export", get(export))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(stream, export), components(schemas(StreamEventData)))]
pub struct Api;

/// The `data` of one server-sent event, by event type: `delta` has `text`, `reset` is
/// `{}`, `done` has `message` and `reply` (as the long-poll route), `error` has `error`
/// (the envelope). Only for the OpenAPI document: each event is written as JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StreamEventData {
    /// `delta`: text to append.
    text: Option<String>,
    /// `done`: the user message.
    message: Option<serde_json::Value>,
    /// `done`: the model reply, if any.
    reply: Option<serde_json::Value>,
    /// `error`: `{"code", "message"}`.
    error: Option<serde_json::Value>,
}

/// The reply to a message as it is written (`text/event-stream`). Events: `delta`
/// (`{"text"}`: append), `reset` (`{}`: drop the text so far), `done` (`{"message",
/// "reply"}`, as the long-poll route) and `error` (the error envelope). Every event has
/// an `id`: reconnect with `Last-Event-ID` to resume without loss or repetition. A
/// finished message answers its stored reply as one `delta`, then `done`. Comment
/// heartbeats every 15 s. At most five streams per account are open at once. On AWS this
/// is served by the stream function's URL.
#[utoipa::path(get, path = "/chatroom/{id}/messages/{message_id}/stream", tag = "chatroom",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-sent events: delta, reset, done, error",
        content_type = "text/event-stream", body = StreamEventData),
        (status = 429, description = "`too_many_streams`: this account already holds `STREAMS_PER_USER` (5) open streams; close one, or retry after `Retry-After`"),
        (status = 503, description = "`cache_unavailable`: Redis, which carries live replies, is unreachable; poll the message instead")))]
async fn stream(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> AppResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| AppError::validation("Last-Event-ID must be visible ASCII"))
        })
        .transpose()?;
    let events = live::follow(&state, user.id, id, message_id, last_event_id).await?;
    let events = futures_util::stream::unfold(events, |mut rx| async move {
        rx.recv().await.map(|e| (Ok(sse_event(e)), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

fn sse_event(e: LiveEvent) -> Event {
    let event = Event::default().event(e.event).data(e.data.to_string());
    if e.id.is_empty() {
        event
    } else {
        event.id(e.id)
    }
}

/// Everything the account holds, as one JSON document written as it is read: the
/// account, its subscriptions, and every chatroom with its instructions, model and
/// messages (status and timestamps); schema in docs/api.md. Once per 10 minutes. On AWS
/// this is served by the stream function's URL, which streams it (no 6 MB cap).
#[utoipa::path(get, path = "/user/export", tag = "user", security(("bearer" = [])),
    responses((status = 200, description = "The export (attachment, application/json)", content_type = "application/json"),
        (status = 429, description = "`export_rate_limited`: one export per 10 minutes",
            headers(("Retry-After" = u64, description = "Seconds until the next export")))))]
async fn export(State(state): State<AppState>, AuthUser(user): AuthUser) -> AppResult<Response> {
    let chunks = account::export::document(&state, &user).await?;
    let name = account::export::content_disposition();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
