//! Routes of the chatroom function: chatrooms, messages, and the daily cap on sending.

mod daily_cap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use shared::chat;
use shared::chat::chatrooms::Chatroom;
use shared::chat::messages::Message;
use shared::http::{ApiJson, AuthUser, Bearer, OptionalJson};
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
    ("PATCH", "/chatroom/{id}/messages/{message_id}"),
    ("POST", "/chatroom/{id}/messages/{message_id}/cancel"),
    ("POST", "/chatroom/{id}/messages/{message_id}/regenerate"),
    ("GET", "/models"),
    ("GET", "/search"),
];

pub fn routes(state: AppState) -> Router {
    // Everything that asks the model for a reply counts against the daily cap.
    let capped = || axum::middleware::from_fn_with_state(state.clone(), daily_cap::enforce);
    Router::new()
        .route("/chatroom", post(create).get(list))
        .route("/chatroom/{id}", get(show).patch(update).delete(remove))
        .route("/chatroom/{id}/messages", get(page))
        .route(
            "/chatroom/{id}/message",
            post(send_message).route_layer(capped()),
        )
        .route(
            "/chatroom/{id}/messages/{message_id}",
            get(show_message).merge(patch(edit_message).route_layer(capped())),
        )
        .route(
            "/chatroom/{id}/messages/{message_id}/cancel",
            post(cancel_message),
        )
        .route(
            "/chatroom/{id}/messages/{message_id}/regenerate",
            post(regenerate).route_layer(capped()),
        )
        .route("/models", get(models))
        .route("/search", get(search))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(
    create,
    list,
    show,
    page,
    update,
    remove,
    send_message,
    show_message,
    edit_message,
    cancel_message,
    regenerate,
    models,
    search
))]
pub struct Api;

#[derive(Deserialize, ToSchema)]
struct CreateBody {
    /// 1–100 characters after trimming; omit it to have the chatroom titled from its first exchange.
    name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
struct UpdateBody {
    /// 1–100 characters after trimming.
    name: Option<String>,
    /// Up to 4,000 characters, sent to the model as this conversation's instructions
    /// (after the service's own); `null` or blank clears them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    instructions: Option<Option<String>>,
    /// One of `GET /models`; `null` returns to the default. Pro-only models need Pro.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    model: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`, by default).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Serialize, ToSchema)]
struct Models {
    /// Used when a chatroom has no model of its own.
    default: String,
    models: Vec<chat::settings::ModelChoice>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// 1–1000 characters: words, "a phrase", `or`, `-word` (web-search syntax).
    q: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1–50, default 20.
    limit: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
struct SendBody {
    /// 1–4000 characters, not blank.
    content: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// A message id (`next_cursor` of the previous page): return older messages.
    before: Option<Uuid>,
    /// 1–100, default 50.
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// Seconds (0–20) to hold the request until the message is answered, failed or blocked.
    wait: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct OneChatroom {
    chatroom: Chatroom,
}

#[derive(Serialize, ToSchema)]
struct ChatroomList {
    chatrooms: Vec<Chatroom>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1–1000, default 100.
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct ChatroomPage {
    chatroom: Chatroom,
    /// Oldest first.
    messages: Vec<Message>,
    /// Pass as `before` for the previous page; null at the beginning.
    next_cursor: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
struct Accepted {
    message: Message,
}

#[derive(Serialize, ToSchema)]
struct MessageWithReply {
    message: Message,
    reply: Option<Message>,
}

/// Open a chatroom (an account holds at most 1,000).
#[utoipa::path(post, path = "/chatroom", tag = "chatroom", request_body(content = Option<CreateBody>),
    security(("bearer" = [])), responses((status = 201, body = OneChatroom),
        (status = 409, description = "`too_many_chatrooms`: the account holds 1,000 chatrooms; delete one first")))]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> AppResult<(StatusCode, Json<OneChatroom>)> {
    let name = body.and_then(|b| b.name);
    let chatroom = chat::create_chatroom(&state, user.id, name.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(OneChatroom { chatroom })))
}

/// The caller's chatrooms, newest activity first, a page at a time (`next_cursor` while
/// more remain); the first page at the default size is cached per user for 5 minutes.
#[utoipa::path(get, path = "/chatroom", tag = "chatroom", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = ChatroomList, headers(("x-cache" = String, description = "hit or miss"))),
        (status = 422, description = "`validation_error`: a limit outside 1–1000 or a cursor that is not a `next_cursor`")))]
async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ListQuery>,
) -> AppResult<Response> {
    let (body, hit) = chat::list_chatrooms(&state, user.id, q.cursor.as_deref(), q.limit).await?;
    shared::telemetry::metrics::chatroom_cache(hit);
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

fn page_body(chatroom: Chatroom, page: chat::Page) -> ChatroomPage {
    ChatroomPage {
        chatroom,
        messages: page.messages,
        next_cursor: page.next_cursor,
    }
}

/// A chatroom with its latest 50 messages, oldest first.
#[utoipa::path(get, path = "/chatroom/{id}", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ChatroomPage)))]
async fn show(
    State(state): State<AppState>,
    Bearer(caller): Bearer,
    Path(id): Path<Uuid>,
) -> AppResult<Json<ChatroomPage>> {
    let (room, page) = chat::messages_page(&state, &caller, id, None, None).await?;
    Ok(Json(page_body(room, page)))
}

/// Older messages, a page at a time.
#[utoipa::path(get, path = "/chatroom/{id}/messages", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path), PageQuery), responses((status = 200, body = ChatroomPage)))]
async fn page(
    State(state): State<AppState>,
    Bearer(caller): Bearer,
    Path(id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> AppResult<Json<ChatroomPage>> {
    let (room, page) = chat::messages_page(&state, &caller, id, q.before, q.limit).await?;
    Ok(Json(page_body(room, page)))
}

/// Rename a chatroom, or set its instructions and model (any of the three; an absent
/// field is left as it is).
#[utoipa::path(patch, path = "/chatroom/{id}", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateBody,
    responses((status = 200, body = OneChatroom),
        (status = 403, description = "`pro_model_required`: the model is for Pro users"),
        (status = 422, description = "`validation_error`: no field, a name or instructions too long, a model not in `GET /models`")))]
async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> AppResult<Json<OneChatroom>> {
    use chat::settings::Change;
    let change = chat::ChatroomChange {
        name: body.name,
        instructions: Change::from_field(body.instructions),
        model: Change::from_field(body.model),
    };
    let chatroom = chat::update_chatroom(&state, user.id, &user.tier, id, change).await?;
    Ok(Json(OneChatroom { chatroom }))
}

/// Delete a chatroom and its messages.
#[utoipa::path(delete, path = "/chatroom/{id}", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 204, description = "Deleted")))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> AppResult<StatusCode> {
    chat::delete_chatroom(&state, user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a message; the reply comes asynchronously (poll the message with `wait`).
/// Basic users may send 5 per UTC day (429 `daily_limit_reached` past that).
#[utoipa::path(post, path = "/chatroom/{id}/message", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: for 24 hours the same key returns the first answer (a retry costs no quota)")),
    request_body = SendBody,
    responses((status = 409, description = "idempotency_key_reused: the key was used for another request; \
request_in_progress: the first request with this key is still being handled, retry after `Retry-After` seconds \
(never a daily-cap refusal). Carries the `RateLimit-*` headers, like replayed 202s and 503s",
        headers(("Retry-After" = u64, description = "Seconds to wait (request_in_progress)"))),
        (status = 202, body = Accepted, headers(
        ("RateLimit-Limit" = u32, description = "Daily limit (Basic users)"),
        ("RateLimit-Remaining" = u32, description = "Messages left today (Basic users)"),
        ("RateLimit-Reset" = u64, description = "Seconds until the next UTC midnight")))))]
async fn send_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> AppResult<Response> {
    let key = idempotency_key(&headers)?;
    let sent = chat::send_message(&state, user.id, id, &body.content, key.as_deref()).await?;
    Ok(accepted(sent))
}

fn accepted(sent: chat::Sent) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(sent.body)).into_response();
    if sent.replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// Ask again: the newest message's reply is deleted and a new one is written by the
/// worker (and streamed live) as for a send. Counts against the daily cap like a send.
#[utoipa::path(post, path = "/chatroom/{id}/messages/{message_id}/regenerate", tag = "chatroom",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "As for a send")),
    responses((status = 202, body = Accepted, description = "The message, `pending` again"),
        (status = 409, description = "`not_latest_message`: only the newest message can be asked again; \
`reply_in_progress`: its reply is still being written (wait, or cancel it); or an idempotency conflict as for a send"),
        (status = 429, description = "`daily_limit_reached`")))]
async fn regenerate(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let key = idempotency_key(&headers)?;
    let what = chat::resend::Resend::Regenerate;
    let sent = chat::resend::resend(&state, user.id, id, message_id, what, key.as_deref()).await?;
    Ok(accepted(sent))
}

/// Edit the newest message and have it answered afresh: its reply is deleted and a new
/// one queued, as for a send (same cap and idempotency rules).
#[utoipa::path(patch, path = "/chatroom/{id}/messages/{message_id}", tag = "chatroom",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "As for a send")),
    request_body = SendBody,
    responses((status = 202, body = Accepted, description = "The edited message, `pending`, with `edited_at`"),
        (status = 409, description = "`not_latest_message` or `reply_in_progress`, as for regenerate"),
        (status = 429, description = "`daily_limit_reached`")))]
async fn edit_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> AppResult<Response> {
    let key = idempotency_key(&headers)?;
    let what = chat::resend::Resend::Edit(body.content);
    let sent = chat::resend::resend(&state, user.id, id, message_id, what, key.as_deref()).await?;
    Ok(accepted(sent))
}

/// The models a chatroom may choose (`PATCH /chatroom/{id}` `model`), default first.
#[utoipa::path(get, path = "/models", tag = "chatroom", security(("bearer" = [])),
    responses((status = 200, body = Models)))]
async fn models(State(state): State<AppState>, AuthUser(_): AuthUser) -> Json<Models> {
    Json(Models {
        default: state.config.gemini.model.clone(),
        models: chat::settings::choices(&state.config.gemini),
    })
}

/// Search the caller's messages and replies (PostgreSQL full-text search, `simple`
/// configuration), best match first, with a highlighted snippet.
#[utoipa::path(get, path = "/search", tag = "chatroom", security(("bearer" = [])),
    params(SearchQuery),
    responses((status = 200, body = chat::search::Results),
        (status = 422, description = "`validation_error`: q blank or over 1,000 characters, a bad limit or cursor")))]
async fn search(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(q): Query<SearchQuery>,
) -> AppResult<Json<chat::search::Results>> {
    let query = q.q.unwrap_or_default();
    let results =
        chat::search::search(&state, user.id, &query, q.cursor.as_deref(), q.limit).await?;
    Ok(Json(results))
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

/// A message and its reply (once there); `wait` long-polls for it.
#[utoipa::path(get, path = "/chatroom/{id}/messages/{message_id}", tag = "chatroom", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path), WaitQuery),
    responses((status = 200, body = MessageWithReply)))]
async fn show_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
    Query(q): Query<WaitQuery>,
) -> AppResult<Json<MessageWithReply>> {
    let (message, reply) =
        chat::message_with_reply(&state, user.id, id, message_id, q.wait).await?;
    Ok(Json(MessageWithReply { message, reply }))
}

/// Stop the reply being written: the worker keeps the text so far as the reply, with
/// `finish_reason` `cancelled` (the message ends `answered`; the live stream ends with
/// `done`). A message already answered, blocked or failed is 409 `already_finished`.
#[utoipa::path(post, path = "/chatroom/{id}/messages/{message_id}/cancel", tag = "chatroom",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("message_id" = Uuid, Path)),
    responses((status = 202, body = Accepted),
        (status = 409, description = "already_finished: the message has its answer already")))]
async fn cancel_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, message_id)): Path<(Uuid, Uuid)>,
) -> AppResult<(StatusCode, Json<Accepted>)> {
    let message = chat::live::cancel(&state, user.id, id, message_id).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { message })))
}
