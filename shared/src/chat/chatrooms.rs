//! Chatrooms: the row type, its client view and the queries on it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Chatroom {
    pub id: Uuid,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

pub const NAME_MAX: usize = 100;
/// `GET /chatroom` returns at most this many, newest activity first.
pub const LIST_MAX: i64 = 1000;

/// Trimmed, 1–100 characters.
pub fn parse_name(raw: &str) -> AppResult<String> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX || name.contains('\0') {
        return Err(AppError::validation(format!(
            "name must be 1 to {NAME_MAX} characters after trimming"
        )));
    }
    Ok(name.to_string())
}

/// What clients see. `last_activity_at` is not stored: it is the newest message's time (or
/// the creation time), one probe of `messages_by_chatroom` per chatroom, so sending a
/// message writes nothing to the chatroom row (no hot row, no bloat; see V6).
const COLUMNS: &str = "c.id, c.name, c.created_at, c.updated_at, \
     GREATEST(c.created_at, (SELECT m.created_at FROM messages m \
         WHERE m.chatroom_id = c.id ORDER BY m.seq DESC LIMIT 1)) AS last_activity_at";

fn from_row(row: &Row) -> Chatroom {
    Chatroom {
        id: row.get("id"),
        name: row.get("name"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        last_activity_at: row.get("last_activity_at"),
    }
}

type Db = deadpool_postgres::Client;

async fn one(db: &Db, sql: &str, params: &[&(dyn ToSql + Sync)]) -> AppResult<Option<Chatroom>> {
    Ok(db
        .query_opt(&db.prepare_cached(sql).await?, params)
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn create(db: &Db, user: Uuid, name: Option<&str>) -> AppResult<Chatroom> {
    // A new chatroom has no messages: its latest activity is its creation.
    let sql = "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, $3) \
               RETURNING id, name, created_at, updated_at, created_at AS last_activity_at";
    Ok(from_row(
        &db.query_one(
            &db.prepare_cached(sql).await?,
            &[&Uuid::now_v7(), &user, &name],
        )
        .await?,
    ))
}

/// Newest activity first (ties: newest id first), at most [`LIST_MAX`].
pub async fn list(db: &Db, user: Uuid) -> AppResult<Vec<Chatroom>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM chatrooms c WHERE c.user_id = $1 \
         ORDER BY last_activity_at DESC, id DESC LIMIT {LIST_MAX}"
    );
    Ok(db
        .query(&db.prepare_cached(&sql).await?, &[&user])
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// The chatroom if it exists *and* belongs to `user`; otherwise `None` (a 404 either way).
pub async fn owned(db: &Db, user: Uuid, id: Uuid) -> AppResult<Option<Chatroom>> {
    let sql = format!("SELECT {COLUMNS} FROM chatrooms c WHERE c.id = $1 AND c.user_id = $2");
    one(db, &sql, &[&id, &user]).await
}

/// Whether `user` owns chatroom `id`, without building the client view.
pub async fn is_owned(db: &Db, user: Uuid, id: Uuid) -> AppResult<bool> {
    let sql = "SELECT 1 FROM chatrooms WHERE id = $1 AND user_id = $2";
    Ok(db
        .query_opt(&db.prepare_cached(sql).await?, &[&id, &user])
        .await?
        .is_some())
}

pub async fn rename(db: &Db, user: Uuid, id: Uuid, name: &str) -> AppResult<Option<Chatroom>> {
    let sql = format!(
        "WITH c AS (UPDATE chatrooms SET name = $3, updated_at = now() \
             WHERE id = $1 AND user_id = $2 RETURNING *) \
         SELECT {COLUMNS} FROM c"
    );
    one(db, &sql, &[&id, &user, &name]).await
}

pub async fn delete(db: &Db, user: Uuid, id: Uuid) -> AppResult<bool> {
    let sql = "DELETE FROM chatrooms WHERE id = $1 AND user_id = $2";
    let n = db
        .execute(&db.prepare_cached(sql).await?, &[&id, &user])
        .await?;
    Ok(n == 1)
}

/// Sets a generated title unless the chatroom got a name meanwhile. Returns the owner.
pub async fn set_title_if_unnamed(db: &Db, id: Uuid, title: &str) -> AppResult<Option<Uuid>> {
    let sql = "UPDATE chatrooms SET name = $2, updated_at = now() \
               WHERE id = $1 AND name IS NULL RETURNING user_id";
    let row = db
        .query_opt(&db.prepare_cached(sql).await?, &[&id, &title])
        .await?;
    Ok(row.map(|r| r.get(0)))
}
