//! Billing settles to Stripe's truth: an existing customer is found before one is
//! created, a failed creation never blocks the next attempt, and concurrent checkouts of
//! one user share one open Checkout Session. Two subscription events of the same second
//! settle to what Stripe says when asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_tests::{TestApp, customer_json, search_json, session_json, unique_email};
use axum::http::{Method, StatusCode};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

/// How many of `requests` were `verb` on path `p`.
fn count_calls(requests: &[Request], verb: &str, p: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == p)
        .count()
}

/// Customer creation as Stripe does it with idempotency keys: the first attempt fails
/// with a 500, and Stripe replays a key's first answer to every later use of that key.
#[derive(Default)]
struct FlakyIdempotentCustomers {
    seen: Mutex<HashMap<String, ResponseTemplate>>,
    calls: AtomicUsize,
}

impl Respond for FlakyIdempotentCustomers {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = request.headers["idempotency-key"]
            .to_str()
            .unwrap()
            .to_string();
        let mut seen = self.seen.lock().unwrap();
        if let Some(first) = seen.get(&key) {
            return first.clone();
        }
        let answer = if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            ResponseTemplate::new(500).set_body_json(json!({"error": {
                "type": "api_error", "message": "An unknown error occurred"}}))
        } else {
            ResponseTemplate::new(200).set_body_json(customer_json("cus_second_try"))
        };
        seen.insert(key, answer.clone());
        answer
    }
}

#[tokio::test]
async fn a_failed_customer_creation_does_not_block_the_next_attempt() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(FlakyIdempotentCustomers::default())
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    app.mount_fake_stripe().await;
    let token = app.user_token(&unique_email("flaky")).await;

    let r = app
        .call(Method::POST, "/subscribe/pro", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "billing_unavailable");
    let r = app
        .call(Method::POST, "/subscribe/pro", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = app.user_id(&token).await;
    let stored: Option<String> = app
        .db()
        .await
        .query_one("SELECT stripe_customer_id FROM users WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_deref(), Some("cus_second_try"));
}

#[tokio::test]
async fn an_existing_customer_is_found_by_metadata_before_creating_one() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("found")).await;
    let user = app.user_id(&token).await;
    // An earlier attempt created the customer, then failed before storing its id.
    Mock::given(method("GET"))
        .and(path("/v1/customers/search"))
        .and(query_param(
            "query",
            format!("metadata['user_id']:'{user}'"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(search_json(&["cus_found"])))
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    app.mount_fake_stripe().await;

    let r = app
        .call(Method::POST, "/subscribe/pro", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let requests = app.stripe.received_requests().await.unwrap();
    assert_eq!(
        count_calls(&requests, "POST", "/v1/customers"),
        0,
        "no second customer"
    );
    let session = requests
        .iter()
        .find(|r| r.url.path() == "/v1/checkout/sessions")
        .unwrap();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&session.body)
        .into_owned()
        .collect();
    assert!(form.contains(&("customer".into(), "cus_found".into())));
}

/// Checkout Session creation that takes a while and names each session anew.
struct SlowSessions(AtomicUsize);

impl Respond for SlowSessions {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_body_json(session_json(&format!("cs_test_{n}")))
            .set_delay(Duration::from_millis(300))
    }
}

#[tokio::test]
async fn concurrent_checkouts_of_one_user_share_one_open_session() {
    let app = Arc::new(TestApp::spawn().await);
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(SlowSessions(AtomicUsize::new(0)))
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    app.mount_fake_stripe().await;
    let token = app.user_token(&unique_email("twice")).await;

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                app.call(Method::POST, "/subscribe/pro", None, Some(&token))
                    .await
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        sessions.push(r.body["session_id"].as_str().unwrap().to_string());
    }
    assert!(sessions.iter().all(|s| s == &sessions[0]), "{sessions:?}");
    let requests = app.stripe.received_requests().await.unwrap();
    assert_eq!(count_calls(&requests, "POST", "/v1/checkout/sessions"), 1);
    assert_eq!(count_calls(&requests, "POST", "/v1/customers"), 1);

    // Once Stripe says it expired, the next checkout opens a new one.
    let expired = json!({
        "id": "evt_expired_1", "type": "checkout.session.expired", "created": 1_700_000_000,
        "data": { "object": { "id": sessions[0], "object": "checkout.session" } }
    })
    .to_string();
    assert_eq!(app.signed_webhook(&expired).await.status, StatusCode::OK);
    let r = app
        .call(Method::POST, "/subscribe/pro", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_ne!(r.body["session_id"], sessions[0].as_str());
}

/// `customer.subscription.updated` for `sub` at `created`, with `status`.
fn updated_event(
    event_id: &str,
    created: i64,
    sub: &str,
    status: &str,
    user: uuid::Uuid,
) -> String {
    json!({
        "id": event_id, "object": "event", "type": "customer.subscription.updated",
        "created": created, "livemode": false,
        "data": { "object": subscription_json(sub, status, user, created) }
    })
    .to_string()
}

fn subscription_json(sub: &str, status: &str, user: uuid::Uuid, created: i64) -> serde_json::Value {
    json!({
        "id": sub, "object": "subscription", "customer": format!("cus_{sub}"), "status": status,
        "cancel_at_period_end": false, "metadata": { "user_id": user.to_string() },
        "items": { "object": "list", "data": [{ "id": "si_1", "current_period_end": created + 2_592_000 }] }
    })
}

#[tokio::test]
async fn same_second_updates_settle_to_what_stripe_says() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("tie")).await;
    let user = app.user_id(&token).await;
    let t = chrono::Utc::now().timestamp();
    let sub_path = "/v1/subscriptions/sub_tie";

    // Stripe turned the subscription `past_due`, then `unpaid`, within one second; the
    // events arrive in that order, and Stripe now says `unpaid`.
    let first = app
        .signed_webhook(&updated_event("evt_tie_1", t, "sub_tie", "past_due", user))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        app.get("/subscription/status", &token).await.body["status"],
        "past_due"
    );
    // No tie yet: Stripe was not asked.
    let requests = app.stripe.received_requests().await.unwrap();
    assert_eq!(count_calls(&requests, "GET", sub_path), 0);

    // Stripe cannot be reached: 500 so that Stripe delivers the event again; nothing changed.
    let down = Mock::given(method("GET"))
        .and(path(sub_path))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {
            "type": "api_error", "message": "An unknown error occurred"}})))
        .mount_as_scoped(&app.stripe)
        .await;
    let second = updated_event("evt_tie_2", t, "sub_tie", "unpaid", user);
    let r = app.signed_webhook(&second).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(
        app.get("/subscription/status", &token).await.body["status"],
        "past_due"
    );
    drop(down);

    // The redelivery asks Stripe again and stores its answer.
    Mock::given(method("GET"))
        .and(path(sub_path))
        .and(header("authorization", "Bearer sk_test_fake"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(subscription_json("sub_tie", "unpaid", user, t)),
        )
        .mount(&app.stripe)
        .await;
    let r = app.signed_webhook(&second).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    let status = app.get("/subscription/status", &token).await.body;
    assert_eq!(status["status"], "unpaid", "{status}");
    assert_eq!(app.get("/user/me", &token).await.body["tier"], "basic");

    // Had they arrived the other way round, Stripe's answer wins just the same.
    let third = updated_event("evt_tie_3", t, "sub_tie", "past_due", user);
    assert_eq!(app.signed_webhook(&third).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/subscription/status", &token).await.body["status"],
        "unpaid"
    );
    let requests = app.stripe.received_requests().await.unwrap();
    assert_eq!(count_calls(&requests, "GET", sub_path), 3);
}
