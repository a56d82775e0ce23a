//! Idempotent retries behave as promised: a retry while the first request is still in
//! flight is never refused by the daily cap, and every retry answer carries the
//! `RateLimit-*` headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_tests::{TestApp, TestResponse, unique_email};
use axum::http::StatusCode;

fn assert_rate_headers(r: &TestResponse, remaining: &str) {
    assert_eq!(r.headers["ratelimit-limit"], "5", "{:?}", r.headers);
    assert_eq!(
        r.headers["ratelimit-remaining"], remaining,
        "{:?}",
        r.headers
    );
    assert!(r.headers.contains_key("ratelimit-reset"), "{:?}", r.headers);
}

#[tokio::test]
async fn a_retry_in_flight_at_the_cap_gets_409_then_the_original_202() {
    let app = Arc::new(TestApp::spawn().await);
    let token = app.user_token(&unique_email("inflight")).await;
    let room = app.create_chatroom(&token, Some("inflight")).await;
    for i in 0..4 {
        let r = app.send_message(&token, &room, &format!("m{i}")).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }

    // Hold the fifth request inside its transaction: its idempotency record waits on
    // this lock (reads of the table are not blocked).
    let locker = app.db().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE idempotency_keys IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = {
        let (app, token, room) = (app.clone(), token.clone(), room.clone());
        tokio::spawn(async move { app.send_with_key(&token, &room, "k-5", "fifth").await })
    };
    let waiting = Instant::now();
    while locker
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(waiting.elapsed() < Duration::from_secs(10), "never blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The first request holds the last unit: its retry is told to wait, not refused.
    let retry = app.send_with_key(&token, &room, "k-5", "fifth").await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "{}", retry.body);
    assert_eq!(retry.error_code(), "request_in_progress");
    assert_eq!(retry.headers["retry-after"], "1");
    assert_rate_headers(&retry, "0");

    locker.batch_execute("COMMIT").await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_rate_headers(&first, "0");

    // Once it is answered, the retry gets the original 202, with the headers.
    let retry = app.send_with_key(&token, &room, "k-5", "fifth").await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_rate_headers(&retry, "0");
    // A key reused for another request: 409, with the headers too.
    let reused = app
        .send_with_key(&token, &room, "k-5", "something else")
        .await;
    assert_eq!(reused.status, StatusCode::CONFLICT);
    assert_eq!(reused.error_code(), "idempotency_key_reused");
    assert_rate_headers(&reused, "0");
    // A new request is refused by the cap as before.
    let sixth = app.send_with_key(&token, &room, "k-6", "sixth").await;
    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);

    assert_eq!(app.count("SELECT count(*) FROM messages").await, 5);
    assert_eq!(app.used_today(&token).await, 5);
}

#[test]
fn readme_and_code_agree_on_the_in_flight_mark() {
    // docs/api.md once said 15 s while the code held the mark 35 s.
    let doc = std::fs::read_to_string("../docs/api.md").expect("docs/api.md");
    let stated = format!(
        "tracked by a {} s Redis mark",
        shared::chat::idempotency::IN_FLIGHT_SECS
    );
    assert!(doc.contains(&stated), "docs/api.md must say `{stated}`");
}
