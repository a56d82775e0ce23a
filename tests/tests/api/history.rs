//! The conversation sent to Gemini is well-formed: strictly alternating user/model
//! turns, each reply right after the message it answers.

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use serde_json::{Value, json};
use shared::chat::worker::Outcome;
use shared::clients::queue::ReplyJob;
use uuid::Uuid;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

/// Answers "re: <last user turn>", so each stored reply names the message it answers.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let last = body["contents"].as_array().unwrap().last().unwrap()["parts"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        ResponseTemplate::new(200).set_body_json(gemini_text(&format!("re: {last}")))
    }
}

/// The (role, text) turns of the last conversation sent to Gemini.
async fn last_conversation(app: &TestApp) -> Vec<(String, String)> {
    let requests = app.gemini.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests.last().unwrap().body).unwrap();
    body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap().to_string(),
                t["parts"][0]["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn turns(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(r, t)| (r.to_string(), t.to_string()))
        .collect()
}

async fn send(app: &TestApp, token: &str, room: &str, text: &str) -> Uuid {
    let r = app.send_message(token, room, text).await;
    r.body["message"]["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_blocked_prompt_leaves_the_history_with_its_reply() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .and(body_string_contains("forbidden question"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        )
        .with_priority(1)
        .mount(&app.gemini)
        .await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(Echo)
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("blockedhist")).await;
    let room = app.create_chatroom(&token, Some("h")).await;

    send(&app, &token, &room, "hello").await;
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Answered));
    send(&app, &token, &room, "forbidden question").await;
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Blocked));
    send(&app, &token, &room, "next").await;
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Answered));

    assert_eq!(
        last_conversation(&app).await,
        turns(&[("user", "hello"), ("model", "re: hello"), ("user", "next")])
    );
}

#[tokio::test]
async fn replies_follow_the_message_they_answer_when_stored_out_of_order() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(Echo)
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("orderhist")).await;
    let room = app.create_chatroom(&token, Some("h")).await;

    // Two messages sent quickly; the second is answered first.
    let first = send(&app, &token, &room, "first").await;
    let second = send(&app, &token, &room, "second").await;
    for id in [second, first] {
        let done = app.worker.process(ReplyJob { message_id: id }, 1).await;
        assert_eq!(done, Ok(Outcome::Answered));
    }
    app.run_worker().await; // the queued jobs, now redeliveries of finished work
    send(&app, &token, &room, "third").await;
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Answered));

    assert_eq!(
        last_conversation(&app).await,
        turns(&[
            ("user", "first"),
            ("model", "re: first"),
            ("user", "second"),
            ("model", "re: second"),
            ("user", "third"),
        ])
    );
}
