//! Routes of the chatroom function: chatrooms, messages, and the daily cap on sending.

mod daily_cap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use shared::chat;
use shared::http::{ApiJson, AuthUser, OptionalJson};
use shared::{AppError, AppResult, AppState};

pub use daily_cap::REPLAYED_HEADER;

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/chatroom"),
    ("GET", "/chatroom"),
    ("GET", "/chatroom/{id}"),
    ("PATCH", "/chatroom/{id}"),
    ("DELETE", "/chatroom/{id}"),
    ("GET", "/chatroom/{id}/messages"),
    ("POST", "/chatroom/{id}/message"),
    ("GET", "/chatroom/{id}/messages/{message_id}"),
];

pub fn routes(state: AppState) -> Router {
    let send = post(send_message).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        daily_cap::enforce,
    ));
    Router::new()
        .route("/chatroom", post(create).get(list))
        .route("/chatroom/{id}", get(show).patch(rename).delete(remove))
        .route("/chatroom/{id}/messages", get(page))
        .route("/chatroom/{id}/message", send)
        .route("/chatroom/{id}/messages/{message_id}", get(show_message))
        .with_state(state)
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RenameBody {
    name: String,
}

#[derive(Deserialize)]
struct SendBody {
    content: String,
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<Uuid>,
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> AppResult<impl IntoResponse> {
    let name = body.and_then(|b| b.name);
    let room = chat::create_chatroom(&state, user.id, name.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "chatroom": room }))))
}

async fn list(State(state): State<AppState>, AuthUser(user): AuthUser) -> AppResult<Response> {
    let (body, hit) = chat::list_chatrooms(&state, user.id).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("x-cache"),
                HeaderValue::from_static(if hit { "hit" } else { "miss" }),
            ),
        ],
        body,
    )
        .into_response())
}

fn page_body(room: &shared::chatrooms::Chatroom, page: &chat::Page) -> Value {
    json!({
        "chatroom": room,
        "messages": page.messages,
        "next_cursor": page.next_cursor,
    })
}

async fn show(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> AppResult<Json<Value>> {
    let (room, page) = chat::messages_page(&state, user.id, id, None, None).await?;
    Ok(Json(page_body(&room, &page)))
}

async fn page(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<Value>> {
    let (room, page) = chat::messages_page(&state, user.id, id, q.before, q.limit).await?;
    Ok(Json(page_body(&room, &page)))
}

async fn rename(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<RenameBody>,
) -> AppResult<Json<Value>> {
    let room = chat::rename_chatroom(&state, user.id, id, &body.name).await?;
    Ok(Json(json!({ "chatroom": room })))
}

async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> AppResult<StatusCode> {
    chat::delete_chatroom(&state, user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn send_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> AppResult<Response> {
    let key = idempotency_key(&headers)?;
    let sent = chat::send_message(&state, user.id, id, &body.content, key.as_deref()).await?;
    let mut response = (StatusCode::ACCEPTED, Json(sent.body)).into_response();
    if sent.replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> AppResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| AppError::validation("Idempotency-Key must be visible ASCII"))?;
            chat::validate_idempotency_key(key)?;
            Ok(Some(key.to_string()))
        }
    }
}

async fn show_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    Query(q): Query<WaitQuery>,
) -> AppResult<Json<Value>> {
    let (message, reply) =
        chat::message_with_reply(&state, user.id, id, message_id, q.wait).await?;
    Ok(Json(json!({ "message": message, "reply": reply })))
}
