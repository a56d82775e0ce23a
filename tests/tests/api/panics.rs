//! A panic answers for one record only: the worker's other records are answered, and
//! the panicking one alone is reported for redelivery.

use std::sync::Arc;

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use shared::chat::model::{ModelError, ModelReply, Prompt, ReplyModel};
use shared::chat::worker::Worker;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

/// Gemini for every message but the poison one, which panics (a bug that one record's
/// data triggers).
struct PoisonedModel(Arc<dyn ReplyModel>);

#[async_trait::async_trait]
impl ReplyModel for PoisonedModel {
    async fn reply(&self, prompt: &Prompt) -> Result<ModelReply, ModelError> {
        if prompt.turns.last().is_some_and(|t| t.text == "poison") {
            panic!("a bug triggered by this record");
        }
        self.0.reply(prompt).await
    }

    async fn title(&self, user_text: &str, reply_text: &str) -> Result<String, ModelError> {
        self.0.title(user_text, reply_text).await
    }
}

fn record(id: &str, message_id: &str) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.message_id = Some(id.into());
    r.body = Some(format!(r#"{{"message_id":"{message_id}"}}"#));
    r
}

#[tokio::test]
async fn a_record_that_panics_fails_alone() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("fine")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("poison")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("p")).await;
    let mut ids = Vec::new();
    for text in ["one", "poison", "two"] {
        let r = app.send_message(&token, &room, text).await;
        ids.push(r.body["message"]["id"].as_str().unwrap().to_string());
    }
    let worker = Worker {
        state: app.state.clone(),
        model: Arc::new(PoisonedModel(app.worker.model.clone())),
    };
    let mut event = SqsEvent::default();
    event.records = vec![
        record("r-1", &ids[0]),
        record("r-poison", &ids[1]),
        record("r-2", &ids[2]),
    ];

    let response = reply_worker_fn::handle_batch(&worker, event).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ["r-poison"]);
    let statuses: Vec<String> = app
        .db()
        .await
        .query(
            "SELECT status FROM messages WHERE role = 'user' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["answered", "pending", "answered"]);
}

/// The shipped binaries are built with the release profile; tests always unwind, so the
/// isolation above holds in production only if the release profile unwinds too (with
/// `panic = "abort"` the first panic would end the whole batch, and the process).
#[test]
fn the_release_profile_unwinds() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    let release = manifest
        .split("\n[")
        .find(|section| section.starts_with("profile.release]"))
        .expect("a [profile.release] section");
    let panic = release
        .lines()
        .find_map(|l| l.trim().strip_prefix("panic"))
        .map(|v| v.trim_start_matches([' ', '=']).trim().trim_matches('"'));
    assert!(
        matches!(panic, None | Some("unwind")),
        "release profile has panic = {panic:?}"
    );
}
