//! Routes of the user function.

use axum::Json;
use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use shared::AppState;
use shared::auth::users::UserView;
use shared::http::AuthUser;

/// Every (method, path) this function serves; the SAM template and `cargo lambda watch`
/// must route exactly these here (checked by the route tests).
pub const ROUTES: &[(&str, &str)] = &[("GET", "/user/me")];

pub fn routes(state: AppState) -> Router {
    Router::new().route("/user/me", get(me)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(paths(me))]
pub struct Api;

/// The signed-in user.
#[utoipa::path(get, path = "/user/me", tag = "user", security(("bearer" = [])),
    responses((status = 200, body = UserView)))]
async fn me(AuthUser(user): AuthUser) -> Json<UserView> {
    Json(UserView::from(&user))
}
