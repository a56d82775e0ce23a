//! The local server's assembly (all routers, one app, the web client) and the OpenAPI document.

use std::path::Path;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{OpenApi as _, ToSchema};

use shared::AppState;
use shared::http::error::ErrorEnvelope;

/// Every route group, as the Lambdas serve them, plus `GET /openapi.json`.
pub fn app(state: AppState) -> Router {
    let doc = openapi();
    let routes = Router::new()
        .merge(auth_fn::routes(state.clone()))
        .merge(user_fn::routes(state.clone()))
        .merge(chatroom_fn::routes(state.clone()))
        .merge(subscription_fn::routes(state.clone()))
        .merge(stripe_webhook_fn::routes(state.clone()))
        .merge(stream_fn::routes(state))
        .route("/openapi.json", get(move || async move { axum::Json(doc) }));
    shared::http::app(routes)
}

/// `app` answering browsers from `origins` (`CORS_ALLOWED_ORIGINS`, comma-separated) as
/// the HttpApi's CorsConfiguration does in AWS; an empty list adds no CORS headers.
pub fn with_cors(app: Router, origins: &str) -> anyhow::Result<Router> {
    let origins = shared::http::cors::parse_origins(origins)
        .map_err(|e| anyhow::anyhow!("configuration error: CORS_ALLOWED_ORIGINS: {e}"))?;
    Ok(if origins.is_empty() {
        app
    } else {
        app.layer(shared::http::cors::layer(origins))
    })
}

/// No inline script, nothing from elsewhere; images only from the page itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The API plus the web client's files (`web/`) for every path no route claims, so
/// `make dev` serves the whole product on one origin. Paths that are neither get the
/// API's JSON 404.
pub fn app_with_web(state: AppState, web_dir: &Path) -> Router {
    let api = app(state);
    let files = ServeDir::new(web_dir)
        .append_index_html_on_directories(true)
        .call_fallback_on_method_not_allowed(true)
        .fallback(api.clone());
    let files = tower::ServiceBuilder::new()
        // Revalidate on every load: an edited module must never be served stale in development.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        // The policy the CloudFront distribution sends (template.yaml), so the browser
        // tests prove the client runs under it.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .service(files);
    api.fallback_service(files)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "chatroom-lambda",
        description = "AI chatrooms: sign in with e-mailed codes, chat with Gemini, upgrade to Pro with Stripe.",
        version = "0.1.0"
    ),
    components(schemas(ErrorEnvelope))
)]
struct Base;

/// Errors any operation may answer, besides those it documents itself.
const COMMON_ERRORS: &[(&str, &str)] = &[
    ("400", "Malformed JSON, query or path (`bad_request`)"),
    (
        "401",
        "Not authenticated: missing, invalid, expired or revoked token, or wrong credentials or code",
    ),
    ("404", "No such resource or route (`not_found`)"),
    ("405", "Method not allowed (`method_not_allowed`)"),
    ("413", "Body over 64 KiB (`payload_too_large`)"),
    (
        "415",
        "Body is not `application/json` (`unsupported_media_type`)",
    ),
    (
        "422",
        "Well-formed input that breaks a rule (`validation_error`)",
    ),
    (
        "429",
        "Throttled (`too_many_requests`, `daily_limit_reached`), see `Retry-After`",
    ),
    (
        "500",
        "Unexpected failure (`internal_error`, `processing_failed`)",
    ),
    (
        "503",
        "A dependency is down (`database_unavailable`, `cache_unavailable`, `email_unavailable`, `quota_unavailable`, `queue_unavailable`, `billing_unavailable`)",
    ),
];

/// The whole API: every function's operations, the bearer scheme, the error envelope.
pub fn openapi() -> OpenApi {
    let mut doc = Base::openapi();
    for part in [
        auth_fn::Api::openapi(),
        user_fn::Api::openapi(),
        chatroom_fn::Api::openapi(),
        subscription_fn::Api::openapi(),
        stripe_webhook_fn::Api::openapi(),
        stream_fn::Api::openapi(),
    ] {
        doc.merge(part);
    }
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
    let envelope = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorEnvelope::name())))
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            for (code, description) in COMMON_ERRORS.iter().map(|(c, d)| (*c, d.to_string())) {
                let existing = op.responses.responses.remove(code);
                let description = match existing {
                    Some(utoipa::openapi::RefOr::T(r)) if !r.description.is_empty() => {
                        r.description
                    }
                    _ => description,
                };
                op.responses.responses.insert(
                    code.to_string(),
                    ResponseBuilder::new()
                        .description(description)
                        .content("application/json", envelope.clone())
                        .into(),
                );
            }
            // Documented per-operation errors (401, 409, ...) carry the envelope too.
            for (code, response) in op.responses.responses.iter_mut() {
                if (code.starts_with('4') || code.starts_with('5'))
                    && let utoipa::openapi::RefOr::T(r) = response
                {
                    r.content
                        .insert("application/json".into(), envelope.clone());
                }
            }
        }
    }
    doc
}
