//! The local server serves the web client at `/` beside the API, without shadowing it.

use std::path::Path;

use api_tests::TestApp;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(app: &axum::Router, method: Method, uri: &str) -> (StatusCode, String, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8_lossy(&body).into())
}

#[tokio::test]
async fn web_client_is_served_at_root_and_the_api_still_answers() {
    let test = TestApp::spawn().await;
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    let app = local_server::app_with_web(test.state.clone(), &web);

    let (status, content_type, body) = get(&app, Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains(r#"data-testid="email-input""#));

    let request = Request::builder().uri("/").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_SECURITY_POLICY],
        local_server::CONTENT_SECURITY_POLICY
    );

    let (status, content_type, _) = get(&app, Method::GET, "/js/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.contains("javascript"), "{content_type}");

    // Local config: the API is on the page's own origin.
    let (status, _, body) = get(&app, Method::GET, "/config.json").await;
    assert_eq!(status, StatusCode::OK);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["api_url"], "");

    // API routes win over files, and keep their JSON errors.
    let (status, _, body) = get(&app, Method::GET, "/chatroom").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#""code":"unauthorized""#), "{body}");

    // Neither a file nor a route: the API's JSON 404, also for other methods.
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let (status, content_type, body) = get(&app, method.clone(), "/no-such-page").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert!(content_type.starts_with("application/json"), "{method}");
        assert!(body.contains(r#""code":"not_found""#), "{method}: {body}");
    }
    // No way out of the folder.
    let (status, _, _) = get(&app, Method::GET, "/../Cargo.toml").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&app, Method::GET, "/%2e%2e/Cargo.toml").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
