//! Dependencies that are down turn into clear 503s, never 500s or hangs.

use api_tests::{TestApp, test_config, unique_email};
use axum::http::StatusCode;
use serde_json::json;
use shared::config::Secret;

#[tokio::test]
async fn database_down_is_503_database_unavailable() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("dbdown")).await;
    // Same app, but pointed at a port where nothing listens.
    let mut config = test_config(&app.database_url);
    config.database_url = Secret::new("postgres://postgres@127.0.0.1:1/nothing");
    let broken = api_tests::TestApp::from_config(config).await;
    let r = broken.get("/user/me", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "database_unavailable");
    assert!(r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn redis_down_is_503_for_codes() {
    let app = TestApp::spawn().await;
    let email = unique_email("redisdown");
    app.signup(&email, None).await;
    let mut config = test_config(&app.database_url);
    config.redis_url = Secret::new("redis://127.0.0.1:1/");
    let broken = api_tests::TestApp::from_config(config).await;
    let r = broken
        .post("/auth/send-otp", json!({ "email": email }))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "cache_unavailable");
}
