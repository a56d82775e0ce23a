//! Users: the row type and the queries on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::auth::email::Email;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: Option<String>,
    pub token_version: i32,
    pub tier: String,
    /// When a code sent to the address was first used: until then, the address's owner
    /// has not shown up and a password chosen at signup does not sign anyone in.
    pub email_verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What clients see of a user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub tier: String,
    pub has_password: bool,
    /// Whether the address has been proven by a code sent to it.
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            tier: u.tier.clone(),
            has_password: u.password_hash.is_some(),
            email_verified: u.email_verified_at.is_some(),
            created_at: u.created_at,
        }
    }
}

const COLUMNS: &str =
    "id, email, name, password_hash, token_version, tier, email_verified_at, created_at";

fn from_row(row: &Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        password_hash: row.get("password_hash"),
        token_version: row.get("token_version"),
        tier: row.get("tier"),
        email_verified_at: row.get("email_verified_at"),
        created_at: row.get("created_at"),
    }
}

pub async fn insert(
    db: &deadpool_postgres::Client,
    email: &Email,
    name: Option<&str>,
    password_hash: Option<&str>,
) -> AppResult<User> {
    let sql = format!(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO NOTHING RETURNING {COLUMNS}"
    );
    let row = db
        .query_opt(
            &db.prepare_cached(&sql).await?,
            &[&Uuid::now_v7(), &email.as_str(), &name, &password_hash],
        )
        .await?;
    row.as_ref().map(from_row).ok_or(AppError::EmailTaken)
}

pub async fn by_email(db: &deadpool_postgres::Client, email: &Email) -> AppResult<Option<User>> {
    // A closed account (DELETE /user/me) is never signed into, even before it is gone.
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1 AND deleted_at IS NULL");
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&email.as_str()])
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn by_id(db: &deadpool_postgres::Client, id: Uuid) -> AppResult<Option<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id])
        .await?
        .as_ref()
        .map(from_row))
}

/// The rows of `ids` that exist, in no particular order (see `caller_reads`).
pub async fn by_ids(db: &deadpool_postgres::Client, ids: &[Uuid]) -> AppResult<Vec<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ANY($1)");
    Ok(db
        .query(&db.prepare_cached(&sql).await?, &[&ids])
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// The user, and whether they own `chatroom`, in one statement: the daily cap's
/// authentication and ownership check, one round trip instead of two on every send.
pub async fn by_id_owning(
    db: &deadpool_postgres::Client,
    id: Uuid,
    chatroom: Uuid,
) -> AppResult<Option<(User, bool)>> {
    let sql = format!(
        "SELECT {COLUMNS}, EXISTS (SELECT 1 FROM chatrooms c WHERE c.id = $2 AND c.user_id = $1) \
         AS owns FROM users WHERE id = $1"
    );
    Ok(db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id, &chatroom])
        .await?
        .map(|row| (from_row(&row), row.get("owns"))))
}

/// Sets the password and bumps the token version, revoking every older token.
/// `proven`: the caller just used a code sent to the address, which proves it.
pub async fn set_password(
    db: &deadpool_postgres::Client,
    id: Uuid,
    password_hash: &str,
    proven: bool,
) -> AppResult<User> {
    let sql = format!(
        "UPDATE users SET password_hash = $2, token_version = token_version + 1, \
         email_verified_at = CASE WHEN $3 THEN coalesce(email_verified_at, now()) \
         ELSE email_verified_at END, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = db
        .query_opt(
            &db.prepare_cached(&sql).await?,
            &[&id, &password_hash, &proven],
        )
        .await?;
    row.as_ref()
        .map(from_row)
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}

/// Records that the owner proved the address. A password set before that is kept only
/// when `keep_password` (the owner presented it); otherwise it is dropped and the token
/// version bumps. Proving an already proven address changes nothing.
pub async fn mark_verified(
    db: &deadpool_postgres::Client,
    id: Uuid,
    keep_password: bool,
) -> AppResult<User> {
    let sql = format!(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), \
         token_version = token_version + CASE WHEN email_verified_at IS NULL \
           AND password_hash IS NOT NULL AND NOT $2 THEN 1 ELSE 0 END, \
         password_hash = CASE WHEN email_verified_at IS NULL AND NOT $2 THEN NULL \
           ELSE password_hash END, \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id, &keep_password])
        .await?;
    row.as_ref()
        .map(from_row)
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}

/// Bumps the token version: every token issued so far stops working (sign-out).
pub async fn revoke_tokens(db: &deadpool_postgres::Client, id: Uuid) -> AppResult<User> {
    let sql = format!(
        "UPDATE users SET token_version = token_version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id])
        .await?;
    row.as_ref()
        .map(from_row)
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}
