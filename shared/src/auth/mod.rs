//! Sign-up and sign-in rules: e-mailed one-time codes, optional passwords, proven
//! ownership of an address, throttles, revocation.
//! Plain functions over the service state; no HTTP types here.

pub mod caller_reads;
pub mod delivery;
pub mod email;
pub mod jwt;
pub mod key_ring;
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

/// Which per-IP budget a request draws on (see `IpLimits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpScope {
    Signup,
    CodeRequest,
    SignIn,
}

/// Counts one request from `ip` against its hourly budget; 429 past it. Without a known
/// client address (a test calling the router directly) there is nothing to count.
pub async fn throttle_ip(state: &AppState, scope: IpScope, ip: Option<&str>) -> AppResult<()> {
    let Some(ip) = ip else { return Ok(()) };
    let l = &state.config.ip_limits;
    let (name, per_hour) = match scope {
        IpScope::Signup => ("ip-signup", l.signups_per_hour),
        IpScope::CodeRequest => ("ip-code", l.code_requests_per_hour),
        IpScope::SignIn => ("ip-signin", l.sign_in_attempts_per_hour),
    };
    if per_hour == 0 {
        return Ok(());
    }
    let limits = Limits {
        min_gap_secs: 0,
        per_window: per_hour,
        window_secs: 3600,
    };
    throttle::hit(&state.redis, name, ip, limits).await
}

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

/// With e-mail delivery, a code request answers no sooner than this after it arrived,
/// whether or not an e-mail was sent: a typical SES call takes well under it, so the
/// answer's timing does not tell registered addresses from unknown ones.
pub const SES_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(600);

/// Issues a code when the address belongs to a user. Throttling applies first and to
/// every address alike, so neither the answer, nor a 429, nor (with SES) its timing
/// reveals who is registered.
pub async fn request_code(
    state: &AppState,
    raw_email: &str,
    purpose: Purpose,
) -> AppResult<CodeRequest> {
    let floor = tokio::time::Instant::now() + SES_ANSWER_FLOOR;
    let outcome = issue_and_deliver(state, raw_email, purpose).await;
    if state.config.otp_delivery == OtpDelivery::Ses && outcome.is_ok() {
        tokio::time::sleep_until(floor).await;
    }
    outcome
}

async fn issue_and_deliver(
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
    let code = state.otp()?.issue(purpose, &email).await?;
    match state.config.otp_delivery {
        OtpDelivery::Ses => {
            let mailer = state.mailer.as_ref().ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("OTP_DELIVERY=ses without a mailer"))
            })?;
            let message = delivery::compose(purpose, &code, otp::TTL_SECS);
            if let Err(e) = mailer.send(&email, &message).await {
                // Answered like a sent code (after the same floor): a 503 here, and only
                // here, would tell that the address is registered. The error and the
                // metric tell the operator; the user, seeing no e-mail, asks again.
                tracing::error!(user_id = %user.id, purpose = purpose.as_str(), reason = %e.0,
                    "code e-mail not sent; the code is withdrawn and the request not counted");
                crate::telemetry::metrics::otp_email_failed();
                // Best effort: the e-mail error is what the caller needs to hear.
                if let Err(e) = state.otp()?.revoke(purpose, &email).await {
                    tracing::error!(error = %e, "could not withdraw an undelivered code");
                }
                if let Err(e) =
                    throttle::refund(&state.redis, purpose.as_str(), email.as_str()).await
                {
                    tracing::warn!(error = %e, "could not refund the send throttle");
                }
                return Ok(CodeRequest { code: None });
            }
            tracing::info!(user_id = %user.id, purpose = purpose.as_str(), "code e-mailed");
            crate::telemetry::metrics::otp_code_sent();
            Ok(CodeRequest { code: None })
        }
        OtpDelivery::Response => {
            tracing::info!(user_id = %user.id, purpose = purpose.as_str(), "code issued (returned in response: dev mode)");
            crate::telemetry::metrics::otp_code_sent();
            Ok(CodeRequest { code: Some(code) })
        }
        OtpDelivery::Log => {
            tracing::info!(user_id = %user.id, email = %email, purpose = purpose.as_str(), otp = %code, "code issued (OTP_DELIVERY=log)");
            crate::telemetry::metrics::otp_code_sent();
            Ok(CodeRequest { code: None })
        }
    }
}

/// Signs in with a code. The first code used for an address proves it: a password set
/// at signup survives only when `password` is that same password (whoever set it before
/// the owner showed up cannot keep a way in).
pub async fn verify_code(
    state: &AppState,
    raw_email: &str,
    code: &str,
    password_attempt: Option<String>,
    source: Option<&str>,
) -> AppResult<IssuedToken> {
    let email = Email::parse(raw_email).map_err(|_| AppError::InvalidOtp)?;
    state
        .otp()?
        .verify(Purpose::Login, &email, code, source)
        .await?;
    let db = state.db().await?;
    // The account may have vanished since the code was issued.
    let mut user = users::by_email(&db, &email)
        .await?
        .ok_or(AppError::InvalidOtp)?;
    if user.email_verified_at.is_none() {
        let keep = match (password_attempt, &user.password_hash) {
            (Some(attempt), Some(_)) => {
                password::verify(attempt, user.password_hash.clone()).await?
            }
            _ => false,
        };
        let had_password = user.password_hash.is_some();
        user = users::mark_verified(&db, user.id, keep).await?;
        tracing::info!(
            user_id = %user.id,
            password_kept = keep,
            password_dropped = had_password && !keep,
            "address proven by its first code"
        );
    }
    tracing::info!(user_id = %user.id, "signed in with a code");
    state.tokens()?.issue(user.id, user.token_version).await
}

/// Wrong passwords are budgeted per address and source (a stranger's guesses cannot lock
/// the owner out); a right one gives its attempt back, so only failures count.
pub async fn login(
    state: &AppState,
    raw_email: &str,
    password_attempt: String,
    source: Option<&str>,
) -> AppResult<IssuedToken> {
    let email = Email::parse(raw_email).map_err(|_| AppError::InvalidCredentials)?;
    let subject = format!("{}|{}", email.as_str(), source.unwrap_or("unknown"));
    throttle::hit(&state.redis, "password", &subject, LOGIN_LIMITS).await?;
    let db = state.db().await?;
    let user = users::by_email(&db, &email).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    if !password::verify(password_attempt, stored).await? {
        return Err(AppError::InvalidCredentials);
    }
    if let Err(e) = throttle::refund(&state.redis, "password", &subject).await {
        tracing::warn!(error = %e, "could not give a right password's attempt back");
    }
    let user = user.ok_or(AppError::InvalidCredentials)?;
    // Only someone who knows the password learns this, so it reveals nothing new.
    if user.email_verified_at.is_none() {
        return Err(AppError::EmailNotVerified);
    }
    tracing::info!(user_id = %user.id, "signed in with a password");
    state.tokens()?.issue(user.id, user.token_version).await
}

pub async fn reset_password(
    state: &AppState,
    raw_email: &str,
    code: &str,
    new_password: String,
    source: Option<&str>,
) -> AppResult<()> {
    let email = Email::parse(raw_email)?;
    // Validate first: a rejected password must not consume the code.
    password::validate(&new_password)?;
    state
        .otp()?
        .verify(Purpose::PasswordReset, &email, code, source)
        .await?;
    let hash = password::hash(new_password).await?;
    let db = state.db().await?;
    let user = users::by_email(&db, &email)
        .await?
        .ok_or(AppError::InvalidOtp)?;
    users::set_password(&db, user.id, &hash, true).await?;
    tracing::info!(user_id = %user.id, "password reset; older tokens revoked");
    Ok(())
}

/// Changes the password (with `current`), or sets a first one on a code-only account
/// (with a fresh code from forgot-password, `code`: a stolen token alone must not
/// become lasting access).
pub async fn change_password(
    state: &AppState,
    user: &User,
    current: Option<String>,
    code: Option<String>,
    new_password: String,
    source: Option<&str>,
) -> AppResult<IssuedToken> {
    password::validate(&new_password)?;
    let first = user.password_hash.is_none();
    if first {
        let code = code.ok_or_else(|| {
            AppError::validation(
                "otp is required to set a first password: request one with POST /auth/forgot-password",
            )
        })?;
        let email = Email::parse(&user.email)?;
        state
            .otp()?
            .verify(Purpose::PasswordReset, &email, &code, source)
            .await?;
    } else {
        let current = current.ok_or_else(|| {
            AppError::validation("current_password is required when a password is set")
        })?;
        // Its own budget, per account: wrong current passwords from a stolen token
        // must not use up the owner's sign-in budget (nor the other way round).
        let subject = user.id.to_string();
        throttle::hit(&state.redis, "password-change", &subject, LOGIN_LIMITS).await?;
        if !password::verify(current, user.password_hash.clone()).await? {
            return Err(AppError::InvalidCredentials);
        }
        let subject = user.id.to_string();
        if let Err(e) = throttle::refund(&state.redis, "password-change", &subject).await {
            tracing::warn!(error = %e, "could not give a right password's attempt back");
        }
    }
    let hash = password::hash(new_password).await?;
    let db = state.db().await?;
    let updated = users::set_password(&db, user.id, &hash, first).await?;
    tracing::info!(user_id = %user.id, "password changed; older tokens revoked");
    state
        .tokens()?
        .issue(updated.id, updated.token_version)
        .await
}

/// Signs out everywhere: every token issued so far stops working.
pub async fn logout(state: &AppState, user: &User) -> AppResult<()> {
    let db = state.db().await?;
    users::revoke_tokens(&db, user.id).await?;
    tracing::info!(user_id = %user.id, "signed out; every older token revoked");
    Ok(())
}

pub async fn me(state: &AppState, id: Uuid) -> AppResult<User> {
    let db = state.db().await?;
    users::by_id(&db, id)
        .await?
        .ok_or_else(|| AppError::NotFound("user not found".into()))
}

/// The user a verified token speaks for: their row must exist and carry the token's
/// version (a password change or a closed account bumps it, refusing older tokens).
pub fn admit(claims: &jwt::Claims, user: Option<User>) -> AppResult<User> {
    let user = user.ok_or_else(|| AppError::Unauthorized("invalid or expired token".into()))?;
    if user.token_version != claims.ver {
        return Err(AppError::Unauthorized("token has been revoked".into()));
    }
    Ok(user)
}
