//! A chatroom's latest activity is read from its newest message (V6): the list's order,
//! the `last_activity_at` field and the cache's invalidation must stay as documented,
//! while sending and replying leave the chatroom row untouched.

use std::time::Duration;

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::chat::worker::Outcome;
use shared::clients::queue::ReplyJob;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap()
}

/// The list's ids in order, and the list itself.
async fn list(app: &TestApp, token: &str) -> (Vec<String>, Value) {
    let r = app.get("/chatroom", token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ids = r.body["chatrooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    (ids, r.body)
}

fn room<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["chatrooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"))
}

#[tokio::test]
async fn list_order_and_last_activity_follow_messages_and_replies() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("A reply.")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("activity")).await;
    let a = app.create_chatroom(&token, Some("A")).await;
    let b = app.create_chatroom(&token, Some("B")).await;
    let c = app.create_chatroom(&token, Some("C")).await;

    // No messages yet: activity is creation, newest first.
    let (ids, body) = list(&app, &token).await;
    assert_eq!(ids, [c.as_str(), b.as_str(), a.as_str()]);
    for id in [&a, &b, &c] {
        let r = room(&body, id);
        assert_eq!(time(&r["last_activity_at"]), time(&r["created_at"]));
    }

    // A message makes its chatroom the newest, at the message's time.
    let sent_a = app.send_message(&token, &a, "first in A").await;
    assert_eq!(sent_a.status, StatusCode::ACCEPTED, "{}", sent_a.body);
    let (ids, body) = list(&app, &token).await;
    assert_eq!(ids, [a.as_str(), c.as_str(), b.as_str()]);
    assert_eq!(
        time(&room(&body, &a)["last_activity_at"]),
        time(&sent_a.body["message"]["created_at"])
    );
    let sent_b = app.send_message(&token, &b, "first in B").await;
    assert_eq!(sent_b.status, StatusCode::ACCEPTED, "{}", sent_b.body);
    assert_eq!(
        list(&app, &token).await.0,
        [b.as_str(), a.as_str(), c.as_str()]
    );

    // A reply is activity too: answering only A's message puts A back on top.
    let a_message: Uuid = sent_a.body["message"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let outcome = app
        .worker
        .process(
            ReplyJob {
                message_id: a_message,
            },
            1,
        )
        .await;
    assert_eq!(outcome, Ok(Outcome::Answered));
    let (ids, body) = list(&app, &token).await;
    assert_eq!(ids, [a.as_str(), b.as_str(), c.as_str()]);
    let shown = app.get(&format!("/chatroom/{a}"), &token).await;
    let messages = shown.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["role"], "model");
    let a_activity = time(&room(&body, &a)["last_activity_at"]);
    assert_eq!(a_activity, time(&messages[1]["created_at"]));
    // The detail view says the same as the list.
    assert_eq!(
        time(&shown.body["chatroom"]["last_activity_at"]),
        a_activity
    );

    // Renaming is not activity: the order and the time stay, `updated_at` moves.
    let r = app
        .call(
            Method::PATCH,
            &format!("/chatroom/{c}"),
            Some(json!({ "name": "C2" })),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let renamed = &r.body["chatroom"];
    assert_eq!(
        time(&renamed["last_activity_at"]),
        time(&renamed["created_at"])
    );
    assert!(time(&renamed["updated_at"]) > time(&renamed["created_at"]));
    assert_eq!(
        list(&app, &token).await.0,
        [a.as_str(), b.as_str(), c.as_str()]
    );

    // B's reply comes last and wins.
    app.run_worker().await;
    assert_eq!(
        list(&app, &token).await.0,
        [b.as_str(), a.as_str(), c.as_str()]
    );
}

#[tokio::test]
async fn sending_and_replying_never_write_the_chatroom_row() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("Sure.")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("hotrow")).await;
    // Named, so that no title is written either.
    let id = app.create_chatroom(&token, Some("quiet")).await;
    let room: Uuid = id.parse().unwrap();
    let db = app.db().await;
    // A new row version (any UPDATE) gets a new xmin and, here, a new ctid.
    let version = || async {
        let row = db
            .query_one(
                "SELECT xmin::text, ctid::text FROM chatrooms WHERE id = $1",
                &[&room],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };
    let before = version().await;
    for i in 0..3 {
        let r = app.send_message(&token, &id, &format!("message {i}")).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let done = app.run_worker().await;
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|(_, o)| *o == Ok(Outcome::Answered)));
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE status IN ('answered', 'complete')")
            .await,
        6
    );
    assert_eq!(version().await, before, "the chatroom row was rewritten");
}

/// Fills the cache and checks that the next read is served from it.
async fn cached(app: &TestApp, token: &str) {
    app.get("/chatroom", token).await;
    assert_eq!(app.get("/chatroom", token).await.headers["x-cache"], "hit");
}

async fn is_miss(app: &TestApp, token: &str, after: &str) {
    assert_eq!(
        app.get("/chatroom", token).await.headers["x-cache"],
        "miss",
        "{after} did not invalidate the list"
    );
}

/// Beside `chat::list_is_cached_and_invalidated` (create, send, reply, rename, delete):
/// the replies that end a message `failed`, and the last activity read afterwards.
#[tokio::test]
async fn failed_and_stored_replies_invalidate_the_list() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("invalidate")).await;
    let room = app.create_chatroom(&token, Some("R")).await;

    // A send, then a reply the model refuses: the message ends `failed`.
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": { "code": 400, "status": "INVALID_ARGUMENT", "message": "no" }
        })))
        .mount(&app.gemini)
        .await;
    cached(&app, &token).await;
    let sent = app.send_message(&token, &room, "refused").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    is_miss(&app, &token, "a send").await;
    cached(&app, &token).await;
    let done = app.run_worker().await;
    assert!(matches!(done[0].1, Ok(Outcome::Failed(_))), "{done:?}");
    is_miss(&app, &token, "a failed reply").await;
    // Failing is no activity: the message's time stays the chatroom's.
    let (_, body) = list(&app, &token).await;
    assert_eq!(
        time(&room_of(&body, &room)["last_activity_at"]),
        time(&sent.body["message"]["created_at"])
    );

    // A stored reply.
    app.gemini.reset().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("ok")))
        .mount(&app.gemini)
        .await;
    app.send_message(&token, &room, "answered").await;
    cached(&app, &token).await;
    assert_eq!(app.run_worker().await[0].1, Ok(Outcome::Answered));
    is_miss(&app, &token, "a reply").await;
    let (_, body) = list(&app, &token).await;
    let shown = app.get(&format!("/chatroom/{room}"), &token).await;
    let last = shown.body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["role"], "model");
    assert_eq!(
        time(&room_of(&body, &room)["last_activity_at"]),
        time(&last["created_at"])
    );
}

fn room_of<'a>(list: &'a Value, id: &str) -> &'a Value {
    room(list, id)
}

/// The send no longer locks the chatroom row with an UPDATE; a deletion committed while
/// the insert waits on its foreign-key check must still answer 404 (not 500) and store
/// nothing.
#[tokio::test]
async fn a_send_racing_the_chatroom_deletion_is_404() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("race")).await;
    app.set_tier(&token, "pro").await;
    let id = app.create_chatroom(&token, Some("doomed")).await;
    let room: Uuid = id.parse().unwrap();
    let mut deleter = app.db().await;
    let tx = deleter.transaction().await.unwrap();
    tx.execute("DELETE FROM chatrooms WHERE id = $1", &[&room])
        .await
        .unwrap();
    let send = {
        let (router, token, id) = (app.router.clone(), token.clone(), id.clone());
        tokio::spawn(async move {
            let request = axum::http::Request::post(format!("/chatroom/{id}/message"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(r#"{"content":"hello"}"#))
                .unwrap();
            TestApp::send_to(router, request).await
        })
    };
    // Wait until the send is blocked on the deleted row's lock, then commit the delete.
    let watcher = app.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the send never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();
    let r = send.await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.error_code(), "not_found");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

/// One writer per message: two deliveries of one job at the same time (SQS may deliver
/// twice): the first claims a lease, the second finds it live and skips, so Gemini is
/// called once and one reply is stored.
#[tokio::test]
async fn one_writer_per_message() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(gemini_text("only once"))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("twice")).await;
    let room = app.create_chatroom(&token, Some("twice")).await;
    let sent = app.send_message(&token, &room, "hello").await;
    let message_id: Uuid = sent.body["message"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let job = || ReplyJob { message_id };
    let (first, second) = tokio::join!(app.worker.process(job(), 1), app.worker.process(job(), 2));
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [
            Outcome::Answered,
            Outcome::Skipped("another delivery is answering it")
        ]
    );
    assert_eq!(
        app.gemini.received_requests().await.unwrap().len(),
        1,
        "Gemini is asked (and billed) once"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'model'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE role = 'user' AND status = 'answered'")
            .await,
        1
    );
}
