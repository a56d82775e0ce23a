//! Routes of the user function: the profile and closing the account (the data export is
//! the stream function's: it streams).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use shared::auth::users::UserView;
use shared::http::{ApiJson, AuthUser, ClientIp};
use shared::{AppResult, AppState, account};

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[("GET", "/user/me"), ("DELETE", "/user/me")];

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/user/me", get(me).delete(delete_me))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(me, delete_me))]
pub struct Api;

/// The signed-in user.
#[utoipa::path(get, path = "/user/me", tag = "user", security(("bearer" = [])),
    responses((status = 200, body = UserView)))]
async fn me(AuthUser(user): AuthUser) -> Json<UserView> {
    Json(UserView::from(&user))
}

#[derive(Deserialize, ToSchema)]
struct DeleteBody {
    /// A sign-in code sent to the account's address (`POST /auth/send-otp`) for this.
    otp: String,
}

/// Close the account: confirmed by a fresh sign-in code. A live Pro subscription is
/// cancelled at once; chatrooms, messages, live streams and cached data are deleted and
/// every token is revoked. The address may sign up again, as a new account.
#[utoipa::path(delete, path = "/user/me", tag = "user", security(("bearer" = [])),
    request_body = DeleteBody,
    responses((status = 204, description = "Closed"),
        (status = 401, description = "`invalid_otp`: the code is wrong, used or expired"),
        (status = 503, description = "`billing_unavailable`: the subscription could not be cancelled; nothing was deleted")))]
async fn delete_me(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    // Wrong codes count against the address (and this source, where known): the caller
    // holds a token already, so the address's own throttle is what matters here.
    ClientIp(source): ClientIp,
    ApiJson(body): ApiJson<DeleteBody>,
) -> AppResult<StatusCode> {
    account::delete::delete_account(&state, &user, &body.otp, source.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
