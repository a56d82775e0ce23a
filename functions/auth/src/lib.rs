//! Routes of the auth function: sign-up, one-time codes, passwords.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use shared::auth::{self, SignupInput};
use shared::http::{ApiJson, AuthUser};
use shared::jwt::IssuedToken;
use shared::otp::{self, Purpose};
use shared::users::UserView;
use shared::{AppResult, AppState};

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/auth/signup"),
    ("POST", "/auth/send-otp"),
    ("POST", "/auth/verify-otp"),
    ("POST", "/auth/login"),
    ("POST", "/auth/forgot-password"),
    ("POST", "/auth/reset-password"),
    ("POST", "/auth/change-password"),
];

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/send-otp", post(send_otp))
        .route("/auth/verify-otp", post(verify_otp))
        .route("/auth/login", post(login))
        .route("/auth/forgot-password", post(forgot_password))
        .route("/auth/reset-password", post(reset_password))
        .route("/auth/change-password", post(change_password))
        .with_state(state)
}

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize)]
struct VerifyBody {
    email: String,
    otp: String,
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct ResetBody {
    email: String,
    otp: String,
    new_password: String,
}

#[derive(Deserialize)]
struct ChangeBody {
    current_password: Option<String>,
    new_password: String,
}

async fn signup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignupInput>,
) -> AppResult<impl IntoResponse> {
    let user = auth::signup(&state, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": UserView::from(&user) })),
    ))
}

async fn issue_code(state: &AppState, email: &str, purpose: Purpose) -> AppResult<Json<Value>> {
    let outcome = auth::request_code(state, email, purpose).await?;
    let mut body = json!({
        "message": "If this address has an account, a code has been sent to it.",
        "expires_in": otp::TTL_SECS,
    });
    if let Some(code) = outcome.code {
        body["otp"] = Value::String(code);
    }
    Ok(Json(body))
}

async fn send_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<Value>> {
    issue_code(&state, &body.email, Purpose::Login).await
}

async fn forgot_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<Value>> {
    issue_code(&state, &body.email, Purpose::PasswordReset).await
}

async fn verify_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(
        auth::verify_code(&state, &body.email, &body.otp).await?,
    ))
}

async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(auth::login(&state, &body.email, body.password).await?))
}

async fn reset_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetBody>,
) -> AppResult<Json<Value>> {
    auth::reset_password(&state, &body.email, &body.otp, body.new_password).await?;
    Ok(Json(
        json!({ "message": "Password updated. Sign in again with the new password." }),
    ))
}

async fn change_password(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<ChangeBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(
        auth::change_password(&state, &user, body.current_password, body.new_password).await?,
    ))
}
