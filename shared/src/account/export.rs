//! `GET /user/export`: one JSON document with everything the account holds, written as
//! the rows arrive (a row stream from PostgreSQL, a bounded channel to the response), so
//! memory stays flat however many messages there are. At most once per 10 minutes.
//!
//! Schema (docs/api.md): `{"format": "chatroom-lambda.export.v1", "exported_at",
//! "account": {id, email, name, tier, email_verified, has_password, created_at},
//! "subscriptions": [{id, status, current_period_end, cancel_at_period_end}],
//! "chatrooms": [{id, name, instructions, model, created_at, updated_at,
//! "messages": [{id, role, content, status, reply_to, finish_reason, failure_reason,
//! created_at, updated_at, edited_at}]}]}`, chatrooms oldest first, messages in order.

use futures_util::{Stream, TryStreamExt, pin_mut};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::users::{User, UserView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Seconds between two exports of one account.
pub const EVERY_SECS: u64 = 600;
/// Bytes gathered before a chunk is handed to the response.
const CHUNK: usize = 64 * 1024;

const ROWS: &str = "SELECT c.id, c.name, c.instructions, c.model, c.created_at, c.updated_at, \
         m.id AS m_id, m.role, m.content, m.status, m.reply_to, m.finish_reason, \
         m.failure_reason, m.created_at AS m_created, m.updated_at AS m_updated, m.edited_at \
     FROM chatrooms c LEFT JOIN messages m ON m.chatroom_id = c.id \
     WHERE c.user_id = $1 ORDER BY c.created_at, c.id, m.seq";

/// The `Content-Disposition` of an export: a download named for today.
pub fn content_disposition() -> String {
    format!(
        "attachment; filename=\"chatroom-export-{}.json\"",
        chrono::Utc::now().format("%Y-%m-%d")
    )
}

fn slot_key(state: &AppState, user: Uuid) -> String {
    state.redis.key(&["export", &user.to_string()])
}

/// Claims this account's export slot for [`EVERY_SECS`]: 429 `export_rate_limited` with
/// the seconds left when an export ran in the last 10 minutes.
pub async fn claim_slot(state: &AppState, user: Uuid) -> AppResult<()> {
    let key = slot_key(state, user);
    let mut conn = state.redis.conn();
    let claimed: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(EVERY_SECS)
        .query_async(&mut conn)
        .await?;
    if claimed.is_some() {
        return Ok(());
    }
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
    Err(AppError::RateLimited {
        code: "export_rate_limited",
        message: format!("one export per {} minutes; retry later", EVERY_SECS / 60),
        retry_after: ttl.max(1) as u64,
    })
}

/// Gives the slot back when the export could not start (its database was down).
async fn release_slot(state: &AppState, user: Uuid) {
    let key = slot_key(state, user);
    let released: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut state.redis.conn())
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not give an export slot back");
    }
}

/// The document, as chunks of JSON. Starts the query before answering, so a database
/// that is down is a 503 (and the slot is given back), not a truncated 200; an error
/// after that ends the stream with an error, which cuts the response short (never a
/// document that parses but lacks rows).
pub async fn document(
    state: &AppState,
    user: &User,
) -> AppResult<impl Stream<Item = Result<String, std::io::Error>> + use<>> {
    claim_slot(state, user.id).await?;
    let started = async {
        let db = state.db().await?;
        let subscriptions = db
            .query(
                "SELECT id, status, current_period_end, cancel_at_period_end FROM subscriptions \
                 WHERE user_id = $1 ORDER BY updated_at",
                &[&user.id],
            )
            .await?;
        Ok::<_, AppError>((db, subscriptions))
    }
    .await;
    let (db, subscriptions) = match started {
        Ok(started) => started,
        Err(e) => {
            release_slot(state, user.id).await;
            return Err(e);
        }
    };
    let subscriptions: Vec<Value> = subscriptions
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, String>(0),
                "status": r.get::<_, String>(1),
                "current_period_end": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(2),
                "cancel_at_period_end": r.get::<_, bool>(3),
            })
        })
        .collect();
    let head = json!({
        "format": "chatroom-lambda.export.v1",
        "exported_at": chrono::Utc::now(),
        "account": UserView::from(user),
        "subscriptions": subscriptions,
    });
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(4);
    let user_id = user.id;
    tokio::spawn(async move {
        if let Err(e) = write_rows(&db, user_id, head, &tx).await {
            tracing::error!(user_id = %user_id, error = %e, "export cut short");
            let _ = tx
                .send(Err(std::io::Error::other("export cut short")))
                .await;
        }
    });
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// Writes the document; stops quietly when the client has gone (the channel closed).
async fn write_rows(
    db: &deadpool_postgres::Client,
    user: Uuid,
    head: Value,
    tx: &mpsc::Sender<Result<String, std::io::Error>>,
) -> anyhow::Result<()> {
    let mut buf = serde_json::to_string(&head)?;
    buf.pop(); // the closing brace: the chatrooms follow
    buf.push_str(",\"chatrooms\":[");
    let rows = db.query_raw(ROWS, &[&user]).await?;
    pin_mut!(rows);
    let mut current: Option<Uuid> = None;
    let mut first_message = true;
    while let Some(row) = rows.try_next().await? {
        let room: Uuid = row.get("id");
        if current != Some(room) {
            if current.is_some() {
                buf.push_str("]},");
            }
            let mut room_json = serde_json::to_string(&json!({
                "id": room,
                "name": row.get::<_, Option<String>>("name"),
                "instructions": row.get::<_, Option<String>>("instructions"),
                "model": row.get::<_, Option<String>>("model"),
                "created_at": row.get::<_, chrono::DateTime<chrono::Utc>>("created_at"),
                "updated_at": row.get::<_, chrono::DateTime<chrono::Utc>>("updated_at"),
            }))?;
            room_json.pop();
            buf.push_str(&room_json);
            buf.push_str(",\"messages\":[");
            current = Some(room);
            first_message = true;
        }
        if let Some(id) = row.get::<_, Option<Uuid>>("m_id") {
            if !first_message {
                buf.push(',');
            }
            first_message = false;
            buf.push_str(&serde_json::to_string(&json!({
                    "id": id,
                    "role": row.get::<_, String>("role"),
                    "content": row.get::<_, String>("content"),
                    "status": row.get::<_, String>("status"),
                    "reply_to": row.get::<_, Option<Uuid>>("reply_to"),
                    "finish_reason": row.get::<_, Option<String>>("finish_reason"),
                    "failure_reason": row.get::<_, Option<String>>("failure_reason"),
                    "created_at": row.get::<_, chrono::DateTime<chrono::Utc>>("m_created"),
                    "updated_at": row.get::<_, chrono::DateTime<chrono::Utc>>("m_updated"),
                    "edited_at": row.get::<_, Option<chrono::DateTime<chrono::Utc>>>("edited_at"),
            }))?);
        }
        if buf.len() >= CHUNK && tx.send(Ok(std::mem::take(&mut buf))).await.is_err() {
            return Ok(());
        }
    }
    if current.is_some() {
        buf.push_str("]}");
    }
    buf.push_str("]}");
    let _ = tx.send(Ok(buf)).await;
    Ok(())
}
