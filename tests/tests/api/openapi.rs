//! The checked-in OpenAPI document is the one the code generates, and the local server serves it.

use api_tests::TestApp;
use axum::http::{Method, StatusCode};
use serde_json::Value;

#[test]
fn checked_in_document_is_current() {
    let generated = serde_json::to_value(local_server::openapi()).unwrap();
    let path = format!("{}/../docs/openapi.json", env!("CARGO_MANIFEST_DIR"));
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        generated == checked_in,
        "docs/openapi.json is stale: run `cargo run -q -p local-server --bin openapi > docs/openapi.json`"
    );
}

#[test]
fn every_route_is_documented() {
    let doc = serde_json::to_value(local_server::openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        auth_fn::ROUTES,
        user_fn::ROUTES,
        chatroom_fn::ROUTES,
        subscription_fn::ROUTES,
        stripe_webhook_fn::ROUTES,
        stream_fn::ROUTES,
    ];
    let mut count = 0;
    for (method, path) in routes.iter().flat_map(|r| r.iter()) {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        for code in ["400", "422", "500", "503"] {
            assert_eq!(
                op["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorEnvelope",
                "{method} {path} {code}"
            );
        }
        count += 1;
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented, count,
        "documented operations that are not served"
    );
}

#[tokio::test]
async fn local_server_serves_the_document() {
    let app = TestApp::spawn().await;
    let state = app.state.clone();
    let router = local_server::app(state);
    let request = axum::http::Request::builder()
        .method(Method::GET)
        .uri("/openapi.json")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = TestApp::send_to(router, request).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        serde_json::to_value(local_server::openapi()).unwrap()
    );
}
