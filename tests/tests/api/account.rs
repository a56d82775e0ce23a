//! The account as a whole: `GET /user/export` (everything, streamed, rate-limited) and
//! `DELETE /user/me` (a fresh code, Stripe cancelled first, nothing left that names the
//! address), on the real stores with a fake Stripe.

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

async fn answering(app: &TestApp) {
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("An answer.")))
        .mount(&app.gemini)
        .await;
}

/// The raw export: status, headers, and the body as text.
async fn export(app: &TestApp, token: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::get("/user/export")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn delete_me(app: &TestApp, token: &str, otp: &str) -> api_tests::TestResponse {
    app.call(
        Method::DELETE,
        "/user/me",
        Some(json!({ "otp": otp })),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn export_holds_everything_streams_and_is_rate_limited() {
    let app = TestApp::spawn().await;
    answering(&app).await;
    let email = unique_email("export");
    let token = app.user_token(&email).await;
    let user = app.user_id(&token).await;
    let first = app.create_chatroom(&token, Some("First")).await;
    let second = app.create_chatroom(&token, Some("Second")).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/chatroom/{second}"),
            Some(json!({"instructions": "Be brief."})),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .send_message(&token, &first, "Hello \"there\" \\ ünïcode")
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.run_worker().await;
    // Enough rows that the document goes out in several chunks.
    app.db()
        .await
        .execute(
            "INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
             SELECT gen_random_uuid(), $1, $2, 'user', repeat('x', 100) || n, 'failed' \
             FROM generate_series(1, 3000) n",
            &[&second.parse::<uuid::Uuid>().unwrap(), &user],
        )
        .await
        .unwrap();
    // Another account's data never appears.
    let other = app.user_token(&unique_email("export-other")).await;
    let theirs = app.create_chatroom(&other, Some("Theirs")).await;

    let (status, headers, body) = export(&app, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(
        headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"chatroom-export-"),
        "{headers:?}"
    );
    let doc: Value = serde_json::from_str(&body).expect("one JSON document");
    assert_eq!(doc["format"], "chatroom-lambda.export.v1");
    assert_eq!(doc["account"]["email"], email.as_str());
    assert_eq!(doc["subscriptions"], json!([]));
    let rooms = doc["chatrooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0]["id"], first.as_str());
    assert_eq!(rooms[0]["name"], "First");
    let messages = rooms[0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["content"], "Hello \"there\" \\ ünïcode");
    assert_eq!(messages[0]["status"], "answered");
    assert_eq!(messages[1]["role"], "model");
    assert_eq!(messages[1]["reply_to"], messages[0]["id"]);
    assert!(messages[1]["created_at"].is_string());
    assert_eq!(rooms[1]["instructions"], "Be brief.");
    assert!(rooms[1]["model"].is_null());
    assert_eq!(rooms[1]["messages"].as_array().unwrap().len(), 3000);
    assert!(!body.contains(&theirs));

    // Once per 10 minutes, per account.
    let (status, headers, body) = export(&app, &token).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "export_rate_limited");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    let (status, _, body) = export(&app, &other).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["chatrooms"][0]["messages"], json!([]));
}

#[tokio::test]
async fn delete_me_cancels_stripe_first_and_leaves_nothing_that_names_the_address() {
    // Several codes in a row for one address.
    let app = TestApp::spawn_with(|c| c.otp_min_interval_secs = 0).await;
    answering(&app).await;
    let email = unique_email("leaver");
    let token = app.user_token(&email).await;
    let user = app.user_id(&token).await;
    let room = app.create_chatroom(&token, Some("Mine")).await;
    let r = app.send_message(&token, &room, "remember me").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.run_worker().await;
    let pending = app.send_message(&token, &room, "still pending").await;
    assert_eq!(pending.status, StatusCode::ACCEPTED);
    app.set_tier(&token, "pro").await;
    app.db()
        .await
        .execute(
            "INSERT INTO subscriptions (id, user_id, customer_id, status, event_created, event_rank) \
             VALUES ('sub_leaver_1', $1, 'cus_leaver', 'active', 1, 1)",
            &[&user],
        )
        .await
        .unwrap();
    let _ = app.get("/chatroom", &token).await; // cached list

    // A wrong code: 401, nothing changes.
    let _ = app.request_otp(&email).await;
    let r = delete_me(&app, &token, "not-the-code").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.error_code(), "invalid_otp");
    let r = app
        .call(Method::DELETE, "/user/me", None, Some(&token))
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);

    // Stripe cannot be reached (the fake answers nothing): 503, nothing deleted.
    let otp = app.request_otp(&email).await;
    let r = delete_me(&app, &token, &otp).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "billing_unavailable");
    let r = app.get("/user/me", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["email"], email.as_str());
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 3);

    app.mount_fake_stripe().await;
    let otp = app.request_otp(&email).await;
    let r = delete_me(&app, &token, &otp).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let cancelled: Vec<String> = app
        .stripe
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "DELETE")
        .map(|r| r.url.path().to_string())
        .collect();
    // The attempt while Stripe was down, then the one that went through.
    assert_eq!(cancelled, ["/v1/subscriptions/sub_leaver_1"; 2]);

    // Every token is dead; no row of the account is left, nor any naming the address.
    let r = app.get("/user/me", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for table in [
        "users",
        "chatrooms",
        "messages",
        "subscriptions",
        "idempotency_keys",
    ] {
        let column = if table == "users" { "id" } else { "user_id" };
        let n = app
            .count(&format!(
                "SELECT count(*) FROM {table} WHERE {column} = '{user}'"
            ))
            .await;
        assert_eq!(n, 0, "{table}");
    }
    let dump = app
        .count(&format!(
            "SELECT count(*) FROM users WHERE email = '{email}' OR name IS NOT NULL AND id = '{user}'"
        ))
        .await;
    assert_eq!(dump, 0);
    // The pending message's job finds nothing to answer.
    app.run_worker().await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE user_id = '{user}'"
        ))
        .await,
        0
    );

    // The address may sign up again: a new, empty Basic account.
    let again = app.user_token(&email).await;
    let r = app.get("/user/me", &again).await;
    assert_ne!(r.body["id"], user.to_string().as_str());
    assert_eq!(r.body["tier"], "basic");
    let r = app.get("/chatroom", &again).await;
    assert_eq!(r.body["chatrooms"], json!([]));
    assert_eq!(app.used_today(&again).await, 0);
}

#[tokio::test]
async fn the_sweep_finishes_an_account_closed_but_not_yet_emptied() {
    let app = TestApp::spawn().await;
    answering(&app).await;
    let token = app.user_token(&unique_email("half-closed")).await;
    let user = app.user_id(&token).await;
    let room = app.create_chatroom(&token, Some("Left over")).await;
    let r = app.send_message(&token, &room, "left over").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.run_worker().await;
    // As a request that ran out of time leaves it: closed, data still there.
    app.db()
        .await
        .execute(
            "UPDATE users SET deleted_at = now(), token_version = token_version + 1, \
             email = 'deleted-' || id || '@deleted.invalid' WHERE id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let r = app.get("/user/me", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let report = shared::maintenance::sweep(&app.worker).await.unwrap();
    assert_eq!(report.accounts_deleted, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM messages WHERE user_id = '{user}'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM users WHERE id = '{user}'"))
            .await,
        0
    );
    let report = shared::maintenance::sweep(&app.worker).await.unwrap();
    assert_eq!(report.accounts_deleted, 0);
}
