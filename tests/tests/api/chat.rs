//! Chatrooms and messages over HTTP, with the worker answering through a fake Gemini.

use std::time::Duration;

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::chat::worker::Outcome;
use wiremock::matchers::{header, method};
use wiremock::{Mock, ResponseTemplate};

async fn answer_with(app: &TestApp, text: &str) {
    Mock::given(method("POST"))
        .and(gemini_path())
        .and(header("x-goog-api-key", "test-gemini-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text(text)))
        .mount(&app.gemini)
        .await;
}

#[tokio::test]
async fn send_reply_and_read_with_history_as_context() {
    let app = TestApp::spawn().await;
    answer_with(&app, "Hi! How can I help?").await;
    let token = app.user_token(&unique_email("flow")).await;
    let room = app.create_chatroom(&token, Some("  Travel plans  ")).await;

    let r = app.send_message(&token, &room, "Hello there").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let m = &r.body["message"];
    assert_eq!(m["role"], "user");
    assert_eq!(m["content"], "Hello there");
    assert_eq!(m["status"], "pending");
    assert!(m["id"].is_string() && m["created_at"].is_string());
    let first_id = m["id"].as_str().unwrap().to_string();

    let done = app.run_worker().await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, Ok(Outcome::Answered));

    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["chatroom"]["name"], "Travel plans");
    let msgs = r.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["status"], "answered");
    assert_eq!(msgs[1]["role"], "model");
    assert_eq!(msgs[1]["content"], "Hi! How can I help?");
    assert_eq!(msgs[1]["reply_to"], first_id.as_str());

    let r = app
        .get(&format!("/chatroom/{room}/messages/{first_id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "answered");
    assert_eq!(r.body["reply"]["content"], "Hi! How can I help?");

    // The second request carries the first exchange as context.
    app.send_message(&token, &room, "Plan a trip to Oslo").await;
    app.run_worker().await;
    let requests = app.gemini.received_requests().await.unwrap();
    let last: Value = serde_json::from_slice(&requests.last().unwrap().body).unwrap();
    let contents = last["contents"].as_array().unwrap();
    let turns: Vec<(&str, &str)> = contents
        .iter()
        .map(|c| {
            (
                c["role"].as_str().unwrap(),
                c["parts"][0]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        vec![
            ("user", "Hello there"),
            ("model", "Hi! How can I help?"),
            ("user", "Plan a trip to Oslo")
        ]
    );
    assert!(last["systemInstruction"]["parts"][0]["text"].is_string());
}

#[tokio::test]
async fn unnamed_chatroom_is_titled_from_first_exchange() {
    let app = TestApp::spawn().await;
    answer_with(&app, "Norway in Spring").await;
    let token = app.user_token(&unique_email("title")).await;
    let r = app
        .call(Method::POST, "/chatroom", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body["chatroom"]["name"].is_null());
    let room = r.body["chatroom"]["id"].as_str().unwrap().to_string();
    app.send_message(&token, &room, "Help me plan a trip to Norway in April")
        .await;
    app.run_worker().await;
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.body["chatroom"]["name"], "Norway in Spring");
    // Two model calls: the reply, then the title.
    assert_eq!(app.gemini.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn chatroom_validation_rename_and_delete() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("crud")).await;
    for bad in [
        json!({ "name": "   " }),
        json!({ "name": "x".repeat(101) }),
        json!({ "name": 5 }),
    ] {
        let r = app
            .call(Method::POST, "/chatroom", Some(bad), Some(&token))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.error_code(), "validation_error");
    }
    let room = app.create_chatroom(&token, Some("Old")).await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/chatroom/{room}"),
            Some(json!({ "name": " New " })),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["chatroom"]["name"], "New");

    for bad in ["", "   ", &"y".repeat(4001)] {
        let r = app.send_message(&token, &room, bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    }
    let r = app.send_message(&token, &room, &"é".repeat(4000)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let r = app
        .call(
            Method::DELETE,
            &format!("/chatroom/{room}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let left = app.count("SELECT count(*) FROM messages").await;
    assert_eq!(left, 0, "messages go with their chatroom");
    let r = app
        .call(
            Method::DELETE,
            &format!("/chatroom/{room}"),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/chatroom/not-a-uuid", &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_request");
    // The capped routes too, and a missing token is told first, as everywhere.
    let r = app.send_message(&token, "not-a-uuid", "hi").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = app
        .call(
            Method::POST,
            "/chatroom/not-a-uuid/message",
            Some(json!({ "content": "hi" })),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
}

#[tokio::test]
async fn list_is_cached_and_invalidated() {
    let app = TestApp::spawn().await;
    answer_with(&app, "ok").await;
    let token = app.user_token(&unique_email("cache")).await;
    let a = app.create_chatroom(&token, Some("A")).await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "hit");
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 1);

    // Create invalidates.
    let b = app.create_chatroom(&token, Some("B")).await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    let ids: Vec<&str> = r.body["chatrooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![b.as_str(), a.as_str()], "newest activity first");
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");

    // A message moves A to the top; the reply invalidates again.
    app.send_message(&token, &a, "bump").await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    assert_eq!(r.body["chatrooms"][0]["id"], a.as_str());
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");
    app.run_worker().await;
    assert_eq!(
        app.get("/chatroom", &token).await.headers["x-cache"],
        "miss"
    );

    // Rename and delete invalidate.
    app.get("/chatroom", &token).await;
    app.call(
        Method::PATCH,
        &format!("/chatroom/{b}"),
        Some(json!({ "name": "B2" })),
        Some(&token),
    )
    .await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    assert!(r.body.to_string().contains("B2"));
    app.call(
        Method::DELETE,
        &format!("/chatroom/{b}"),
        None,
        Some(&token),
    )
    .await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 1);

    // Another user's cache is separate.
    let other = app.user_token(&unique_email("cache2")).await;
    let r = app.get("/chatroom", &other).await;
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_expired_generation_never_revives_an_old_list() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("cachegen")).await;
    let user = app.user_id(&token).await;
    app.create_chatroom(&token, Some("A")).await;
    app.get("/chatroom", &token).await;
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");

    // The generation counter expires (idle user); the next write starts it again.
    let gen_key = app
        .state
        .redis
        .key(&["chatrooms", &format!("{{{user}}}"), "gen"]);
    let dropped: i64 = redis::cmd("DEL")
        .arg(&gen_key)
        .query_async(&mut app.state.redis.conn())
        .await
        .unwrap();
    assert_eq!(dropped, 1, "the generation key is where the cache keeps it");
    app.create_chatroom(&token, Some("B")).await;
    let r = app.get("/chatroom", &token).await;
    assert_eq!(r.headers["x-cache"], "miss");
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn redis_down_degrades_list_to_postgres() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("degrade")).await;
    app.create_chatroom(&token, Some("kept")).await;
    let mut config = api_tests::test_config(&app.database_url);
    config.redis_url = shared::config::Secret::new("redis://127.0.0.1:1/");
    let broken = TestApp::from_config(config).await;
    let r = broken.get("/chatroom", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["x-cache"], "miss");
    assert_eq!(r.body["chatrooms"][0]["name"], "kept");
    // Sending cannot check the cap without Redis: fail closed.
    let room = r.body["chatrooms"][0]["id"].as_str().unwrap().to_string();
    let r = broken.send_message(&token, &room, "hello").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn other_users_chatrooms_are_404_everywhere() {
    let app = TestApp::spawn().await;
    answer_with(&app, "mine").await;
    let owner = app.user_token(&unique_email("owner")).await;
    let intruder = app.user_token(&unique_email("intruder")).await;
    let room = app.create_chatroom(&owner, Some("private")).await;
    let sent = app.send_message(&owner, &room, "secret").await;
    let msg = sent.body["message"]["id"].as_str().unwrap().to_string();
    app.run_worker().await;

    let cases = [
        (Method::GET, format!("/chatroom/{room}"), None),
        (Method::GET, format!("/chatroom/{room}/messages"), None),
        (
            Method::GET,
            format!("/chatroom/{room}/messages/{msg}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/chatroom/{room}"),
            Some(json!({ "name": "mine now" })),
        ),
        (
            Method::POST,
            format!("/chatroom/{room}/message"),
            Some(json!({ "content": "hi" })),
        ),
        (Method::DELETE, format!("/chatroom/{room}"), None),
    ];
    for (m, p, body) in cases {
        let r = app.call(m.clone(), &p, body, Some(&intruder)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}");
        assert_eq!(r.error_code(), "not_found");
    }
    let r = app.get("/chatroom", &intruder).await;
    assert!(!r.body.to_string().contains(&room));
    // The owner's data is intact, and the intruder's 404 send cost them nothing.
    let r = app.get(&format!("/chatroom/{room}"), &owner).await;
    assert_eq!(r.body["chatroom"]["name"], "private");
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 2);
    for _ in 0..5 {
        let mine = app.create_chatroom(&intruder, None).await;
        assert_eq!(
            app.send_message(&intruder, &mine, "x").await.status,
            StatusCode::ACCEPTED
        );
    }
}

#[tokio::test]
async fn paging_back_through_messages() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("paging")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("long")).await;
    for i in 0..60 {
        assert_eq!(
            app.send_message(&token, &room, &format!("m{i}"))
                .await
                .status,
            StatusCode::ACCEPTED
        );
    }
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    let msgs = r.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 50);
    assert_eq!(msgs[0]["content"], "m10");
    assert_eq!(msgs[49]["content"], "m59");
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/chatroom/{room}/messages?before={cursor}&limit=8"),
            &token,
        )
        .await;
    let page: Vec<&str> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(page, vec!["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
    let cursor = r.body["next_cursor"].as_str().unwrap().to_string();
    let r = app
        .get(
            &format!("/chatroom/{room}/messages?before={cursor}&limit=100"),
            &token,
        )
        .await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 2);
    assert!(r.body["next_cursor"].is_null());
    for bad in ["limit=0", "limit=101", "limit=abc", "before=nope"] {
        let r = app
            .get(&format!("/chatroom/{room}/messages?{bad}"), &token)
            .await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.status);
        assert!(r.body["error"]["code"].is_string());
    }
}

#[tokio::test]
async fn idempotency_key_replays_without_storing_or_counting() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("idem")).await;
    let room = app.create_chatroom(&token, Some("idem")).await;
    let send = |key: &'static str, content: &'static str| {
        let app = &app;
        let token = token.clone();
        let room = room.clone();
        async move {
            let req = axum::http::Request::post(format!("/chatroom/{room}/message"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .header("idempotency-key", key)
                .body(axum::body::Body::from(
                    json!({ "content": content }).to_string(),
                ))
                .unwrap();
            app.send(req).await
        }
    };
    let first = send("key-1", "once").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.headers["ratelimit-remaining"], "4");
    for _ in 0..3 {
        let again = send("key-1", "once").await;
        assert_eq!(again.status, StatusCode::ACCEPTED);
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    let reused = send("key-1", "different content").await;
    assert_eq!(reused.status, StatusCode::CONFLICT);
    let count = app.count("SELECT count(*) FROM messages").await;
    assert_eq!(count, 1);
    // Still only one unit used.
    let next = send("key-2", "twice").await;
    assert_eq!(next.headers["ratelimit-remaining"], "3");
    assert_eq!(
        app.run_worker().await.len(),
        2,
        "one job per stored message"
    );
}

#[tokio::test]
async fn long_poll_waits_for_the_reply() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("late answer")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("wait")).await;
    let room = app.create_chatroom(&token, Some("wait")).await;
    let r = app.send_message(&token, &room, "are you there?").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();

    let worker_app = app.clone();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        worker_app.run_worker().await
    });
    let started = std::time::Instant::now();
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}?wait=10"), &token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["message"]["status"], "answered");
    assert_eq!(r.body["reply"]["content"], "late answer");
    assert!(started.elapsed() >= Duration::from_millis(600));
    worker.await.unwrap();

    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}?wait=21"), &token)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn no_window_between_commit_and_publish() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("hangup")).await;
    let room = app.create_chatroom(&token, Some("hang up")).await;
    // Every COMMIT that stores a message now takes a second (a deferred trigger runs
    // at commit time), so the client below hangs up while its COMMIT is in flight.
    app.db()
        .await
        .batch_execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON messages \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let hung_up = tokio::time::timeout(
        Duration::from_millis(300),
        app.send_message(&token, &room, "sent, then the client hung up"),
    )
    .await;
    assert!(hung_up.is_err(), "the client left before the answer");
    // The committed message is queued all the same, not left for the sweeper.
    let mut jobs = Vec::new();
    for _ in 0..50 {
        jobs.extend(app.take_jobs().await);
        if !jobs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = app
        .count("SELECT count(*) FROM messages WHERE role = 'user'")
        .await;
    assert_eq!(stored, 1, "the message was committed");
    assert_eq!(
        jobs.len(),
        1,
        "and queued, though the client hung up mid-COMMIT"
    );
}

#[tokio::test]
async fn big_chatrooms_are_paged_capped_and_deleted_in_bounded_batches() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("big")).await;
    let user = app.user_id(&token).await;
    app.db()
        .await
        .execute(
            "INSERT INTO chatrooms (id, user_id, name) \
             SELECT gen_random_uuid(), $1, 'room ' || g FROM generate_series(1, 250) g",
            &[&user],
        )
        .await
        .unwrap();
    // GET /chatroom pages: 100, 100, 50, each id once.
    let mut ids = std::collections::HashSet::new();
    let mut path = "/chatroom".to_string();
    let mut sizes = Vec::new();
    loop {
        let r = app.get(&path, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let rooms = r.body["chatrooms"].as_array().unwrap();
        sizes.push(rooms.len());
        ids.extend(rooms.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match r.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/chatroom?cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(ids.len(), 250);
    let r = app.get("/chatroom?limit=300", &token).await;
    assert_eq!(r.body["chatrooms"].as_array().unwrap().len(), 250);
    assert!(r.body["next_cursor"].is_null());
    for bad in [
        "/chatroom?limit=0",
        "/chatroom?limit=1001",
        "/chatroom?cursor=nonsense",
    ] {
        assert_eq!(
            app.get(bad, &token).await.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }

    // One room with many messages: deleted in batches, a request at a time if need be.
    let big = app.create_chatroom(&token, Some("big")).await;
    app.db()
        .await
        .execute(
            "INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
             SELECT gen_random_uuid(), $1, $2, 'user', 'm' || g, 'failed' \
             FROM generate_series(1, 5000) g",
            &[&big.parse::<uuid::Uuid>().unwrap(), &user],
        )
        .await
        .unwrap();
    assert_eq!(
        app.get("/chatroom?limit=1", &token).await.body["chatrooms"][0]["id"],
        big.as_str()
    );
    app.get("/chatroom", &token).await; // cached now
    let mut requests = 0;
    loop {
        requests += 1;
        match shared::chat::delete_chatroom_within(
            &app.state,
            user,
            big.parse().unwrap(),
            Duration::ZERO,
        )
        .await
        {
            Ok(()) => break,
            Err(shared::AppError::Unavailable { code, .. }) => {
                assert_eq!(code, "delete_in_progress")
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        requests, 4,
        "5,000 messages in batches of 2,000, then the room"
    );
    assert_eq!(
        app.get(&format!("/chatroom/{big}"), &token).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = app.get("/chatroom?limit=1000", &token).await;
    assert!(!listed.body.to_string().contains(&big), "not in the list");
    assert!(
        !app.get("/chatroom", &token)
            .await
            .body
            .to_string()
            .contains(&big),
        "nor the cached page"
    );

    // At most 1,000 chatrooms an account.
    app.db()
        .await
        .execute(
            "INSERT INTO chatrooms (id, user_id) SELECT gen_random_uuid(), $1 FROM generate_series(1, 750)",
            &[&user],
        )
        .await
        .unwrap();
    let r = app
        .call(Method::POST, "/chatroom", Some(json!({})), Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.error_code(), "too_many_chatrooms");
}
