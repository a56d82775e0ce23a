//! The runbook's Logs Insights queries (docs/operations.md) against the logs as the code
//! writes them: real code paths (a retried job, a job given up, a dead letter, a sweep,
//! Redis and the database unreachable) logged through the functions' own JSON subscriber
//! (`shared::telemetry::json_subscriber`), every field each query reads
//! (docs/logs-insights-fields.json) found in those lines.

use std::io::Write;
use std::sync::{Arc, Mutex};

use api_tests::{TestApp, gemini_path, test_config, unique_email};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::Value;
use shared::config::Secret;
use tracing::Instrument;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn record(id: &str, message_id: &str, receive_count: u32, source: Option<&str>) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = Some(id.into());
    r.body = Some(format!(r#"{{"message_id":"{message_id}"}}"#));
    r.attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    r.event_source_arn = source.map(str::to_owned);
    r
}

async fn deliver(app: &TestApp, records: Vec<SqsMessage>) {
    let mut event = SqsEvent::default();
    event.records = records;
    reply_worker_fn::handle_event(&app.worker, serde_json::to_value(event).unwrap())
        .await
        .unwrap();
}

/// `fields.message_id` in `line`, following the dotted path (numbers index arrays).
fn has(line: &Value, path: &str) -> bool {
    let mut at = line;
    for part in path.split('.') {
        at = match part.parse::<usize>() {
            Ok(i) => match at.get(i) {
                Some(v) => v,
                None => return false,
            },
            Err(_) => match at.get(part) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    !at.is_null()
}

#[tokio::test]
async fn logs_insights_queries_match_the_logs_as_written() {
    let captured = Capture::default();
    let writer = captured.clone();
    // This test's thread only (a current-thread runtime: its tasks log here too).
    let _guard = tracing::subscriber::set_default(shared::telemetry::json_subscriber(
        Some("info"),
        move || writer.clone(),
    ));
    // The span lambda_runtime opens around every invocation (its layers/trace.rs).
    let invocation = tracing::info_span!("Lambda runtime invoke", requestId = "req-logs-test");
    async {
        const DLQ: &str = "arn:aws:sqs:eu-west-1:123456789012:replies-dlq";
        let app = TestApp::spawn_with(|c| c.dead_letter_queue_arn = Some(DLQ.into())).await;
        Mock::given(method("POST"))
            .and(gemini_path())
            .respond_with(ResponseTemplate::new(500))
            .mount(&app.gemini)
            .await;
        let token = app.user_token(&unique_email("logs")).await;
        app.set_tier(&token, "pro").await;
        let room = app.create_chatroom(&token, Some("logs")).await;
        let mut ids = Vec::new();
        for text in ["retried, then given up", "dead-lettered"] {
            let r = app.send_message(&token, &room, text).await;
            ids.push(r.body["message"]["id"].as_str().unwrap().to_string());
        }
        app.take_jobs().await;
        let max = app.state.config.max_receive_count;
        deliver(&app, vec![record("r-1", &ids[0], 1, None)]).await; // will be retried
        deliver(&app, vec![record("r-2", &ids[0], max, None)]).await; // giving up
        deliver(&app, vec![record("r-3", &ids[1], 1, Some(DLQ))]).await; // dead-lettered
        app.worker.sweep().await.unwrap(); // sweep done
        // Gemini back: a reply stored.
        app.gemini.reset().await;
        Mock::given(method("POST"))
            .and(gemini_path())
            .respond_with(ResponseTemplate::new(200).set_body_json(api_tests::gemini_text("Fine.")))
            .mount(&app.gemini)
            .await;
        let r = app.send_message(&token, &room, "answered").await;
        let answered = r.body["message"]["id"].as_str().unwrap().to_string();
        app.take_jobs().await;
        deliver(&app, vec![record("r-4", &answered, 1, None)]).await; // reply stored

        // Redis unreachable, then the database.
        let mut config = test_config(&app.database_url);
        config.redis_url = Secret::new("redis://127.0.0.1:1/");
        let no_redis = TestApp::from_config(config).await;
        no_redis.send_message(&token, &room, "no redis").await;
        let mut config = test_config(&app.database_url);
        config.database_url = Secret::new("postgres://postgres@127.0.0.1:1/nothing");
        let no_db = TestApp::from_config(config).await;
        no_db.get("/chatroom", &token).await;
    }
    .instrument(invocation)
    .await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{text}");
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.pointer("/fields/message").and_then(Value::as_str))
        .collect();
    // The strings the queries match on.
    for wanted in [
        "will be retried",
        "giving up; message failed",
        "dead-lettered; message failed",
        "failed permanently",
        "sweep done",
        "reply stored",
        "database connection failure",
        "redis unavailable",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(wanted)),
            "no `{wanted}` in {messages:#?}"
        );
    }
    let queries: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string("../docs/logs-insights-fields.json").unwrap(),
    )
    .unwrap();
    assert!(!queries.is_empty());
    for (query, fields) in &queries {
        for field in fields.as_array().unwrap() {
            let field = field.as_str().unwrap();
            assert!(
                lines.iter().any(|l| has(l, field)),
                "query `{query}` reads `{field}`, which no log line has"
            );
        }
    }
}
