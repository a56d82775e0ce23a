//! CORS on the local server (`CORS_ALLOWED_ORIGINS`), answering browsers as the HttpApi's
//! CorsConfiguration does in AWS (scripts/check_template.py checks the two lists agree).

use api_tests::TestApp;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

const ORIGIN: &str = "https://app.example.com";

async fn app() -> (TestApp, axum::Router) {
    let app = TestApp::spawn().await;
    let router = local_server::with_cors(
        local_server::app(app.state.clone()),
        "https://app.example.com, http://localhost:5173",
    )
    .unwrap();
    (app, router)
}

fn preflight(origin: &str, method: &str, headers: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/chatroom/00000000-0000-0000-0000-000000000000/message")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .body(Body::empty())
        .unwrap()
}

fn header(r: &api_tests::TestResponse, name: header::HeaderName) -> &str {
    r.headers
        .get(&name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_answered() {
    let (_app, router) = app().await;
    let r = TestApp::send_to(
        router,
        preflight(ORIGIN, "POST", "authorization,content-type,idempotency-key"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, header::ACCESS_CONTROL_ALLOW_ORIGIN), ORIGIN);
    let methods = header(&r, header::ACCESS_CONTROL_ALLOW_METHODS);
    for m in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = header(&r, header::ACCESS_CONTROL_ALLOW_HEADERS);
    for h in [
        "authorization",
        "content-type",
        "idempotency-key",
        "last-event-id",
    ] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert_eq!(header(&r, header::ACCESS_CONTROL_MAX_AGE), "600");
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let (_app, router) = app().await;
    let r = TestApp::send_to(
        router,
        preflight("https://evil.example.net", "POST", "authorization"),
    )
    .await;
    assert!(
        r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn responses_expose_the_rate_limit_and_cache_headers() {
    let (_app, router) = app().await;
    let r = TestApp::send_to(
        router,
        Request::builder()
            .uri("/user/me")
            .header(header::ORIGIN, "http://localhost:5173")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    // The 401 still carries CORS headers, so the browser app can read the error.
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "http://localhost:5173"
    );
    let exposed = header(&r, header::ACCESS_CONTROL_EXPOSE_HEADERS);
    for h in [
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "retry-after",
        "x-cache",
        "idempotent-replayed",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[test]
fn no_origins_means_no_layer_and_bad_origins_are_refused() {
    let err = local_server::with_cors(axum::Router::new(), "https://*.example.com")
        .expect_err("a wildcard is refused");
    assert!(err.to_string().contains("CORS_ALLOWED_ORIGINS"), "{err}");
    assert!(local_server::with_cors(axum::Router::new(), "").is_ok());
}
