//! Fault injection against real services: Redis and PostgreSQL stopped mid-traffic,
//! Gemini flapping, the queue unreachable. Each test is bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_tests::faults::{TempPostgres, TempRedis};
use api_tests::{TestApp, gemini_path, gemini_text, test_config, unique_email};
use axum::http::StatusCode;
use shared::chat::worker::Outcome;
use shared::clients::queue::sqs::SqsQueue;
use shared::config::Secret;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn redis_stopped_mid_traffic_degrades_then_recovers() {
    let started = Instant::now();
    let mut redis = TempRedis::start().await;
    let database_url = api_tests::fresh_database().await;
    let mut config = test_config(&database_url);
    config.redis_url = Secret::new(redis.url());
    let app = Arc::new(TestApp::from_config(config).await);
    let token = app.user_token(&unique_email("redisfault")).await;
    let room = app.create_chatroom(&token, Some("r")).await;
    assert_eq!(
        app.get("/chatroom", &token).await.headers["x-cache"],
        "miss"
    );
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");
    assert_eq!(
        app.send_message(&token, &room, "before").await.status,
        StatusCode::ACCEPTED
    );

    redis.kill().await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (app, token, room) = (app.clone(), token.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => ("list", app.get("/chatroom", &token).await),
                1 => ("get", app.get(&format!("/chatroom/{room}"), &token).await),
                _ => ("send", app.send_message(&token, &room, "during").await),
            }
        }));
    }
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        match kind {
            "list" | "get" => assert_eq!(
                r.status,
                StatusCode::OK,
                "{kind} falls back to Postgres: {}",
                r.body
            ),
            _ => {
                assert_eq!(
                    r.status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "send fails closed: {}",
                    r.body
                );
                assert_eq!(r.error_code(), "cache_unavailable");
            }
        }
    }
    let stored = app.count("SELECT count(*) FROM messages").await;
    assert_eq!(stored, 1, "nothing stored for refused sends");

    redis.resume().await;
    // No restart of the app: the connection manager reconnects by itself.
    loop {
        let r = app.send_message(&token, &room, "after").await;
        if r.status == StatusCode::ACCEPTED {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no recovery: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.get("/chatroom", &token).await.headers["x-cache"],
        "miss"
    );
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");
}

#[tokio::test]
async fn postgres_restarted_mid_traffic_is_503_then_recovers_losing_nothing() {
    let started = Instant::now();
    let pg = TempPostgres::start().await;
    shared::store::postgres::migrate(&pg.url(), None)
        .await
        .unwrap();
    let config = test_config(&pg.url());
    let app = Arc::new(TestApp::from_config(config).await);
    let token = app.user_token(&unique_email("pgfault")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("p")).await;

    let stop = Arc::new(tokio::sync::Notify::new());
    let traffic = {
        let (app, token, room, stop) = (app.clone(), token.clone(), room.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut unavailable = 0;
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    r = app.send_message(&token, &room, "under fire") => {
                        match r.status {
                            StatusCode::ACCEPTED => accepted.push(r.body["message"]["id"].as_str().unwrap().to_string()),
                            StatusCode::SERVICE_UNAVAILABLE => {
                                assert_eq!(r.error_code(), "database_unavailable");
                                unavailable += 1;
                            }
                            other => panic!("unexpected {other}: {}", r.body),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (accepted, unavailable)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop().await;
    let r = app.get("/user/me", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error_code(), "database_unavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.resume().await;
    // The pool replaces its dead connections by itself.
    loop {
        if app.get("/user/me", &token).await.status == StatusCode::OK {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the pool did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_one();
    let (accepted, unavailable) = traffic.await.unwrap();
    assert!(unavailable > 0, "the outage was seen");
    assert!(!accepted.is_empty());
    let db = app.db().await;
    for id in &accepted {
        let id: uuid::Uuid = id.parse().unwrap();
        let n: i64 = db
            .query_one("SELECT count(*) FROM messages WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "a message that got 202 was lost");
    }
}

#[tokio::test]
async fn gemini_flapping_then_healthy_answers_everything() {
    // Each delivery makes one call (the budget is too short to retry inside it), so the
    // four 503s cost the first message four deliveries out of five.
    let app = TestApp::spawn_with(|c| {
        c.gemini.retry_budget = Duration::from_millis(300);
        c.max_receive_count = 5;
    })
    .await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(4)
        .with_priority(1)
        .mount(&app.gemini)
        .await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("back")))
        .with_priority(5)
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("flap")).await;
    let room = app.create_chatroom(&token, Some("f")).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = app.send_message(&token, &room, &format!("q{i}")).await;
        ids.push(
            r.body["message"]["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    // Deliver each job as SQS would: again after a failure, up to the receive count.
    let max = app.state.config.max_receive_count;
    for id in ids.iter().copied() {
        let mut delivered = false;
        for receive in 1..=max {
            match app
                .worker
                .process(shared::clients::queue::ReplyJob { message_id: id }, receive)
                .await
            {
                Ok(outcome) => {
                    assert_eq!(outcome, Outcome::Answered);
                    delivered = true;
                    break;
                }
                Err(_) => continue,
            }
        }
        assert!(delivered, "{id} never answered");
    }
    let statuses: Vec<String> = app
        .db()
        .await
        .query("SELECT status FROM messages WHERE role = 'user'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, vec!["answered"; 3]);
}

#[tokio::test]
async fn queue_endpoint_down_is_503_and_the_unit_comes_back() {
    let app = TestApp::spawn_full(
        |_| {},
        |s| {
            let sqs = aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::Config::builder()
                    .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                    .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                    .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                        "t", "t", None, None, "t",
                    ))
                    .endpoint_url("http://127.0.0.1:9")
                    .build(),
            );
            s.queue = Some(Arc::new(SqsQueue::with_client(
                sqs,
                "http://127.0.0.1:9/000000000000/replies".into(),
            )));
        },
    )
    .await;
    let token = app.user_token(&unique_email("sqsdead")).await;
    let room = app.create_chatroom(&token, Some("q")).await;
    let r = app.send_message(&token, &room, "hello?").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error_code(), "queue_unavailable");
    let r = app.get("/subscription/status", &token).await;
    assert_eq!(r.body["usage"]["used_today"], 0);
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.body["messages"][0]["status"], "failed");
}

#[tokio::test]
async fn streams_end_on_time_even_when_redis_hangs() {
    let redis = TempRedis::start().await;
    let mut config = test_config(&api_tests::fresh_database().await);
    config.redis_url = Secret::new(redis.url());
    config.stream_max = Duration::from_secs(3);
    let app = TestApp::from_config(config).await;
    let token = app.user_token(&unique_email("hang")).await;
    let room = app.create_chatroom(&token, Some("h")).await;
    let sent = app.send_message(&token, &room, "waiting for a reply").await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);
    let id = sent.body["message"]["id"].as_str().unwrap().to_string();
    let (status, _, mut reader) = app.open_stream(&token, &room, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    let started = Instant::now();
    redis.freeze();
    let events = reader.rest(Duration::from_secs(30)).await;
    let took = started.elapsed();
    redis.thaw();
    assert!(
        took < Duration::from_secs(12),
        "the stream stayed open {took:?} with Redis hung: {events:?}"
    );
}
