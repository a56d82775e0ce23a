//! Every sample event in events/ goes through the real handler of its function, against
//! the real services, with asserted results, so the samples cannot rot.
//!
//! Events hold placeholders (`{{TOKEN}}`, `{{CHATROOM_ID}}`, ...) for values that only
//! exist at run time; everything else is exactly what API Gateway or SQS would send.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use api_tests::{STRIPE_WEBHOOK_SECRET, TestApp, TestResponse, gemini_path, gemini_text};
use aws_lambda_events::event::sqs::SqsEvent;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

struct Run<'a> {
    app: &'a TestApp,
    vars: HashMap<&'static str, String>,
    used: BTreeSet<String>,
}

impl Run<'_> {
    fn load(&mut self, name: &str) -> String {
        let mut text = std::fs::read_to_string(events_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (k, v) in &self.vars {
            text = text.replace(&format!("{{{{{k}}}}}"), v);
        }
        self.used.insert(name.to_string());
        text
    }

    fn router(&self, function: &str) -> Router {
        let s = self.app.state.clone();
        shared::http::app(match function {
            "auth" => auth_fn::routes(s),
            "user" => user_fn::routes(s),
            "chatroom" => chatroom_fn::routes(s),
            "subscription" => subscription_fn::routes(s),
            "stripe-webhook" => stripe_webhook_fn::routes(s),
            "stream" => stream_fn::routes(s),
            other => panic!("no HTTP function {other}"),
        })
    }

    /// Logs Ada in with her new password (after the reset revoked her tokens) and uses
    /// the fresh token as `{{TOKEN}}`.
    async fn sign_in_again(&mut self) {
        let r = self
            .app
            .post(
                "/auth/login",
                serde_json::json!({ "email": "ada@example.com", "password": "a-brand-new-password" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        self.vars.insert(
            "TOKEN",
            r.body["access_token"].as_str().unwrap().to_string(),
        );
    }

    /// Parses an API Gateway HTTP API (v2) event as lambda_http does and calls the router.
    async fn http(&mut self, name: &str, expected: StatusCode) -> TestResponse {
        let text = self.load(name);
        assert!(!text.contains("{{"), "{name}: unfilled placeholder");
        let function = name.split('/').next().unwrap();
        let request =
            lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (parts, body) = request.into_parts();
        let request = axum::http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
        let response = TestApp::send_to(self.router(function), request).await;
        assert_eq!(response.status, expected, "{name}: {}", response.body);
        response
    }

    /// Runs a Function URL event through lambda_http's response-streaming adapter (what
    /// `run_with_streaming_response` serves) and reads the streamed body to its end.
    async fn streaming(&mut self, name: &str) -> (StatusCode, HeaderMap, String) {
        use futures_util::StreamExt;
        use lambda_http::tower::ServiceExt;
        let text = self.load(name);
        assert!(!text.contains("{{"), "{name}: unfilled placeholder");
        let function = name.split('/').next().unwrap();
        let request: lambda_http::request::LambdaRequest =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let adapter = lambda_http::StreamAdapter::from(self.router(function));
        let response = adapter
            .oneshot(lambda_http::LambdaEvent::new(
                request,
                lambda_http::Context::default(),
            ))
            .await
            .expect("infallible");
        let prelude = response.metadata_prelude;
        let mut body = String::new();
        let mut stream = response.stream;
        while let Some(chunk) = stream.next().await {
            body.push_str(&String::from_utf8_lossy(&chunk.expect("the body streams")));
        }
        (prelude.status_code, prelude.headers, body)
    }
}

#[tokio::test]
async fn every_sample_event_runs_through_its_function() {
    // The dead-letter queue named in events/reply-worker/dead-letter-batch.json.
    let app = TestApp::spawn_full(
        |c| {
            c.dead_letter_queue_arn =
                Some("arn:aws:sqs:eu-west-1:123456789012:chatroom-lambda-replies-dlq".into());
            // Room for every sample that asks for a reply (sends, an edit, a regenerate).
            c.basic_daily_limit = 10;
            // The account deletion at the end asks for one more code.
            c.otp_min_interval_secs = 0;
        },
        |_| {},
    )
    .await;
    app.mount_fake_stripe().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("See the Opera House.")))
        .mount(&app.gemini)
        .await;
    let mut run = Run {
        app: &app,
        vars: HashMap::new(),
        used: BTreeSet::new(),
    };

    let r = run.http("auth/signup.json", StatusCode::CREATED).await;
    let user_id = r.body["user"]["id"].as_str().unwrap().to_string();
    run.vars.insert("USER_ID", user_id.clone());
    let r = run.http("auth/send-otp.json", StatusCode::OK).await;
    run.vars
        .insert("OTP", r.body["otp"].as_str().unwrap().to_string());
    let r = run.http("auth/verify-otp.json", StatusCode::OK).await;
    run.vars.insert(
        "TOKEN",
        r.body["access_token"].as_str().unwrap().to_string(),
    );
    run.http("auth/login.json", StatusCode::OK).await;
    let r = run.http("user/me.json", StatusCode::OK).await;
    assert_eq!(r.body["email"], "ada@example.com");

    let r = run.http("chatroom/create.json", StatusCode::CREATED).await;
    run.vars.insert(
        "CHATROOM_ID",
        r.body["chatroom"]["id"].as_str().unwrap().to_string(),
    );
    let r = run.http("chatroom/list.json", StatusCode::OK).await;
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 1);
    let r = run
        .http("chatroom/send-message.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.body["message"]["status"], "pending");
    run.vars.insert(
        "MESSAGE_ID",
        r.body["message"]["id"].as_str().unwrap().to_string(),
    );
    // The same event again is an idempotent replay.
    let r = run
        .http("chatroom/send-message.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    let second = app
        .send_message(
            &run.vars["TOKEN"],
            &run.vars["CHATROOM_ID"],
            "And in Bergen?",
        )
        .await;
    run.vars.insert(
        "MESSAGE_ID_2",
        second.body["message"]["id"].as_str().unwrap().to_string(),
    );

    // The SQS batch: two real jobs and one unreadable record, which is dropped.
    let text = run.load("reply-worker/sqs-batch.json");
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(event.records.len(), 3);
    let response = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert!(response.batch_item_failures.is_empty());

    let r = run.http("chatroom/get-message.json", StatusCode::OK).await;
    assert_eq!(r.body["message"]["status"], "answered");
    assert_eq!(r.body["reply"]["content"], "See the Opera House.");
    // The answered message through the stream function: its reply as one delta, then done.
    let (status, headers, body) = run.streaming("stream/stream.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events, ["delta", "done"], "{body}");
    assert!(
        body.contains(r#"data: {"text":"See the Opera House."}"#),
        "{body}"
    );
    let r = run.http("chatroom/get.json", StatusCode::OK).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 4);
    let r = run
        .http("chatroom/messages-page.json", StatusCode::OK)
        .await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 4);
    let r = run.http("chatroom/rename.json", StatusCode::OK).await;
    assert_eq!(r.body["chatroom"]["name"], "Oslo in April");

    let r = run.http("chatroom/settings.json", StatusCode::OK).await;
    assert_eq!(
        r.body["chatroom"]["instructions"],
        "Answer in one short paragraph, in plain words."
    );
    assert_eq!(r.body["chatroom"]["model"], "gemini-test");
    let r = run.http("chatroom/models.json", StatusCode::OK).await;
    assert_eq!(r.body["default"], "gemini-test");
    assert_eq!(r.body["models"][1]["pro_only"], true);
    let r = run.http("chatroom/search.json", StatusCode::OK).await;
    assert_eq!(r.body["results"][0]["role"], "model", "{}", r.body);
    assert!(
        r.body["results"][0]["snippet_html"]
            .as_str()
            .unwrap()
            .contains("<mark>Opera</mark>"),
        "{}",
        r.body
    );

    let r = run.http("subscription/status.json", StatusCode::OK).await;
    assert_eq!(r.body["usage"]["used_today"], 2);

    // The newest exchange asked again: edited (its reply dropped), answered, regenerated.
    let r = run
        .http("chatroom/edit-message.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.body["message"]["status"], "pending");
    assert_eq!(r.body["message"]["content"], "And in Bergen, if it rains?");
    assert!(r.body["message"]["edited_at"].is_string());
    // The same event again is an idempotent replay, which costs nothing.
    let r = run
        .http("chatroom/edit-message.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    app.run_worker().await;
    let r = run
        .http("chatroom/regenerate.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.body["message"]["status"], "pending");
    app.run_worker().await;
    let r = run.http("subscription/status.json", StatusCode::OK).await;
    assert_eq!(r.body["usage"]["used_today"], 4);

    // A job whose every delivery failed arrives from the dead-letter queue: its message
    // ends failed instead of pending.
    let third = app
        .send_message(&run.vars["TOKEN"], &run.vars["CHATROOM_ID"], "Still there?")
        .await;
    let third = third.body["message"]["id"].as_str().unwrap().to_string();
    run.vars.insert("MESSAGE_ID_3", third.clone());
    let r = run
        .http("chatroom/cancel-message.json", StatusCode::ACCEPTED)
        .await;
    assert_eq!(r.body["message"]["status"], "pending");
    let text = run.load("reply-worker/dead-letter-batch.json");
    let event: SqsEvent = serde_json::from_str(&text).unwrap();
    let response = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert!(response.batch_item_failures.is_empty());
    let r = app
        .get(
            &format!("/chatroom/{}/messages/{third}", run.vars["CHATROOM_ID"]),
            &run.vars["TOKEN"],
        )
        .await;
    assert_eq!(r.body["message"]["status"], "failed");
    assert_eq!(
        r.body["message"]["failure_reason"],
        shared::chat::worker::DEAD_LETTER_REASON
    );
    assert!(r.body["reply"].is_null());

    // The sweep's schedule: a message left pending and idle past SWEEP_AFTER_SECONDS (as
    // a send that died before publishing leaves it) is answered by the sweep.
    let fourth = app
        .send_message(&run.vars["TOKEN"], &run.vars["CHATROOM_ID"], "Anyone?")
        .await;
    let fourth = fourth.body["message"]["id"].as_str().unwrap().to_string();
    app.db()
        .await
        .execute(
            "UPDATE messages SET updated_at = now() - interval '1 hour' WHERE id = $1::text::uuid",
            &[&fourth],
        )
        .await
        .unwrap();
    // Its job never reached the queue (the send died before publishing).
    app.db()
        .await
        .execute(
            "UPDATE pending_messages SET enqueued_at = NULL WHERE message_id = $1::text::uuid",
            &[&fourth],
        )
        .await
        .unwrap();
    let event: Value =
        serde_json::from_str(&run.load("reply-worker/scheduled-sweep.json")).unwrap();
    let report = reply_worker_fn::handle_event(&app.worker, event)
        .await
        .unwrap();
    assert_eq!(report["taken"], 1, "{report}");
    assert_eq!(report["answered"], 1, "{report}");
    let r = app
        .get(
            &format!("/chatroom/{}/messages/{fourth}", run.vars["CHATROOM_ID"]),
            &run.vars["TOKEN"],
        )
        .await;
    assert_eq!(r.body["message"]["status"], "answered");
    let r = run
        .http("subscription/subscribe-pro.json", StatusCode::OK)
        .await;
    assert!(r.body["checkout_url"].is_string());
    let r = run.http("subscription/portal.json", StatusCode::OK).await;
    assert!(r.body["portal_url"].is_string());

    // Sign the webhook body exactly as it will be delivered.
    let unsigned: Value =
        serde_json::from_str(&run.load("stripe-webhook/subscription-created.json")).unwrap();
    let body = unsigned["body"].as_str().unwrap();
    let signature = shared::billing::webhook::sign(
        body.as_bytes(),
        STRIPE_WEBHOOK_SECRET,
        chrono::Utc::now().timestamp(),
    );
    run.vars.insert("STRIPE_SIGNATURE", signature);
    let r = run
        .http("stripe-webhook/subscription-created.json", StatusCode::OK)
        .await;
    assert_eq!(r.body["outcome"], "applied");
    let r = run.http("user/me.json", StatusCode::OK).await;
    assert_eq!(r.body["tier"], "pro");

    let r = run.http("auth/change-password.json", StatusCode::OK).await;
    run.vars.insert(
        "TOKEN",
        r.body["access_token"].as_str().unwrap().to_string(),
    );
    let r = run.http("auth/forgot-password.json", StatusCode::OK).await;
    run.vars
        .insert("OTP", r.body["otp"].as_str().unwrap().to_string());
    run.http("auth/reset-password.json", StatusCode::OK).await;
    // The reset revoked the token: log in again for the last event.
    run.sign_in_again().await;
    // The export, streamed by the stream function as its Function URL serves it.
    let (status, headers, body) = run.streaming("stream/export.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let export: Value = serde_json::from_str(&body).expect("one JSON document");
    assert_eq!(export["account"]["email"], "ada@example.com");
    assert_eq!(export["subscriptions"][0]["status"], "active", "{export}");
    let room = &export["chatrooms"][0];
    assert_eq!(room["id"], run.vars["CHATROOM_ID"].as_str());
    assert_eq!(room["messages"].as_array().unwrap().len(), 7, "{room}");
    run.http("chatroom/delete.json", StatusCode::NO_CONTENT)
        .await;
    // Sign-out: the token that made the call stops working.
    let r = run.http("auth/logout.json", StatusCode::NO_CONTENT).await;
    assert!(r.body.is_null());
    let r = run.http("user/me.json", StatusCode::UNAUTHORIZED).await;
    assert_eq!(r.error_code(), "unauthorized");

    // Closing the account: a fresh code confirms it; the Pro subscription is cancelled.
    run.sign_in_again().await;
    run.vars
        .insert("OTP", app.request_otp("ada@example.com").await);
    run.http("user/delete-me.json", StatusCode::NO_CONTENT)
        .await;
    run.http("user/me.json", StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);

    let mut all = BTreeSet::new();
    for dir in std::fs::read_dir(events_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "json") {
                    let rel = f
                        .strip_prefix(events_dir())
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    all.insert(rel);
                }
            }
        }
    }
    let untested: Vec<_> = all.difference(&run.used).collect();
    assert!(untested.is_empty(), "events without a test: {untested:?}");
}
