//! Chatroom and messaging rules, free of HTTP and AWS types: handlers call these.

pub mod cache;
pub mod chatrooms;
pub mod idempotency;
pub mod live;
pub mod messages;
pub mod model;
pub mod outcome;
pub mod page_reads;
pub mod resend;
pub mod search;
pub mod settings;
pub mod worker;

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::jwt::Claims;
use crate::auth::users;
use crate::clients::queue::ReplyJob;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use cache::Lookup;
use chatrooms::Chatroom;
use messages::{CONTENT_MAX, Message};

pub const PAGE_DEFAULT: i64 = 50;
pub const PAGE_MAX: i64 = 100;
pub const WAIT_MAX_SECS: u64 = 20;
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// The answer for a chatroom that does not exist or is not the caller's (the same, so
/// that ids of other users' chatrooms cannot be probed).
pub fn not_found() -> AppError {
    AppError::NotFound("chatroom not found".into())
}

pub async fn create_chatroom(
    state: &AppState,
    user: Uuid,
    name: Option<&str>,
) -> AppResult<Chatroom> {
    let name = name.map(chatrooms::parse_name).transpose()?;
    let room = chatrooms::create(&mut state.db().await?, user, name.as_deref()).await?;
    cache::invalidate(&state.redis, user).await;
    Ok(room)
}

/// A page of the user's chatrooms as the JSON body of `GET /chatroom`
/// (`{"chatrooms", "next_cursor"}`), and whether it came from cache. The first page at the
/// default size is the cached one. Redis trouble degrades to reading Postgres, never to an
/// error.
pub async fn list_chatrooms(
    state: &AppState,
    user: Uuid,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> AppResult<(String, bool)> {
    let after = cursor.map(chatrooms::ListCursor::parse).transpose()?;
    let limit = limit.unwrap_or(chatrooms::LIST_DEFAULT);
    if !(1..=chatrooms::LIST_LIMIT_MAX).contains(&limit) {
        return Err(AppError::validation(format!(
            "limit must be between 1 and {}",
            chatrooms::LIST_LIMIT_MAX
        )));
    }
    let cacheable = after.is_none() && limit == chatrooms::LIST_DEFAULT;
    let generation = if cacheable {
        match cache::lookup(&state.redis, user).await {
            Ok(Lookup::Hit(body)) => return Ok((body, true)),
            Ok(Lookup::Miss { generation }) => Some(generation),
            Err(e) => {
                tracing::warn!(error = %e, "chatroom cache unavailable; reading Postgres");
                None
            }
        }
    } else {
        None
    };
    let (rooms, more) = chatrooms::list(&state.db().await?, user, after, limit).await?;
    let next_cursor = more
        .then(|| {
            rooms
                .last()
                .map(|r| chatrooms::ListCursor::after(r).encode())
        })
        .flatten();
    let body = json!({ "chatrooms": rooms, "next_cursor": next_cursor }).to_string();
    if let Some(generation) = generation
        && let Err(e) = cache::store(&state.redis, user, generation, &body).await
    {
        tracing::warn!(error = %e, "could not fill the chatroom cache");
    }
    Ok((body, false))
}

pub struct Page {
    pub messages: Vec<Message>,
    /// Pass as `before` to get the next older page; `None` at the beginning.
    pub next_cursor: Option<Uuid>,
}

impl Page {
    /// `messages` oldest first; `more`: whether older ones remain.
    fn new(messages: Vec<Message>, more: bool) -> Self {
        let next_cursor = if more {
            messages.first().map(|m| m.id)
        } else {
            None
        };
        Self {
            messages,
            next_cursor,
        }
    }
}

/// A page of messages, oldest first, older than the `before` message (a message id),
/// for the holder of `caller`'s token: their row is read alongside the chatroom and its
/// messages (in the same round trip, or in batches where the process batches), and
/// checked before any of it is used.
pub async fn messages_page(
    state: &AppState,
    caller: &Claims,
    chatroom: Uuid,
    before: Option<Uuid>,
    limit: Option<i64>,
) -> AppResult<(Chatroom, Page)> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(AppError::validation(format!(
            "limit must be between 1 and {PAGE_MAX}"
        )));
    }
    let user = caller.sub;
    if let (Some(batches), None) = (&state.batched, before) {
        // The common case, in a process that batches: both reads share statements with
        // other requests', and neither holds a connection while it waits.
        let (caller_row, newest) = tokio::try_join!(
            batches.callers.read(&state.db, user),
            batches.newest_pages.read(
                &state.db,
                page_reads::PageKey {
                    user,
                    chatroom,
                    limit
                }
            ),
        )?;
        crate::auth::admit(caller, caller_row)?;
        let (room, messages, more) = newest.ok_or_else(not_found)?;
        return Ok((room, Page::new(messages, more)));
    }
    // Unbatched, the caller's row, the ownership check and the reads it guards go out
    // together on one connection (tokio-postgres pipelines queries polled at once): one
    // round trip. Batched, the caller's row comes from a statement on a connection of its
    // own, and the one taken here is held only for this route's statements, so no
    // request holds a connection while it waits for a batch that needs one. What they
    // read is returned only once the caller is admitted and the chatroom found.
    let batched = async {
        match &state.batched {
            Some(batches) => batches.callers.read(&state.db, user).await.map(Some),
            None => Ok(None),
        }
    };
    let reads = async {
        let db = state.db().await?;
        let direct = async {
            match &state.batched {
                Some(_) => Ok(None),
                None => users::by_id(&db, user).await.map(Some),
            }
        };
        match before {
            None => {
                let (caller_row, room, page) = tokio::try_join!(
                    direct,
                    chatrooms::owned(&db, user, chatroom),
                    messages::page(&db, chatroom, None, limit),
                )?;
                AppResult::Ok((caller_row, room, Some(page)))
            }
            Some(id) => {
                let (caller_row, room, cursor) = tokio::try_join!(
                    direct,
                    chatrooms::owned(&db, user, chatroom),
                    messages::by_id(&db, id),
                )?;
                let before_seq = cursor.filter(|m| m.chatroom_id == chatroom).map(|m| m.seq);
                let page = match (&room, before_seq) {
                    (Some(_), Some(seq)) => {
                        Some(messages::page(&db, chatroom, Some(seq), limit).await?)
                    }
                    _ => None,
                };
                Ok((caller_row, room, page))
            }
        }
    };
    let (batched_row, (direct_row, room, page)) = tokio::try_join!(batched, reads)?;
    // Exactly one of the two was read; neither would mean no row, so a refusal.
    crate::auth::admit(caller, batched_row.or(direct_row).flatten())?;
    let room = room.ok_or_else(not_found)?;
    let (messages, more) =
        page.ok_or_else(|| AppError::validation("before is not a message of this chatroom"))?;
    Ok((room, Page::new(messages, more)))
}

/// What a `PATCH /chatroom/{id}` asks for, as received.
#[derive(Debug, Default)]
pub struct ChatroomChange {
    pub name: Option<String>,
    pub instructions: settings::Change<String>,
    pub model: settings::Change<String>,
}

/// Renames a chatroom and/or sets its instructions and model. `tier` is the caller's: a
/// Pro-only model is refused to a Basic user (403 `pro_model_required`).
pub async fn update_chatroom(
    state: &AppState,
    user: Uuid,
    tier: &str,
    id: Uuid,
    change: ChatroomChange,
) -> AppResult<Chatroom> {
    use settings::Change;
    if change.name.is_none() && change.instructions.is_keep() && change.model.is_keep() {
        return Err(AppError::validation(
            "give at least one of name, instructions, model",
        ));
    }
    let name = change
        .name
        .as_deref()
        .map(chatrooms::parse_name)
        .transpose()?;
    let instructions = match change.instructions {
        Change::Set(raw) => match settings::parse_instructions(&raw)? {
            Some(text) => Change::Set(text),
            None => Change::Clear,
        },
        other => other,
    };
    if let Change::Set(model) = &change.model {
        settings::check_choice(&state.config.gemini, model, tier)?;
    }
    let update = chatrooms::Update {
        name,
        instructions,
        model: change.model,
    };
    let room = chatrooms::update(&state.db().await?, user, id, &update)
        .await?
        .ok_or_else(not_found)?;
    cache::invalidate(&state.redis, user).await;
    Ok(room)
}

/// How long one `DELETE /chatroom/{id}` may spend deleting messages before it answers
/// 503 `delete_in_progress` (a repeat carries on); below the API's 29 s.
pub const DELETE_BUDGET: Duration = Duration::from_secs(15);

pub async fn delete_chatroom(state: &AppState, user: Uuid, id: Uuid) -> AppResult<()> {
    delete_chatroom_within(state, user, id, DELETE_BUDGET).await
}

/// Deletes a chatroom's messages in bounded batches, then the chatroom. The cached list
/// is dropped first (and again at the end): a request that dies half-way, or a COMMIT
/// that lands after the client gave up, never leaves a deleted room in the list.
pub async fn delete_chatroom_within(
    state: &AppState,
    user: Uuid,
    id: Uuid,
    budget: Duration,
) -> AppResult<()> {
    let mut db = state.db().await?;
    if !chatrooms::is_owned(&db, user, id).await? {
        return Err(not_found());
    }
    cache::invalidate(&state.redis, user).await;
    let started = tokio::time::Instant::now();
    while messages::delete_batch(&mut db, id).await? > 0 {
        if started.elapsed() >= budget {
            tracing::info!(chatroom_id = %id, "large chatroom: deletion continues on the next request");
            return Err(AppError::Unavailable {
                code: "delete_in_progress",
                message:
                    "the chatroom is large and is still being deleted; repeat the request to finish"
                        .into(),
            });
        }
    }
    let deleted = chatrooms::delete(&db, user, id).await?;
    cache::invalidate(&state.redis, user).await;
    if !deleted {
        return Err(not_found()); // a concurrent delete finished first
    }
    Ok(())
}

pub fn validate_content(content: &str) -> AppResult<()> {
    let n = content.chars().count();
    // PostgreSQL text cannot hold NUL; refuse it here rather than fail in the database.
    if content.trim().is_empty() || n > CONTENT_MAX || content.contains('\0') {
        return Err(AppError::validation(format!(
            "content must be 1 to {CONTENT_MAX} characters, not blank, without NUL characters"
        )));
    }
    Ok(())
}

pub fn validate_idempotency_key(key: &str) -> AppResult<()> {
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_MAX
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AppError::validation(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        )));
    }
    Ok(())
}

/// What an `Idempotency-Key` is bound to, besides the chatroom: a reused key with
/// another request answers 409 `idempotency_key_reused`.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    Send(&'a str),
    Edit(Uuid, &'a str),
    Regenerate(Uuid),
}

impl Action<'_> {
    /// A send is its content (as stored by earlier versions); the others are tagged.
    /// Content never holds NUL (`validate_content`), so no two actions look alike.
    fn fingerprint(&self) -> String {
        match self {
            Action::Send(content) => (*content).to_string(),
            Action::Edit(id, content) => format!("edit\0{id}\0{content}"),
            Action::Regenerate(id) => format!("regenerate\0{id}"),
        }
    }
}

fn request_hash(chatroom: Uuid, action: Action<'_>) -> String {
    hex::encode(Sha256::digest(format!(
        "{chatroom}\0{}",
        action.fingerprint()
    )))
}

pub struct Sent {
    /// The `202` body: `{"message": {...}}`.
    pub body: Value,
    /// True when this is the stored answer to an earlier request with the same key.
    pub replayed: bool,
}

/// The stored answer for an idempotency key, if this user used it before; 409 when it
/// was used for another request than `action` (`None`: not compared).
pub async fn find_replay(
    state: &AppState,
    user: Uuid,
    key: &str,
    chatroom: Uuid,
    action: Option<Action<'_>>,
) -> AppResult<Option<Value>> {
    replay_on(&state.db().await?, user, key, chatroom, action).await
}

async fn replay_on<C: deadpool_postgres::GenericClient>(
    db: &C,
    user: Uuid,
    key: &str,
    chatroom: Uuid,
    action: Option<Action<'_>>,
) -> AppResult<Option<Value>> {
    // An expired key (older than a day) is forgotten, even before the sweeper purges it.
    let sql = format!(
        "SELECT request_hash, response FROM idempotency_keys \
         WHERE user_id = $1 AND key = $2 AND {}",
        idempotency::LIVE
    );
    let row = db.query_opt(&sql, &[&user, &key]).await?;
    let Some(row) = row else { return Ok(None) };
    let stored_hash: String = row.get(0);
    if let Some(action) = action
        && stored_hash != request_hash(chatroom, action)
    {
        return Err(AppError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request".into(),
        });
    }
    Ok(Some(row.get(1)))
}

/// Stores the message, then queues it for a reply. Nothing is silently lost: if the
/// queue refuses, the message is marked `failed` and the caller gets 503.
pub async fn send_message(
    state: &AppState,
    user: Uuid,
    chatroom: Uuid,
    content: &str,
    idempotency_key: Option<&str>,
) -> AppResult<Sent> {
    validate_content(content)?;
    if let Some(key) = idempotency_key {
        validate_idempotency_key(key)?;
    }
    // The write, its COMMIT and the publish run on a task of their own: a client that
    // hangs up drops this future, and one that did so while the COMMIT was in flight
    // would otherwise leave a committed message unqueued until the sweeper (10 minutes).
    tokio::spawn(store_and_queue(
        state.clone(),
        user,
        chatroom,
        content.to_owned(),
        idempotency_key.map(str::to_owned),
    ))
    .await
    .map_err(AppError::internal)?
}

async fn store_and_queue(
    state: AppState,
    user: Uuid,
    chatroom: Uuid,
    content: String,
    idempotency_key: Option<String>,
) -> AppResult<Sent> {
    let content = content.as_str();
    let mut db = state.db().await?;
    let message = match idempotency_key.as_deref() {
        // One statement, one round trip.
        None => messages::insert_user_message(&db, user, chatroom, content)
            .await?
            .ok_or_else(not_found)?,
        // The message and its idempotency record commit together.
        Some(key) => {
            let action = Action::Send(content);
            let tx = db.transaction().await?;
            let message = messages::insert_user_message(&tx, user, chatroom, content)
                .await?
                .ok_or_else(not_found)?;
            if !record_key(&tx, user, key, chatroom, action, &message).await? {
                // A concurrent request with the same key won the race: answer as it did.
                tx.rollback().await?;
                return replay_after_race(&db, user, key, chatroom, action).await;
            }
            tx.commit().await?;
            message
        }
    };
    // Back to the pool before the Redis and queue calls: holding it across them made
    // concurrent senders wait for a connection that sat idle.
    drop(db);
    let body = json!({ "message": message_view(&message) });
    queue_committed(state, user, chatroom, message.id).await?;
    Ok(Sent {
        body,
        replayed: false,
    })
}

/// Stores the 202 for `key` beside the message it queued, in the caller's transaction;
/// `false` when a live record of the key exists already (a concurrent request won).
async fn record_key(
    tx: &deadpool_postgres::Transaction<'_>,
    user: Uuid,
    key: &str,
    chatroom: Uuid,
    action: Action<'_>,
    message: &Message,
) -> AppResult<bool> {
    let stored = tx
        .execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, message_id, response) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, key) DO UPDATE SET request_hash = $3, \
             message_id = $4, response = $5, created_at = now() \
             WHERE idempotency_keys.created_at <= now() - interval '24 hours'",
            &[
                &user,
                &key,
                &request_hash(chatroom, action),
                &message.id,
                &json!({ "message": message_view(message) }),
            ],
        )
        .await?;
    Ok(stored == 1)
}

/// The answer of the request that won a race for `key`. On the connection already held:
/// asking the pool for a second one could wait forever with a pool of one. No row means
/// that request could not queue its message and freed the key again.
async fn replay_after_race(
    db: &deadpool_postgres::Client,
    user: Uuid,
    key: &str,
    chatroom: Uuid,
    action: Action<'_>,
) -> AppResult<Sent> {
    let body = replay_on(db, user, key, chatroom, Some(action))
        .await?
        .ok_or_else(|| AppError::Unavailable {
            code: "queue_unavailable",
            message: "an earlier request with this Idempotency-Key could not be queued; \
                      retry shortly"
                .into(),
        })?;
    Ok(Sent {
        body,
        replayed: true,
    })
}

async fn queue_committed(
    state: AppState,
    user: Uuid,
    chatroom: Uuid,
    message_id: Uuid,
) -> AppResult<()> {
    cache::invalidate(&state.redis, user).await;
    let published = match &state.queue {
        Some(queue) => queue
            .publish(ReplyJob { message_id })
            .await
            .map_err(|e| e.0),
        None => Err("no reply queue is configured (REPLY_QUEUE_URL)".to_string()),
    };
    if let Err(reason) = published {
        tracing::error!(%message_id, %reason, "could not queue the message");
        // The client hears 503 either way; a failure here leaves the row pending for
        // the sweeper to answer or fail.
        let marked = match state.db().await {
            Ok(db) => {
                messages::fail_unqueued(&db, message_id, model::failure::QUEUE_UNAVAILABLE).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = marked {
            tracing::error!(%message_id, error = %e, "could not mark the unqueued message failed");
        }
        return Err(AppError::Unavailable {
            code: "queue_unavailable",
            message: "the message could not be queued for a reply; it was not sent, retry shortly"
                .into(),
        });
    }
    tracing::info!(%message_id, chatroom_id = %chatroom, "message queued");
    crate::telemetry::metrics::message_queued();
    // The sweeper then knows the job is the queue's. If this fails, the sweeper answers a
    // job that may be queued already, which the worker's claim makes harmless.
    let marked = match state.db().await {
        Ok(db) => messages::mark_enqueued(&db, message_id).await,
        Err(e) => Err(e),
    };
    if let Err(e) = marked {
        tracing::warn!(%message_id, error = %e, "could not record that the job is queued");
    }
    Ok(())
}

/// What clients see of a message.
pub fn message_view(m: &Message) -> Value {
    serde_json::to_value(m).expect("messages serialise")
}

/// A message and its reply; with `wait`, holds the request until the message reaches
/// a terminal status or the wait runs out.
pub async fn message_with_reply(
    state: &AppState,
    user: Uuid,
    chatroom: Uuid,
    id: Uuid,
    wait: Option<u64>,
) -> AppResult<(Message, Option<Message>)> {
    let wait = wait.unwrap_or(0);
    if wait > WAIT_MAX_SECS {
        return Err(AppError::validation(format!(
            "wait must be between 0 and {WAIT_MAX_SECS}"
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut interval = Duration::from_millis(100);
    loop {
        let (message, reply) = {
            let db = state.db().await?;
            // Pipelined, as in `messages_page`; the reply is only returned with its owned message.
            let (message, reply) = tokio::try_join!(
                messages::owned(&db, user, chatroom, id),
                messages::reply_to(&db, id),
            )?;
            let message = message
                .filter(|m| m.role == "user")
                .ok_or_else(|| AppError::NotFound("message not found".into()))?;
            (message, reply)
        };
        // The connection goes back to the pool before sleeping.
        if message.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok((message, reply));
        }
        tokio::time::sleep(interval.min(deadline - tokio::time::Instant::now())).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}
