//! Routes of the auth function: sign-up, one-time codes, passwords.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use shared::auth::jwt::IssuedToken;
use shared::auth::otp::{self, Purpose};
use shared::auth::users::UserView;
use shared::auth::{self, SignupInput};
use shared::http::{ApiJson, AuthUser};
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

#[derive(OpenApi)]
#[openapi(paths(
    signup,
    send_otp,
    verify_otp,
    login,
    forgot_password,
    reset_password,
    change_password
))]
pub struct Api;

#[derive(Deserialize, ToSchema)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize, ToSchema)]
struct VerifyBody {
    email: String,
    otp: String,
}

#[derive(Deserialize, ToSchema)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Deserialize, ToSchema)]
struct ResetBody {
    email: String,
    otp: String,
    new_password: String,
}

#[derive(Deserialize, ToSchema)]
struct ChangeBody {
    /// Required when the account has a password.
    current_password: Option<String>,
    new_password: String,
}

#[derive(Serialize, ToSchema)]
struct SignedUp {
    user: UserView,
}

#[derive(Serialize, ToSchema)]
struct CodeSent {
    message: &'static str,
    expires_in: u64,
    /// Only with `OTP_DELIVERY=response` (local use), and only when a code was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    otp: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Done {
    message: &'static str,
}

/// Create an account (a password is optional: codes work without one).
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = SignupInput,
    responses((status = 201, body = SignedUp), (status = 409, description = "email_taken")))]
async fn signup(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SignupInput>,
) -> AppResult<(StatusCode, Json<SignedUp>)> {
    let user = auth::signup(&state, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignedUp {
            user: UserView::from(&user),
        }),
    ))
}

async fn issue_code(state: &AppState, email: &str, purpose: Purpose) -> AppResult<Json<CodeSent>> {
    let outcome = auth::request_code(state, email, purpose).await?;
    Ok(Json(CodeSent {
        message: "If this address has an account, a code has been sent to it.",
        expires_in: otp::TTL_SECS,
        otp: outcome.code,
    }))
}

/// E-mail a sign-in code (the answer is the same whether or not the address is registered).
#[utoipa::path(post, path = "/auth/send-otp", tag = "auth", request_body = EmailBody,
    responses((status = 200, body = CodeSent)))]
async fn send_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<CodeSent>> {
    issue_code(&state, &body.email, Purpose::Login).await
}

/// E-mail a password-reset code.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = EmailBody,
    responses((status = 200, body = CodeSent)))]
async fn forgot_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<CodeSent>> {
    issue_code(&state, &body.email, Purpose::PasswordReset).await
}

/// Exchange a sign-in code for an access token.
#[utoipa::path(post, path = "/auth/verify-otp", tag = "auth", request_body = VerifyBody,
    responses((status = 200, body = IssuedToken)))]
async fn verify_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VerifyBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(
        auth::verify_code(&state, &body.email, &body.otp).await?,
    ))
}

/// Sign in with a password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = IssuedToken)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(auth::login(&state, &body.email, body.password).await?))
}

/// Set a new password with a reset code; every older token stops working.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetBody,
    responses((status = 200, body = Done)))]
async fn reset_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetBody>,
) -> AppResult<Json<Done>> {
    auth::reset_password(&state, &body.email, &body.otp, body.new_password).await?;
    Ok(Json(Done {
        message: "Password updated. Sign in again with the new password.",
    }))
}

/// Change (or set) the password; returns a fresh token, older ones stop working.
#[utoipa::path(post, path = "/auth/change-password", tag = "auth", request_body = ChangeBody,
    security(("bearer" = [])), responses((status = 200, body = IssuedToken)))]
async fn change_password(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<ChangeBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(
        auth::change_password(&state, &user, body.current_password, body.new_password).await?,
    ))
}
