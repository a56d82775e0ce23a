//! Cross-origin rules for browsers: the same lists as the HttpApi's `CorsConfiguration`
//! in template.yaml (API Gateway answers preflights in AWS; this layer does locally).

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Methods the routes use.
pub const ALLOW_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Request headers a browser app sends (`last-event-id` when it resumes a live reply).
pub const ALLOW_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
];

/// Response headers a browser app may read.
pub const EXPOSE_HEADERS: [&str; 6] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "x-cache",
    "idempotent-replayed",
];

/// How long a browser may cache a preflight answer (seconds).
pub const MAX_AGE_SECS: u64 = 600;

/// Parses a comma-separated origin list (`https://app.example.com,http://localhost:5173`).
/// Origins are exact (scheme, host, port; no path, no wildcard), as in the template.
pub fn parse_origins(list: &str) -> Result<Vec<HeaderValue>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let valid = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.trim_end_matches('/').contains(['*', ' '])
                && o.splitn(4, '/').nth(3).is_none_or(str::is_empty);
            if !valid {
                return Err(format!(
                    "`{o}` is not an origin (scheme://host[:port], no path, no wildcard)"
                ));
            }
            HeaderValue::from_str(o.trim_end_matches('/')).map_err(|e| format!("`{o}`: {e}"))
        })
        .collect()
}

/// The layer for `origins`; requests from any other origin get no CORS headers.
pub fn layer(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods(ALLOW_METHODS)
        .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(MAX_AGE_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact() {
        let ok = parse_origins(" https://app.example.com/, http://localhost:5173 ,").unwrap();
        assert_eq!(ok, ["https://app.example.com", "http://localhost:5173"]);
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "https://a.com/path",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad} accepted");
        }
    }
}
