//! Sign-up and sign-in rules: e-mailed one-time codes, optional passwords, revocation.
//! Plain functions over the service state; no HTTP types here.

pub mod email;
pub mod jwt;
pub mod otp;
pub mod password;
pub mod throttle;
pub mod users;

use serde::Deserialize;
use uuid::Uuid;

use crate::config::OtpDelivery;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use email::Email;
use jwt::IssuedToken;
use otp::Purpose;
use throttle::Limits;
use users::User;

/// Wrong passwords an address may try per 15 minutes.
const LOGIN_LIMITS: Limits = Limits {
    min_gap_secs: 0,
    per_window: 20,
    window_secs: 900,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignupInput {
    pub email: String,
    pub password: Option<String>,
    pub name: Option<String>,
}

pub const NAME_MAX: usize = 100;

fn parse_name(name: Option<String>) -> AppResult<Option<String>> {
    match name.map(|n| n.trim().to_string()) {
        None => Ok(None),
        Some(n) if n.is_empty() || n.chars().count() > NAME_MAX || n.contains('\0') => Err(
            AppError::validation(format!("name must be 1 to {NAME_MAX} characters")),
        ),
        Some(n) => Ok(Some(n)),
    }
}

pub async fn signup(state: &AppState, input: SignupInput) -> AppResult<User> {
    let email = Email::parse(&input.email)?;
    let name = parse_name(input.name)?;
    let hash = match input.password {
        Some(p) => {
            password::validate(&p)?;
            Some(password::hash(p).await?)
        }
        None => None,
    };
    let db = state.db().await?;
    let user = users::insert(&db, &email, name.as_deref(), hash.as_deref()).await?;
    tracing::info!(user_id = %user.id, "user signed up");
    Ok(user)
}

/// The outcome of a code request. `code` is `Some` only in `response` delivery mode
/// and only when a code was really issued.
pub struct CodeRequest {
    pub code: Option<String>,
}

/// Issues a code when the address belongs to a user. Throttling applies first and to
/// every address alike, so neither the answer nor a 429 reveals who is registered.
pub async fn request_code(
    state: &AppState,
    raw_email: &str,
    purpose: Purpose,
) -> AppResult<CodeRequest> {
    let email = Email::parse(raw_email)?;
    let limits = Limits {
        min_gap_secs: state.config.otp_min_interval_secs,
        per_window: state.config.otp_max_per_hour,
        window_secs: 3600,
    };
    throttle::hit(&state.redis, purpose.as_str(), email.as_str(), limits).await?;
    let db = state.db().await?;
    let Some(user) = users::by_email(&db, &email).await? else {
        tracing::info!(
            purpose = purpose.as_str(),
            "code requested for an unknown address; none issued"
        );
        return Ok(CodeRequest { code: None });
    };
    let code = state.otp.issue(purpose, &email).await?;
    crate::telemetry::metrics::otp_code_sent();
    match state.config.otp_delivery {
        OtpDelivery::Response => {
            tracing::info!(user_id = %user.id, purpose = purpose.as_str(), "code issued (returned in response: dev mode)");
            Ok(CodeRequest { code: Some(code) })
        }
        OtpDelivery::Log => {
            tracing::info!(user_id = %user.id, email = %email, purpose = purpose.as_str(), otp = %code, "code issued (OTP_DELIVERY=log)");
            Ok(CodeRequest { code: None })
        }
    }
}

pub async fn verify_code(state: &AppState, raw_email: &str, code: &str) -> AppResult<IssuedToken> {
    let email = Email::parse(raw_email)?;
    state.otp.verify(Purpose::Login, &email, code).await?;
    let db = state.db().await?;
    // The account may have vanished since the code was issued.
    let user = users::by_email(&db, &email)
        .await?
        .ok_or(AppError::InvalidOtp)?;
    tracing::info!(user_id = %user.id, "signed in with a code");
    state.jwt.issue(user.id, user.token_version)
}

pub async fn login(
    state: &AppState,
    raw_email: &str,
    password_attempt: String,
) -> AppResult<IssuedToken> {
    let email = Email::parse(raw_email).map_err(|_| AppError::InvalidCredentials)?;
    throttle::hit(&state.redis, "password", email.as_str(), LOGIN_LIMITS).await?;
    let db = state.db().await?;
    let user = users::by_email(&db, &email).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    if !password::verify(password_attempt, stored).await? {
        return Err(AppError::InvalidCredentials);
    }
    let user = user.ok_or(AppError::InvalidCredentials)?;
    tracing::info!(user_id = %user.id, "signed in with a password");
    state.jwt.issue(user.id, user.token_version)
}

pub async fn reset_password(
    state: &AppState,
    raw_email: &str,
    code: &str,
    new_password: String,
) -> AppResult<()> {
    let email = Email::parse(raw_email)?;
    // Validate first: a rejected password must not consume the code.
    password::validate(&new_password)?;
    state
        .otp
        .verify(Purpose::PasswordReset, &email, code)
        .await?;
    let hash = password::hash(new_password).await?;
    let db = state.db().await?;
    let user = users::by_email(&db, &email)
        .await?
        .ok_or(AppError::InvalidOtp)?;
    users::set_password(&db, user.id, &hash).await?;
    tracing::info!(user_id = %user.id, "password reset; older tokens revoked");
    Ok(())
}

pub async fn change_password(
    state: &AppState,
    user: &User,
    current: Option<String>,
    new_password: String,
) -> AppResult<IssuedToken> {
    password::validate(&new_password)?;
    if user.password_hash.is_some() {
        let current = current.ok_or_else(|| {
            AppError::validation("current_password is required when a password is set")
        })?;
        throttle::hit(&state.redis, "password", &user.email, LOGIN_LIMITS).await?;
        if !password::verify(current, user.password_hash.clone()).await? {
            return Err(AppError::InvalidCredentials);
        }
    }
    let hash = password::hash(new_password).await?;
    let db = state.db().await?;
    let updated = users::set_password(&db, user.id, &hash).await?;
    tracing::info!(user_id = %user.id, "password changed; older tokens revoked");
    state.jwt.issue(updated.id, updated.token_version)
}

pub async fn me(state: &AppState, id: Uuid) -> AppResult<User> {
    let db = state.db().await?;
    users::by_id(&db, id)
        .await?
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}
