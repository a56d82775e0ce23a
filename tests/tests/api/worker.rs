//! The reply-worker: the SQS path against the emulator, Gemini failures, redelivery,
//! partial batch failures and the dead-letter path.

use std::sync::Arc;
use std::time::Duration;

use api_tests::{TestApp, gemini_path, gemini_text, sqs_client, unique_email};
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::http::StatusCode;
use serde_json::json;
use shared::chat::worker::Outcome;
use shared::clients::queue::sqs::SqsQueue;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, ResponseTemplate};

/// A queue with a dead-letter queue after `max_receive` receives; returns (url, dlq url).
async fn queue_pair(max_receive: u32) -> (String, String) {
    let sqs = sqs_client();
    let name = format!("replies-{}", uuid::Uuid::new_v4().simple());
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap();
    let dlq_url = dlq.queue_url().unwrap().to_string();
    let dlq_arn = queue_arn(&dlq_url).await;
    let main = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive.to_string() })
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    (main.queue_url().unwrap().to_string(), dlq_url)
}

async fn queue_arn(queue_url: &str) -> String {
    sqs_client()
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

/// An app publishing to `queue_url`, whose worker knows `dlq_url` as the dead-letter queue.
async fn sqs_app(queue_url: &str, dlq_url: &str, max_receive: u32) -> TestApp {
    let url = queue_url.to_string();
    let dlq_arn = queue_arn(dlq_url).await;
    TestApp::spawn_full(
        |c| {
            c.max_receive_count = max_receive;
            c.dead_letter_queue_arn = Some(dlq_arn);
            c.gemini.retry_budget = Duration::from_millis(600);
        },
        move |s| s.queue = Some(Arc::new(SqsQueue::with_client(sqs_client(), url))),
    )
    .await
}

/// Receives what is visible and shapes it as the SqsEvent Lambda would deliver.
async fn receive_event(queue_url: &str) -> (SqsEvent, Vec<(String, String)>) {
    let out = sqs_client()
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let arn = queue_arn(queue_url).await;
    let mut records = Vec::new();
    let mut handles = Vec::new();
    for m in out.messages() {
        let attrs: serde_json::Map<String, serde_json::Value> = m
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                    .collect()
            })
            .unwrap_or_default();
        records.push(json!({
            "messageId": m.message_id(),
            "receiptHandle": m.receipt_handle(),
            "body": m.body(),
            "attributes": attrs,
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": "us-east-1"
        }));
        handles.push((
            m.message_id().unwrap().to_string(),
            m.receipt_handle().unwrap().to_string(),
        ));
    }
    (
        serde_json::from_value(json!({ "Records": records })).unwrap(),
        handles,
    )
}

/// What the Lambda service does after the handler: delete every record not reported.
async fn settle(queue_url: &str, handles: &[(String, String)], failed: &[String]) {
    for (id, receipt) in handles {
        if !failed.contains(id) {
            sqs_client()
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .unwrap();
        }
    }
}

fn failures(resp: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    resp.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn sqs_round_trip_and_redelivery_gives_one_reply() {
    let (url, dlq) = queue_pair(3).await;
    let app = sqs_app(&url, &dlq, 3).await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("from sqs")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("sqs")).await;
    let room = app.create_chatroom(&token, Some("sqs")).await;
    let r = app.send_message(&token, &room, "through the queue").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    let (event, handles) = receive_event(&url).await;
    assert_eq!(handles.len(), 1);
    let again = event.clone();
    let resp = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert!(failures(&resp).is_empty());
    // The same record delivered again (SQS is at-least-once): still one reply.
    let resp = reply_worker_fn::handle_batch(&app.worker, again).await;
    assert!(failures(&resp).is_empty());
    settle(&url, &handles, &[]).await;

    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    let msgs = r.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{}", r.body);
    assert_eq!(msgs[0]["status"], "answered");
    assert_eq!(msgs[1]["content"], "from sqs");
}

#[tokio::test]
async fn sqs_publish_failure_is_503_and_returns_the_unit() {
    let missing = format!(
        "{}/000000000000/no-such-queue-{}",
        api_tests::aws_endpoint(),
        uuid::Uuid::new_v4().simple()
    );
    let (_, dlq) = queue_pair(3).await;
    let app = sqs_app(&missing, &dlq, 3).await;
    let token = app.user_token(&unique_email("sqsdown")).await;
    let room = app.create_chatroom(&token, Some("down")).await;
    let r = app.send_message(&token, &room, "lost?").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "queue_unavailable");
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    let msgs = r.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["status"], "failed", "kept, and marked failed");
    let used = app.used_today(&token).await;
    assert_eq!(used, 0, "the unit was given back");
}

#[tokio::test]
async fn partial_batch_failure_reports_exactly_the_failing_ids() {
    let (url, dlq) = queue_pair(5).await;
    let app = sqs_app(&url, &dlq, 5).await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .and(body_string_contains("please-fail"))
        .respond_with(ResponseTemplate::new(503).set_body_json(
            json!({"error": {"code": 503, "status": "UNAVAILABLE", "message": "overloaded"}}),
        ))
        .with_priority(1)
        .mount(&app.gemini)
        .await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("fine")))
        .with_priority(5)
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("batch")).await;
    app.set_tier(&token, "pro").await;
    let room_a = app.create_chatroom(&token, Some("a")).await;
    let room_b = app.create_chatroom(&token, Some("b")).await;
    app.send_message(&token, &room_a, "fine one").await;
    app.send_message(&token, &room_b, "please-fail now").await;
    app.send_message(&token, &room_a, "fine two").await;
    // A record that can never succeed is dropped, not retried.
    sqs_client()
        .send_message()
        .queue_url(&url)
        .message_body("not json")
        .send()
        .await
        .unwrap();

    let (event, handles) = receive_event(&url).await;
    assert_eq!(handles.len(), 4);
    let failing_id = {
        let bodies: Vec<(String, String)> = event
            .records
            .iter()
            .map(|r| (r.message_id.clone().unwrap(), r.body.clone().unwrap()))
            .collect();
        let db = app.db().await;
        let row = db
            .query_one(
                "SELECT id FROM messages WHERE content = 'please-fail now'",
                &[],
            )
            .await
            .unwrap();
        let failing: uuid::Uuid = row.get(0);
        bodies
            .into_iter()
            .find(|(_, b)| b.contains(&failing.to_string()))
            .unwrap()
            .0
    };
    let resp = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert_eq!(failures(&resp), vec![failing_id]);
    let statuses: Vec<(String, String)> = app
        .db()
        .await
        .query(
            "SELECT content, status FROM messages WHERE role = 'user' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("fine one".into(), "answered".into()),
            ("please-fail now".into(), "pending".into()),
            ("fine two".into(), "answered".into())
        ]
    );
}

#[tokio::test]
async fn gemini_down_for_good_ends_failed_and_dead_lettered() {
    let (url, dlq) = queue_pair(2).await;
    let app = sqs_app(&url, &dlq, 2).await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("dlq")).await;
    let room = app.create_chatroom(&token, Some("dlq")).await;
    let sent = app.send_message(&token, &room, "anyone?").await;
    let id = sent.body["message"]["id"].as_str().unwrap().to_string();

    for delivery in 1..=2 {
        let (event, handles) = receive_event(&url).await;
        assert_eq!(handles.len(), 1, "delivery {delivery}");
        let resp = reply_worker_fn::handle_batch(&app.worker, event).await;
        assert_eq!(failures(&resp).len(), 1);
        settle(&url, &handles, &failures(&resp)).await;
    }
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "failed");
    assert!(
        r.body["message"]["failure_reason"]
            .as_str()
            .unwrap()
            .contains("2 deliveries")
    );
    // The next receive moves the record to the dead-letter queue.
    let (_, handles) = receive_event(&url).await;
    assert!(handles.is_empty());
    let (event, dead) = receive_event(&dlq).await;
    assert_eq!(dead.len(), 1);
    // The dead-letter consumer finds the message already failed and keeps its reason.
    let resp = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert!(failures(&resp).is_empty());
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert!(
        r.body["message"]["failure_reason"]
            .as_str()
            .unwrap()
            .contains("2 deliveries")
    );
}

#[tokio::test]
async fn worker_crashing_on_every_delivery_ends_failed_through_the_dead_letter_queue() {
    let (url, dlq) = queue_pair(2).await;
    let app = sqs_app(&url, &dlq, 2).await;
    let token = app.user_token(&unique_email("crash")).await;
    let room = app.create_chatroom(&token, Some("crash")).await;
    let sent = app
        .send_message(&token, &room, "will the worker survive?")
        .await;
    let id = sent.body["message"]["id"].as_str().unwrap().to_string();

    // Two deliveries that never finish (a crash or a timeout: nothing is deleted).
    for delivery in 1..=2 {
        let (_, handles) = receive_event(&url).await;
        assert_eq!(handles.len(), 1, "delivery {delivery}");
    }
    let (_, handles) = receive_event(&url).await;
    assert!(handles.is_empty(), "moved to the dead-letter queue");
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "pending");

    let (event, dead) = receive_event(&dlq).await;
    assert_eq!(dead.len(), 1);
    let resp = reply_worker_fn::handle_batch(&app.worker, event).await;
    assert!(failures(&resp).is_empty(), "{resp:?}");
    settle(&dlq, &dead, &[]).await;
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "failed");
    assert_eq!(
        r.body["message"]["failure_reason"],
        shared::chat::worker::DEAD_LETTER_REASON
    );
    assert!(r.body["reply"].is_null());
}

#[tokio::test]
async fn rate_limited_then_answered() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {
            "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}]}})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&app.gemini)
        .await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("after waiting")))
        .with_priority(5)
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("429")).await;
    let room = app.create_chatroom(&token, Some("busy")).await;
    app.send_message(&token, &room, "hi").await;
    let done = app.run_worker().await;
    assert_eq!(done[0].1, Ok(Outcome::Answered));
    assert_eq!(app.gemini.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn safety_block_marks_blocked() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        )
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("block")).await;
    let room = app.create_chatroom(&token, Some("blocked")).await;
    let r = app.send_message(&token, &room, "something bad").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Blocked));
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "blocked");
    assert_eq!(r.body["reply"]["finish_reason"], "SAFETY");
    assert!(
        r.body["reply"]["content"]
            .as_str()
            .unwrap()
            .contains("safety")
    );
}

#[tokio::test]
async fn bad_request_marks_failed_without_retry() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad request"}}),
        ))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("400")).await;
    let room = app.create_chatroom(&token, Some("bad")).await;
    let r = app.send_message(&token, &room, "hi").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();
    let done = app.run_worker().await;
    assert!(matches!(done[0].1, Ok(Outcome::Failed(_))));
    assert_eq!(
        app.gemini.received_requests().await.unwrap().len(),
        1,
        "not retried"
    );
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "failed");
    // A stable code and a sentence: the upstream error text stays in the logs.
    let reason = r.body["message"]["failure_reason"].as_str().unwrap();
    assert_eq!(reason, shared::chat::model::failure::MODEL_REFUSED);
    assert!(!reason.contains("INVALID_ARGUMENT") && !reason.contains("bad request"));
    assert!(r.body["reply"].is_null());
    // The day's unit came back with the failure.
    let usage = app.get("/subscription/status", &token).await;
    assert_eq!(usage.body["usage"]["used_today"], 0, "{}", usage.body);
}

#[tokio::test]
async fn a_reply_that_fails_gives_the_unit_back_and_operator_errors_are_not_charged() {
    let app = TestApp::spawn().await;
    // Gemini refuses the service's key: the operator's fault.
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(403).set_body_json(
            json!({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "API key not valid"}}),
        ))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("operator")).await;
    let room = app.create_chatroom(&token, Some("op")).await;
    let r = app.send_message(&token, &room, "hello").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();
    let used = || async {
        app.get("/subscription/status", &token).await.body["usage"]["used_today"].clone()
    };
    assert_eq!(used().await, 1);
    let job = app.take_jobs().await.remove(0);
    let max = app.state.config.max_receive_count;
    // Every delivery, the last one too, leaves the message pending and retryable.
    for delivery in [1, max] {
        let result = app.worker.process(job, delivery).await;
        assert!(
            matches!(&result, Err(r) if r.0.starts_with("operator error")),
            "{result:?}"
        );
        let r = app
            .get(&format!("/chatroom/{room}/messages/{id}"), &token)
            .await;
        assert_eq!(
            r.body["message"]["status"], "pending",
            "delivery {delivery}"
        );
    }
    assert_eq!(
        used().await,
        1,
        "not charged back yet: the message may still be answered"
    );
    // Its deliveries spent, the dead-letter consumer ends it; the unit comes back.
    assert!(matches!(
        app.worker.dead_letter(job).await,
        Ok(Outcome::Failed(_))
    ));
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "failed");
    assert_eq!(
        r.body["message"]["failure_reason"],
        shared::chat::model::failure::DEAD_LETTERED
    );
    assert_eq!(used().await, 0);
}

#[tokio::test]
async fn max_tokens_keeps_partial_text() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"candidates": [{
            "content": {"role": "model", "parts": [{"text": "The beginning of"}]}, "finishReason": "MAX_TOKENS"}]})))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("maxtok")).await;
    let room = app.create_chatroom(&token, Some("long")).await;
    let r = app.send_message(&token, &room, "write an essay").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();
    app.run_worker().await;
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "answered");
    assert_eq!(r.body["reply"]["content"], "The beginning of");
    assert_eq!(r.body["reply"]["finish_reason"], "MAX_TOKENS");
}
