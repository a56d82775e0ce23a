//! Extractors whose rejections are `AppError`s, so every failure uses the envelope.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use crate::auth::jwt::Claims;
use crate::auth::users::{self, User};
use crate::error::AppError;
use crate::state::AppState;

/// `Json<T>` with enveloped rejections: 400 malformed, 415 wrong type, 413 too big,
/// 422 well-formed but wrong shape.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => AppError::Validation(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => AppError::BadRequest(e.body_text()),
                JsonRejection::MissingJsonContentType(e) => {
                    AppError::UnsupportedMediaType(e.body_text())
                }
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    AppError::PayloadTooLarge
                }
                other => AppError::BadRequest(other.body_text()),
            }),
        }
    }
}

/// The caller, authenticated by `Authorization: Bearer <jwt>`; the token's version
/// must match the user's, so tokens issued before a password change are refused.
#[derive(Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // A route middleware (the daily cap) and its handler both ask for the caller:
        // look the user up once per request.
        if let Some(known) = parts.extensions.get::<AuthUser>() {
            return Ok(known.clone());
        }
        let claims = bearer_claims(parts, state).await?;
        let user = state.caller(claims.sub).await?;
        Self::admit(parts, claims, user)
    }
}

impl AuthUser {
    /// The caller and whether they own `chatroom`, in one query (the daily cap asks
    /// both on every send); later `AuthUser` extractions of the request reuse the user.
    pub async fn with_chatroom(
        parts: &mut Parts,
        state: &AppState,
        chatroom: uuid::Uuid,
    ) -> Result<(Self, bool), AppError> {
        let claims = bearer_claims(parts, state).await?;
        let db = state.db().await?;
        let (user, owns) = match users::by_id_owning(&db, claims.sub, chatroom).await? {
            Some((user, owns)) => (Some(user), owns),
            None => (None, false),
        };
        Ok((Self::admit(parts, claims, user)?, owns))
    }

    fn admit(parts: &mut Parts, claims: Claims, user: Option<User>) -> Result<Self, AppError> {
        let user = crate::auth::admit(&claims, user)?;
        parts.extensions.insert(Self(user.clone()));
        Ok(Self(user))
    }
}

/// The caller's verified token, their row not read yet: for a route that reads it in
/// the same round trip as its own queries and then checks it with [`crate::auth::admit`]
/// before anything it read is used.
pub struct Bearer(pub Claims);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Self(bearer_claims(parts, state).await?))
    }
}

/// The verified claims of the request's `Authorization: Bearer <jwt>`.
async fn bearer_claims(parts: &Parts, state: &AppState) -> Result<Claims, AppError> {
    let unauthorized = |m: &str| AppError::Unauthorized(m.to_string());
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing bearer token"))?
        .to_str()
        .map_err(|_| unauthorized("malformed authorization header"))?;
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(unauthorized("expected `Authorization: Bearer <token>`")),
    };
    state.tokens()?.verify(token).await
}

/// Like [`ApiJson`], but an empty body means `None` (for routes whose body is optional).
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge
                } else {
                    AppError::BadRequest(e.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let mut rebuilt = Request::new(axum::body::Body::from(bytes));
        *rebuilt.headers_mut() = headers;
        let ApiJson(value) = ApiJson::<T>::from_request(rebuilt, state).await?;
        Ok(Self(Some(value)))
    }
}

/// The client's IP address, for per-IP throttles: what a layer put in the request's
/// extensions (the Lambda entry point copies API Gateway's `requestContext.http.sourceIp`
/// there), else the peer address the local server saw. Never a header a client can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(known) = parts.extensions.get::<ClientIp>() {
            return Ok(known.clone());
        }
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Self(peer))
    }
}
