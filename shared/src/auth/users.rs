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
            created_at: u.created_at,
        }
    }
}

const COLUMNS: &str = "id, email, name, password_hash, token_version, tier, created_at";

fn from_row(row: &Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        password_hash: row.get("password_hash"),
        token_version: row.get("token_version"),
        tier: row.get("tier"),
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
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1");
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

/// Sets the password and bumps the token version, revoking every older token.
pub async fn set_password(
    db: &deadpool_postgres::Client,
    id: Uuid,
    password_hash: &str,
) -> AppResult<User> {
    let sql = format!(
        "UPDATE users SET password_hash = $2, token_version = token_version + 1, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = db
        .query_opt(&db.prepare_cached(&sql).await?, &[&id, &password_hash])
        .await?;
    row.as_ref()
        .map(from_row)
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}
