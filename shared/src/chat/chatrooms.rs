//! Chatrooms: the row type, its client view and the queries on it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::chat::settings::Change;
use crate::error::{AppError, AppResult};
use crate::store::batched;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Chatroom {
    pub id: Uuid,
    pub name: Option<String>,
    /// Instructions the model follows in this chatroom (its system instruction). Only in
    /// a single chatroom's views, absent when none are set: the list leaves them out (up
    /// to 4,000 characters each, a page of 100 could carry 400 kB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// The model replies come from; `null`: the service's default (`GET /models`).
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
}

pub const NAME_MAX: usize = 100;
/// `GET /chatroom` page size: `?limit=` 1 to [`LIST_LIMIT_MAX`], default [`LIST_DEFAULT`].
pub const LIST_DEFAULT: i64 = 100;
pub const LIST_LIMIT_MAX: i64 = 1000;
/// Chatrooms one user may hold; creating one more answers 409 `too_many_chatrooms`.
pub const PER_USER_MAX: i64 = 1000;

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

/// `last_activity_at` is not stored: it is the newest message's time (or the creation
/// time), one probe of `messages_by_chatroom` per chatroom, so sending a message writes
/// nothing to the chatroom row (no hot row, no bloat; see V6).
macro_rules! last_activity {
    () => {
        "GREATEST(c.created_at, (SELECT m.created_at FROM messages m \
         WHERE m.chatroom_id = c.id ORDER BY m.seq DESC LIMIT 1)) AS last_activity_at"
    };
}
/// What clients see.
const COLUMNS: &str = concat!(
    "c.id, c.name, c.instructions, c.model, c.created_at, c.updated_at, ",
    last_activity!()
);
/// [`COLUMNS`] for the list, which leaves the instructions out.
const LIST_COLUMNS: &str = concat!(
    "c.id, c.name, NULL::text AS instructions, c.model, c.created_at, c.updated_at, ",
    last_activity!()
);

fn from_row(row: &Row) -> Chatroom {
    Chatroom {
        id: row.get("id"),
        name: row.get("name"),
        instructions: row.get("instructions"),
        model: row.get("model"),
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

/// A new chatroom, unless `user` holds [`PER_USER_MAX`] already (409).
pub async fn create(db: &mut Db, user: Uuid, name: Option<&str>) -> AppResult<Chatroom> {
    let tx = db.transaction().await?;
    // The user's row lock orders concurrent creates, so the count below (a new snapshot,
    // taken after the lock) cannot be passed by a race.
    tx.execute(
        &tx.prepare_cached("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .await?,
        &[&user],
    )
    .await?;
    let held: i64 = tx
        .query_one(
            &tx.prepare_cached("SELECT count(*) FROM chatrooms WHERE user_id = $1")
                .await?,
            &[&user],
        )
        .await?
        .get(0);
    if held >= PER_USER_MAX {
        return Err(AppError::Conflict {
            code: "too_many_chatrooms",
            message: format!(
                "an account holds at most {PER_USER_MAX} chatrooms: delete one to open another"
            ),
        });
    }
    // A new chatroom has no messages: its latest activity is its creation.
    let sql = "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, $3) \
               RETURNING id, name, instructions, model, created_at, updated_at, \
               created_at AS last_activity_at";
    let room = from_row(
        &tx.query_one(
            &tx.prepare_cached(sql).await?,
            &[&Uuid::now_v7(), &user, &name],
        )
        .await?,
    );
    tx.commit().await?;
    Ok(room)
}

/// Where a page of the list starts: after this chatroom, in list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub last_activity_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ListCursor {
    pub fn after(room: &Chatroom) -> Self {
        Self {
            last_activity_at: room.last_activity_at,
            id: room.id,
        }
    }

    /// `<microseconds>_<id>`: opaque to clients, who pass `next_cursor` back as is.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.last_activity_at.timestamp_micros(), self.id)
    }

    pub fn parse(raw: &str) -> AppResult<Self> {
        let bad = || AppError::validation("cursor must be a next_cursor from GET /chatroom");
        let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
        Ok(Self {
            last_activity_at: DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
                .ok_or_else(bad)?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Newest activity first (ties: newest id first), `limit` after `after`; and whether
/// more follow.
pub async fn list(
    db: &Db,
    user: Uuid,
    after: Option<ListCursor>,
    limit: i64,
) -> AppResult<(Vec<Chatroom>, bool)> {
    let sql = format!(
        "SELECT * FROM (SELECT {LIST_COLUMNS} FROM chatrooms c WHERE c.user_id = $1) r \
         WHERE $2::timestamptz IS NULL OR (r.last_activity_at, r.id) < ($2, $3) \
         ORDER BY r.last_activity_at DESC, r.id DESC LIMIT $4"
    );
    let (at, id) = match after {
        Some(c) => (Some(c.last_activity_at), Some(c.id)),
        None => (None, None),
    };
    let mut rooms: Vec<Chatroom> = db
        .query(
            &db.prepare_cached(&sql).await?,
            &[&user, &at, &id, &(limit + 1)],
        )
        .await?
        .iter()
        .map(from_row)
        .collect();
    let more = rooms.len() as i64 > limit;
    rooms.truncate(limit as usize);
    Ok((rooms, more))
}

/// The chatroom if it exists *and* belongs to `user`; otherwise `None` (a 404 either way).
pub async fn owned(db: &Db, user: Uuid, id: Uuid) -> AppResult<Option<Chatroom>> {
    let sql = format!("SELECT {COLUMNS} FROM chatrooms c WHERE c.id = $1 AND c.user_id = $2");
    one(db, &sql, &[&id, &user]).await
}

/// [`owned`] for many `(chatroom, user)` pairs in one statement: one answer per pair, in
/// their order (see `page_reads`).
pub async fn owned_each(db: &Db, wanted: &[(Uuid, Uuid)]) -> AppResult<Vec<Option<Chatroom>>> {
    let sql = format!(
        "SELECT r.i, {COLUMNS} FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY \
         AS r(id, user_id, i) JOIN chatrooms c ON c.id = r.id AND c.user_id = r.user_id"
    );
    let (ids, users): (Vec<Uuid>, Vec<Uuid>) = wanted.iter().copied().unzip();
    let rows = db
        .query(&db.prepare_cached(&sql).await?, &[&ids, &users])
        .await?;
    let mut out = vec![None; wanted.len()];
    for row in &rows {
        out[batched::position(row)] = Some(from_row(row));
    }
    Ok(out)
}

/// Whether `user` owns chatroom `id`, without building the client view.
pub async fn is_owned(db: &Db, user: Uuid, id: Uuid) -> AppResult<bool> {
    let sql = "SELECT 1 FROM chatrooms WHERE id = $1 AND user_id = $2";
    Ok(db
        .query_opt(&db.prepare_cached(sql).await?, &[&id, &user])
        .await?
        .is_some())
}

/// What `PATCH /chatroom/{id}` changes; `Keep` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Update {
    pub name: Option<String>,
    pub instructions: Change<String>,
    pub model: Change<String>,
}

/// Applies `update` in one statement; `None` when `user` owns no such chatroom.
pub async fn update(db: &Db, user: Uuid, id: Uuid, update: &Update) -> AppResult<Option<Chatroom>> {
    let sql = format!(
        "WITH c AS (UPDATE chatrooms SET name = coalesce($3, name), \
                 instructions = CASE WHEN $4 THEN $5 ELSE instructions END, \
                 model = CASE WHEN $6 THEN $7 ELSE model END, updated_at = now() \
             WHERE id = $1 AND user_id = $2 RETURNING *) \
         SELECT {COLUMNS} FROM c"
    );
    let value = |c: &Change<String>| match c {
        Change::Set(v) => Some(v.clone()),
        _ => None,
    };
    one(
        db,
        &sql,
        &[
            &id,
            &user,
            &update.name,
            &!update.instructions.is_keep(),
            &value(&update.instructions),
            &!update.model.is_keep(),
            &value(&update.model),
        ],
    )
    .await
}

/// What a reply in this chatroom is asked with: its instructions, its chosen model and
/// its owner's tier (a Pro-only model lapses with Pro).
#[derive(Debug, Default)]
pub struct ReplySettings {
    pub instructions: Option<String>,
    pub model: Option<String>,
    pub tier: String,
}

pub async fn reply_settings(db: &Db, id: Uuid) -> AppResult<Option<ReplySettings>> {
    let sql = "SELECT c.instructions, c.model, u.tier FROM chatrooms c \
               JOIN users u ON u.id = c.user_id WHERE c.id = $1";
    Ok(db
        .query_opt(&db.prepare_cached(sql).await?, &[&id])
        .await?
        .map(|r| ReplySettings {
            instructions: r.get(0),
            model: r.get(1),
            tier: r.get(2),
        }))
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
