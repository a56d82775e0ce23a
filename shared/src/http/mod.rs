//! The HTTP edge shared by every function: error mapping, extractors, common layers.

pub mod cors;
pub mod error;
pub mod extract;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::ensure_error_envelope;
pub use extract::{ApiJson, AuthUser, Bearer, ClientIp, OptionalJson};

/// Largest request body accepted by any route.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Wraps route groups into a servable app: JSON 404/405 for unknown routes and
/// methods, a body limit, and request tracing (no headers, so no tokens, in logs).
pub fn app(routes: Router) -> Router {
    routes
        .fallback(|| async { crate::error::AppError::NotFound("no such route".into()) })
        .layer(axum::middleware::map_response(ensure_error_envelope))
        // One HTTP request is one Lambda invocation: its metrics go out with it.
        .layer(axum::middleware::map_response(
            |r: axum::response::Response| async {
                crate::telemetry::metrics::flush();
                r
            },
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // The span (method, path) frames every line a request logs; a line of its own per
        // request is DEBUG (`RUST_LOG=info,tower_http=debug`): at INFO it cost a third of
        // `GET /user/me`'s throughput (docs/performance.md#logging), and API Gateway's access
        // log already has one line per request. Server errors are still logged (ERROR).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
}
