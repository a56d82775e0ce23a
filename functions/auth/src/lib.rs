//! Routes of the auth function: sign-up, one-time codes, passwords, sign-out.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use shared::auth::jwt::IssuedToken;
use shared::auth::otp::{self, Purpose};
use shared::auth::users::UserView;
use shared::auth::{self, IpScope, SignupInput};
use shared::http::{ApiJson, AuthUser, ClientIp};
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
    ("POST", "/auth/logout"),
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
        .route("/auth/logout", post(logout))
        .layer(axum::middleware::map_request(source_ip_from_api_gateway))
        .with_state(state)
}

/// Under API Gateway the client address is `requestContext.http.sourceIp` (the TCP peer
/// is AWS's): hand it to [`ClientIp`]. Elsewhere the request has no such context.
async fn source_ip_from_api_gateway(mut request: Request) -> Request {
    let ip = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = ip {
        request.extensions_mut().insert(ClientIp(Some(ip)));
    }
    request
}

#[derive(OpenApi)]
#[openapi(paths(
    signup,
    send_otp,
    verify_otp,
    login,
    forgot_password,
    reset_password,
    change_password,
    logout
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
    /// On the first sign-in of an account created with a password: that password, to
    /// keep it. Without it (or with another) the signup password is discarded.
    password: Option<String>,
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
    /// Required when it has none (a first password): a code from `POST /auth/forgot-password`.
    otp: Option<String>,
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
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignupInput>,
) -> AppResult<(StatusCode, Json<SignedUp>)> {
    auth::throttle_ip(&state, IpScope::Signup, ip.as_deref()).await?;
    let user = auth::signup(&state, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignedUp {
            user: UserView::from(&user),
        }),
    ))
}

async fn issue_code(
    state: &AppState,
    ip: Option<&str>,
    email: &str,
    purpose: Purpose,
) -> AppResult<Json<CodeSent>> {
    auth::throttle_ip(state, IpScope::CodeRequest, ip).await?;
    let outcome = auth::request_code(state, email, purpose).await?;
    Ok(Json(CodeSent {
        message: "If this address has an account, a code has been sent to it.",
        expires_in: otp::TTL_SECS,
        otp: outcome.code,
    }))
}

/// E-mail a sign-in code (the answer is the same whether or not the address is registered).
#[utoipa::path(post, path = "/auth/send-otp", tag = "auth", request_body = EmailBody,
    responses((status = 200, body = CodeSent),
        (status = 429, description = "Too many code requests for this address or from this IP (`too_many_requests`): see `Retry-After`")))]
async fn send_otp(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<CodeSent>> {
    issue_code(&state, ip.as_deref(), &body.email, Purpose::Login).await
}

/// E-mail a password code (to reset a password, or to set a first one).
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = EmailBody,
    responses((status = 200, body = CodeSent),
        (status = 429, description = "Too many code requests for this address or from this IP (`too_many_requests`): see `Retry-After`")))]
async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<EmailBody>,
) -> AppResult<Json<CodeSent>> {
    issue_code(&state, ip.as_deref(), &body.email, Purpose::PasswordReset).await
}

/// Exchange a sign-in code for an access token. The first code used proves the address.
#[utoipa::path(post, path = "/auth/verify-otp", tag = "auth", request_body = VerifyBody,
    responses((status = 200, body = IssuedToken),
        (status = 401, description = "`invalid_otp`: the code is wrong, expired, used or burned, or none was issued (one answer for all, registered or not)"),
        (status = 429, description = "Too many wrong codes for this address from this source in 24 hours, or too many attempts from this IP (`too_many_requests`), even with the right code: see `Retry-After`. Other sources, the owner's included, are not affected")))]
async fn verify_otp(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<VerifyBody>,
) -> AppResult<Json<IssuedToken>> {
    auth::throttle_ip(&state, IpScope::SignIn, ip.as_deref()).await?;
    Ok(Json(
        auth::verify_code(&state, &body.email, &body.otp, body.password, ip.as_deref()).await?,
    ))
}

/// Sign in with a password.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = IssuedToken),
        (status = 403, description = "Right password, but the address was never confirmed by a code (`email_not_verified`): sign in with a code first")))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> AppResult<Json<IssuedToken>> {
    auth::throttle_ip(&state, IpScope::SignIn, ip.as_deref()).await?;
    Ok(Json(
        auth::login(&state, &body.email, body.password, ip.as_deref()).await?,
    ))
}

/// Set a new password with a reset code; every older token stops working.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetBody,
    responses((status = 200, body = Done),
        (status = 401, description = "`invalid_otp`: the code is wrong, expired, used or burned, or none was issued (one answer for all, registered or not)"),
        (status = 429, description = "Too many wrong codes for this address from this source in 24 hours, or too many attempts from this IP (`too_many_requests`), even with the right code: see `Retry-After`. Other sources, the owner's included, are not affected")))]
async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ResetBody>,
) -> AppResult<Json<Done>> {
    auth::throttle_ip(&state, IpScope::SignIn, ip.as_deref()).await?;
    auth::reset_password(
        &state,
        &body.email,
        &body.otp,
        body.new_password,
        ip.as_deref(),
    )
    .await?;
    Ok(Json(Done {
        message: "Password updated. Sign in again with the new password.",
    }))
}

/// Change the password (with `current_password`) or set a first one (with `otp`, a
/// code from forgot-password); returns a fresh token, older ones stop working.
#[utoipa::path(post, path = "/auth/change-password", tag = "auth", request_body = ChangeBody,
    security(("bearer" = [])), responses((status = 200, body = IssuedToken)))]
async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<ChangeBody>,
) -> AppResult<Json<IssuedToken>> {
    Ok(Json(
        auth::change_password(
            &state,
            &user,
            body.current_password,
            body.otp,
            body.new_password,
            ip.as_deref(),
        )
        .await?,
    ))
}

/// Sign out everywhere: every token issued before this call stops working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    security(("bearer" = [])), responses((status = 204, description = "Signed out")))]
async fn logout(State(state): State<AppState>, AuthUser(user): AuthUser) -> AppResult<StatusCode> {
    auth::logout(&state, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}
