//! Billing: Checkout against a fake Stripe API, and webhooks signed for real.

use std::sync::Arc;

use api_tests::{STRIPE_WEBHOOK_SECRET, TestApp, unique_email};
use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Value, json};

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], key: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn checkout_reuses_one_customer_and_sends_the_right_session() {
    let app = TestApp::spawn().await;
    app.mount_fake_stripe().await;
    let email = unique_email("checkout");
    let token = app.user_token(&email).await;
    let user = app.user_id(&token).await;
    for _ in 0..2 {
        let r = app
            .call(Method::POST, "/subscribe/pro", None, Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["session_id"], "cs_test_1");
        assert_eq!(
            r.body["checkout_url"],
            "https://checkout.stripe.com/c/pay/cs_test_1"
        );
    }
    let requests = app.stripe.received_requests().await.unwrap();
    let customers: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/customers")
        .collect();
    assert_eq!(customers.len(), 1, "one customer per user");
    let c = form(&customers[0].body);
    assert_eq!(field(&c, "email"), Some(email.as_str()));
    assert_eq!(
        field(&c, "metadata[user_id]"),
        Some(user.to_string().as_str())
    );
    // A key per attempt (a failed attempt must not block the next one).
    assert!(
        customers[0].headers["idempotency-key"]
            .to_str()
            .unwrap()
            .starts_with(&format!("customer-{user}-"))
    );

    let sessions: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/v1/checkout/sessions")
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "the second request reuses the open session"
    );
    let s = form(&sessions[0].body);
    assert_eq!(field(&s, "mode"), Some("subscription"));
    assert_eq!(field(&s, "customer"), Some("cus_test_1"));
    assert_eq!(
        field(&s, "client_reference_id"),
        Some(user.to_string().as_str())
    );
    assert_eq!(field(&s, "line_items[0][price]"), Some("price_pro_test"));
    assert_eq!(field(&s, "line_items[0][quantity]"), Some("1"));
    assert_eq!(
        field(&s, "success_url"),
        Some("https://app.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}")
    );
    assert_eq!(
        field(&s, "cancel_url"),
        Some("https://app.example.com/billing/cancel")
    );
    let stored: Option<String> = app
        .db()
        .await
        .query_one(
            "SELECT stripe_customer_id FROM users WHERE id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_deref(), Some("cus_test_1"));

    let r = app
        .call(Method::POST, "/subscription/portal", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["portal_url"],
        "https://billing.stripe.com/p/session/test_1"
    );
}

#[tokio::test]
async fn checkout_for_pro_is_409_and_portal_needs_a_customer() {
    let app = TestApp::spawn().await;
    app.mount_fake_stripe().await;
    let token = app.user_token(&unique_email("pro409")).await;
    let r = app
        .call(Method::POST, "/subscription/portal", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    app.set_tier(&token, "pro").await;
    let r = app
        .call(Method::POST, "/subscribe/pro", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "already_subscribed");
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
    let r = app.call(Method::POST, "/subscribe/pro", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_stripe_keys_billing_is_503() {
    let app = TestApp::spawn_with(|c| {
        c.stripe.api_key = None;
        c.stripe.webhook_secret = None;
    })
    .await;
    let token = app.user_token(&unique_email("nostripe")).await;
    for p in ["/subscribe/pro", "/subscription/portal"] {
        let r = app.call(Method::POST, p, None, Some(&token)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
        assert_eq!(r.error_code(), "billing_unavailable");
    }
    let r = app
        .signed_webhook(&sub_event(
            "evt_x",
            "customer.subscription.created",
            1,
            "sub_x",
            "active",
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // Status still works: it needs no Stripe call.
    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.status, StatusCode::OK);
}

fn sub_event(
    event_id: &str,
    kind: &str,
    created: i64,
    sub: &str,
    status: &str,
    user: Option<uuid::Uuid>,
) -> String {
    json!({
        "id": event_id, "object": "event", "type": kind, "created": created, "livemode": false,
        "api_version": "2025-08-27.basil",
        "data": { "object": {
            "id": sub, "object": "subscription", "customer": format!("cus_{sub}"), "status": status,
            "cancel_at_period_end": status == "active" && kind.ends_with("updated"),
            "metadata": { "user_id": user.map(|u| u.to_string()) },
            "items": { "object": "list", "data": [{ "id": "si_1", "current_period_end": created + 2_592_000 }] }
        }}
    })
    .to_string()
}

async fn tier(app: &TestApp, token: &str) -> String {
    app.get("/user/me", token).await.body["tier"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn signed_events_change_state_and_forgeries_do_not() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("webhook")).await;
    let user = app.user_id(&token).await;
    let now = chrono::Utc::now().timestamp();
    let body = sub_event(
        "evt_1",
        "customer.subscription.created",
        now,
        "sub_1",
        "active",
        Some(user),
    );

    let forged = [
        ("missing header", None),
        (
            "wrong secret",
            Some(shared::billing::webhook::sign(
                body.as_bytes(),
                "whsec_wrong",
                now,
            )),
        ),
        (
            "stale timestamp",
            Some(shared::billing::webhook::sign(
                body.as_bytes(),
                STRIPE_WEBHOOK_SECRET,
                now - 301,
            )),
        ),
        ("garbage header", Some("t=abc,v1=zz".to_string())),
    ];
    for (why, sig) in forged {
        let r = app.webhook(&body, sig.as_deref()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.error_code(), "invalid_signature", "{why}");
    }
    // Signed, then altered.
    let sig = shared::billing::webhook::sign(body.as_bytes(), STRIPE_WEBHOOK_SECRET, now);
    let altered = body.replace("\"active\"", "\"trialing\"");
    let r = app.webhook(&altered, Some(&sig)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(tier(&app, &token).await, "basic");
    let events = app.count("SELECT count(*) FROM stripe_events").await;
    assert_eq!(events, 0, "nothing recorded for refused deliveries");

    let r = app.webhook(&body, Some(&sig)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    assert_eq!(tier(&app, &token).await, "pro");

    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.body["tier"], "pro");
    assert_eq!(r.body["status"], "active");
    assert!(r.body["current_period_end"].is_string());
    assert_eq!(r.body["usage"]["daily_limit"], Value::Null);

    let r = app.signed_webhook(&json!({"id": "evt_unknown", "type": "customer.tax_id.created", "created": now, "data": {"object": {}}}).to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["outcome"], "ignored");
}

#[tokio::test]
async fn base64_encoded_body_from_api_gateway_is_verified() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("b64")).await;
    let user = app.user_id(&token).await;
    let now = chrono::Utc::now().timestamp();
    let body = sub_event(
        "evt_b64",
        "customer.subscription.created",
        now,
        "sub_b64",
        "active",
        Some(user),
    );
    let sig = shared::billing::webhook::sign(body.as_bytes(), STRIPE_WEBHOOK_SECRET, now);
    let event = json!({
        "version": "2.0", "routeKey": "POST /webhook/stripe", "rawPath": "/webhook/stripe", "rawQueryString": "",
        "headers": { "content-type": "application/json", "stripe-signature": sig },
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": { "method": "POST", "path": "/webhook/stripe", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "Stripe/1.0" },
            "requestId": "id", "routeKey": "POST /webhook/stripe", "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0
        },
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "isBase64Encoded": true
    });
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let (parts, body) = request.into_parts();
    let bytes: Vec<u8> = body.to_vec();
    let request = axum::http::Request::from_parts(parts, axum::body::Body::from(bytes));
    let r = app.send(request).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(tier(&app, &token).await, "pro");
}

#[tokio::test]
async fn the_same_event_ten_times_is_applied_once() {
    let app = Arc::new(TestApp::spawn().await);
    let token = app.user_token(&unique_email("dup")).await;
    let user = app.user_id(&token).await;
    let now = chrono::Utc::now().timestamp();
    let body = sub_event(
        "evt_dup",
        "customer.subscription.created",
        now,
        "sub_dup",
        "active",
        Some(user),
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (app, body) = (app.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            app.signed_webhook(&body).await.body["outcome"].clone()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    for _ in 0..5 {
        outcomes.push(app.signed_webhook(&body).await.body["outcome"].clone());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        9,
        "{outcomes:?}"
    );
    // A replay does not undo a later change either.
    app.signed_webhook(&sub_event(
        "evt_del",
        "customer.subscription.deleted",
        now + 10,
        "sub_dup",
        "canceled",
        Some(user),
    ))
    .await;
    assert_eq!(tier(&app, &token).await, "basic");
    assert_eq!(app.signed_webhook(&body).await.body["outcome"], "duplicate");
    assert_eq!(tier(&app, &token).await, "basic");
}

#[tokio::test]
async fn out_of_order_events_end_in_the_right_state() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("order")).await;
    let user = app.user_id(&token).await;
    let t = chrono::Utc::now().timestamp();
    // `updated` (active, cancel at period end) arrives before `created` (incomplete), same second.
    app.signed_webhook(&sub_event(
        "evt_u",
        "customer.subscription.updated",
        t,
        "sub_o",
        "active",
        Some(user),
    ))
    .await;
    app.signed_webhook(&sub_event(
        "evt_c",
        "customer.subscription.created",
        t,
        "sub_o",
        "incomplete",
        Some(user),
    ))
    .await;
    assert_eq!(tier(&app, &token).await, "pro");
    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["cancel_at_period_end"], true);

    // `deleted` arrives before a later-sent but older `updated`.
    app.signed_webhook(&sub_event(
        "evt_d",
        "customer.subscription.deleted",
        t + 5,
        "sub_o",
        "canceled",
        Some(user),
    ))
    .await;
    app.signed_webhook(&sub_event(
        "evt_u2",
        "customer.subscription.updated",
        t + 3,
        "sub_o",
        "active",
        Some(user),
    ))
    .await;
    assert_eq!(tier(&app, &token).await, "basic");
    assert_eq!(
        app.get("/subscription/status", &token).await.body["status"],
        "canceled"
    );
}

#[tokio::test]
async fn upgrade_lifts_the_cap_at_once_and_cancellation_restores_it() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("lift")).await;
    let user = app.user_id(&token).await;
    let room = app.create_chatroom(&token, Some("cap")).await;
    for _ in 0..5 {
        assert_eq!(
            app.send_message(&token, &room, "hi").await.status,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        app.send_message(&token, &room, "sixth").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.body["tier"], "basic");
    assert_eq!(r.body["status"], "none");
    assert_eq!(r.body["usage"]["used_today"], 5);
    assert_eq!(r.body["usage"]["daily_limit"], 5);
    assert!(
        r.body["usage"]["resets_at"]
            .as_str()
            .unwrap()
            .contains("T00:00:00")
    );

    let t = chrono::Utc::now().timestamp();
    // The session POST /subscribe/pro opened (only such a checkout grants Pro by itself).
    app.db()
        .await
        .execute(
            "UPDATE users SET checkout_session_id = 'cs_1' WHERE id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let checkout = json!({
        "id": "evt_cs", "type": "checkout.session.completed", "created": t,
        "data": { "object": { "id": "cs_1", "object": "checkout.session", "mode": "subscription",
            "payment_status": "paid", "status": "complete", "customer": "cus_lift", "subscription": "sub_lift",
            "client_reference_id": user.to_string() } }
    });
    let r = app.signed_webhook(&checkout.to_string()).await;
    assert_eq!(r.body["outcome"], "applied");
    assert_eq!(
        app.send_message(&token, &room, "sixth, as Pro")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.body["tier"], "pro");
    assert_eq!(r.body["usage"]["used_today"], 6);

    let mut deleted: Value = serde_json::from_str(&sub_event(
        "evt_gone",
        "customer.subscription.deleted",
        t + 1,
        "sub_lift",
        "canceled",
        Some(user),
    ))
    .unwrap();
    deleted["data"]["object"]["customer"] = json!("cus_lift");
    app.signed_webhook(&deleted.to_string()).await;
    assert_eq!(
        app.send_message(&token, &room, "seventh").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn database_failure_is_500_so_stripe_retries() {
    let app = TestApp::spawn().await;
    let mut config = api_tests::test_config(&app.database_url);
    config.database_url = shared::config::Secret::new("postgres://postgres@127.0.0.1:1/nothing");
    let broken = TestApp::from_config(config).await;
    let body = sub_event(
        "evt_db",
        "customer.subscription.created",
        chrono::Utc::now().timestamp(),
        "sub_db",
        "active",
        None,
    );
    let r = broken.signed_webhook(&body).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.error_code(), "processing_failed");
}

#[tokio::test]
async fn invoice_events_do_not_overwrite_newer_invoice_status() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("invoice")).await;
    let user = app.user_id(&token).await;
    let t = chrono::Utc::now().timestamp();
    app.signed_webhook(&sub_event(
        "evt_inv_sub",
        "customer.subscription.created",
        t,
        "sub_inv",
        "active",
        Some(user),
    ))
    .await;
    let invoice = |id: &str, kind: &str, created: i64| {
        json!({
            "id": id, "object": "event", "type": kind, "created": created, "livemode": false,
            "data": { "object": { "id": format!("in_{id}"), "object": "invoice", "subscription": "sub_inv" } }
        })
        .to_string()
    };
    let status = || async {
        app.db()
            .await
            .query_one(
                "SELECT last_invoice_status FROM subscriptions WHERE id = 'sub_inv'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
    };
    // The retry's `paid` arrives first, the earlier `payment_failed` late.
    let r = app
        .signed_webhook(&invoice("evt_paid", "invoice.paid", t + 10))
        .await;
    assert_eq!(r.body["outcome"], "applied");
    let r = app
        .signed_webhook(&invoice("evt_failed", "invoice.payment_failed", t + 5))
        .await;
    assert_eq!(r.body["outcome"], "applied", "acknowledged, but stale");
    assert_eq!(status().await.as_deref(), Some("paid"));
    // A newer failure does replace it.
    app.signed_webhook(&invoice("evt_failed2", "invoice.payment_failed", t + 20))
        .await;
    assert_eq!(status().await.as_deref(), Some("payment_failed"));
}

#[tokio::test]
async fn pro_means_the_pro_price() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("price")).await;
    let user = app.user_id(&token).await;
    let t = chrono::Utc::now().timestamp();
    let with_price = |id: &str, created: i64, price: &str| {
        let mut event: Value = serde_json::from_str(&sub_event(
            id,
            "customer.subscription.updated",
            created,
            "sub_price",
            "active",
            Some(user),
        ))
        .unwrap();
        event["data"]["object"]["items"]["data"][0]["price"] =
            json!({ "id": price, "object": "price" });
        event.to_string()
    };
    // An active subscription to another Price of the same Stripe account: not Pro.
    let r = app
        .signed_webhook(&with_price("evt_p1", t, "price_something_else"))
        .await;
    assert_eq!(r.body["outcome"], "applied");
    assert_eq!(tier(&app, &token).await, "basic");
    assert_eq!(
        app.get("/subscription/status", &token).await.body["tier"],
        "basic"
    );
    // Moved to the Pro price: Pro.
    app.signed_webhook(&with_price("evt_p2", t + 1, "price_pro_test"))
        .await;
    assert_eq!(tier(&app, &token).await, "pro");
    // Another product's checkout (a session this service never opened) grants nothing.
    let other = app.user_token(&unique_email("price-other")).await;
    let other_id = app.user_id(&other).await;
    let checkout = json!({
        "id": "evt_foreign_cs", "type": "checkout.session.completed", "created": t,
        "data": { "object": { "id": "cs_foreign", "object": "checkout.session", "mode": "subscription",
            "payment_status": "paid", "status": "complete", "customer": "cus_foreign",
            "subscription": "sub_foreign", "client_reference_id": other_id.to_string() } }
    });
    app.signed_webhook(&checkout.to_string()).await;
    assert_eq!(tier(&app, &other).await, "basic");
}
