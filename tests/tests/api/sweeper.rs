//! Nothing stays pending: the send's work after its commit survives a disconnecting
//! client, and the sweep answers (or fails) what a dying process left behind. Also the
//! expiry and purge of idempotency keys, and the index that keeps deletion fast.

use std::sync::Arc;
use std::time::Duration;

use api_tests::faults::TempPostgres;
use api_tests::{TestApp, gemini_path, gemini_text, test_config, unique_email};
use axum::http::StatusCode;
use shared::chat::worker::{Outcome, STUCK_REASON};
use shared::clients::queue::{QueueError, ReplyJob, ReplyQueue};
use tokio::sync::Notify;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

async fn mount_reply(app: &TestApp, text: &str) {
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text(text)))
        .mount(&app.gemini)
        .await;
}

/// Publishes after a delay, saying when it starts (the message is committed by then).
struct SlowQueue {
    inner: Arc<dyn ReplyQueue>,
    started: Arc<Notify>,
}

#[async_trait::async_trait]
impl ReplyQueue for SlowQueue {
    async fn publish(&self, job: ReplyJob) -> Result<(), QueueError> {
        self.started.notify_one();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.inner.publish(job).await
    }
}

#[tokio::test]
async fn a_client_that_disconnects_after_the_commit_does_not_strand_its_message() {
    let started = Arc::new(Notify::new());
    let signal = started.clone();
    let app = TestApp::spawn_full(
        |_| {},
        move |s| {
            let inner = s.queue.take().unwrap();
            s.queue = Some(Arc::new(SlowQueue {
                inner,
                started: signal,
            }));
        },
    )
    .await;
    mount_reply(&app, "still here").await;
    let token = app.user_token(&unique_email("disconnect")).await;
    let room = app.create_chatroom(&token, Some("d")).await;

    // The client goes away (its request future is dropped) while the publish is under way.
    tokio::select! {
        r = app.send_message(&token, &room, "hello?") => panic!("the send finished early: {}", r.body),
        _ = started.notified() => {}
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    let done = app.run_worker().await;
    assert_eq!(done.len(), 1, "the job was published anyway");
    assert_eq!(done[0].1, Ok(Outcome::Answered));
    let pending = app
        .count("SELECT count(*) FROM messages WHERE status = 'pending'")
        .await;
    assert_eq!(pending, 0);
}

/// Plays a process dying between commit and publish: the database goes down with it, so
/// the send cannot even mark its message failed.
struct DyingQueue {
    pg: Arc<TempPostgres>,
}

#[async_trait::async_trait]
impl ReplyQueue for DyingQueue {
    async fn publish(&self, _job: ReplyJob) -> Result<(), QueueError> {
        self.pg.stop().await;
        Err(QueueError("the process died before publishing".into()))
    }
}

#[tokio::test]
async fn the_sweep_answers_a_message_stranded_between_commit_and_publish() {
    let pg = Arc::new(TempPostgres::start().await);
    shared::store::postgres::migrate(&pg.url(), None)
        .await
        .unwrap();
    let mut config = test_config(&pg.url());
    config.sweep_after = Duration::from_secs(2);
    let dying = pg.clone();
    let app = TestApp::from_config_with(config, move |s| {
        s.queue = Some(Arc::new(DyingQueue { pg: dying }));
    })
    .await;
    let token = app.user_token(&unique_email("stranded")).await;
    let room = app.create_chatroom(&token, Some("s")).await;

    let r = app.send_with_key(&token, &room, "k-1", "anyone?").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    pg.resume().await;
    // What the fault leaves: a pending message no job will ever answer, replayed as such.
    let stranded = app
        .count("SELECT count(*) FROM messages WHERE status = 'pending'")
        .await;
    assert_eq!(stranded, 1);
    let replay = app.send_with_key(&token, &room, "k-1", "anyone?").await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.body);
    assert_eq!(replay.body["message"]["status"], "pending");
    let id = replay.body["message"]["id"].as_str().unwrap().to_string();

    // Within the sweep period it is left alone (its job may still be on the way) ...
    let report = app.worker.sweep().await.unwrap();
    assert_eq!(report.taken, 0, "{report:?}");
    // ... past it, the sweep answers it.
    mount_reply(&app, "sorry for the wait").await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let report = app.worker.sweep().await.unwrap();
    assert_eq!((report.taken, report.answered), (1, 1), "{report:?}");
    let r = app
        .get(&format!("/chatroom/{room}/messages/{id}"), &token)
        .await;
    assert_eq!(r.body["message"]["status"], "answered", "{}", r.body);
    assert_eq!(r.body["reply"]["content"], "sorry for the wait");
    // Answered, it left the sweeper's pending list.
    assert_eq!(app.count("SELECT count(*) FROM pending_messages").await, 0);
    // A second sweep finds nothing left to do.
    let report = app.worker.sweep().await.unwrap();
    assert_eq!(report.taken, 0, "{report:?}");
}

#[tokio::test]
async fn the_sweep_fails_a_message_out_of_deliveries_and_retries_a_busy_model_later() {
    let app = TestApp::spawn_with(|c| c.sweep_after = Duration::from_secs(60)).await;
    let token = app.user_token(&unique_email("sweepfail")).await;
    let room = app.create_chatroom(&token, Some("f")).await;
    let spent = app.send_message(&token, &room, "one").await;
    let busy = app.send_message(&token, &room, "two").await;
    let (spent, busy) = (
        spent.body["message"]["id"].as_str().unwrap().to_string(),
        busy.body["message"]["id"].as_str().unwrap().to_string(),
    );
    let db = app.db().await;
    // The sweeper's pending list holds exactly the pending messages.
    assert_eq!(
        app.count("SELECT count(*) FROM pending_messages p JOIN messages m ON m.id = p.message_id AND m.status = 'pending'").await,
        2
    );
    // Both jobs were lost; one message already had every delivery it may have.
    db.execute(
        "UPDATE messages SET updated_at = now() - interval '1 hour', \
         attempts = CASE WHEN id = $1::text::uuid THEN 3 ELSE 1 END",
        &[&spent],
    )
    .await
    .unwrap();
    db.execute("UPDATE pending_messages SET enqueued_at = NULL", &[])
        .await
        .unwrap();
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.gemini)
        .await;
    let report = app.worker.sweep().await.unwrap();
    assert_eq!(
        (report.taken, report.failed, report.retry_later),
        (2, 1, 1),
        "{report:?}"
    );
    let row = db
        .query_one(
            "SELECT status, failure_reason FROM messages WHERE id = $1::text::uuid",
            &[&spent],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, String>(1), STUCK_REASON);
    let row = db
        .query_one(
            "SELECT status, attempts, updated_at > now() - interval '1 minute' \
             FROM messages WHERE id = $1::text::uuid",
            &[&busy],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending", "left for a later sweep");
    assert_eq!(
        row.get::<_, i32>(1),
        2,
        "the sweep's try counts as a delivery"
    );
    assert!(row.get::<_, bool>(2), "and restarts its idle clock");
    // The failed one left the pending list; the busy one is still on it.
    let listed = db
        .query_one(
            "SELECT array_agg(message_id::text) FROM pending_messages",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Vec<String>>(0);
    assert_eq!(listed, vec![busy.clone()]);
}

#[tokio::test]
async fn idempotency_keys_expire_after_a_day_and_the_sweep_purges_them() {
    let app = TestApp::spawn().await;
    mount_reply(&app, "ok").await;
    let token = app.user_token(&unique_email("expiry")).await;
    let room = app.create_chatroom(&token, Some("e")).await;
    let first = app
        .send_with_key(&token, &room, "old-key", "same words")
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let fresh = app
        .send_with_key(&token, &room, "new-key", "other words")
        .await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED);
    app.db()
        .await
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' \
             WHERE key = 'old-key'",
            &[],
        )
        .await
        .unwrap();

    // An expired key no longer replays: the same request is a new message.
    let again = app
        .send_with_key(&token, &room, "old-key", "same words")
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_ne!(again.body["message"]["id"], first.body["message"]["id"]);
    // ... and is now the key's answer for another day.
    let replay = app
        .send_with_key(&token, &room, "old-key", "same words")
        .await;
    assert_eq!(replay.body["message"]["id"], again.body["message"]["id"]);

    app.db()
        .await
        .execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' \
             WHERE key = 'old-key'",
            &[],
        )
        .await
        .unwrap();
    let report = app.worker.sweep().await.unwrap();
    assert_eq!(report.keys_purged, 1, "{report:?}");
    let keys = app.count("SELECT count(*) FROM idempotency_keys").await;
    assert_eq!(keys, 1, "the live key stays");
}

#[tokio::test]
async fn deleting_a_chatroom_never_scans_the_idempotency_keys() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("delete")).await;
    let room = app.create_chatroom(&token, Some("big")).await;
    let user = app.user_id(&token).await;
    let db = app.db().await;
    // 200 messages in the room, and 20,000 keys of other messages in the table.
    db.batch_execute(&format!(
        "INSERT INTO chatrooms (id, user_id, name) VALUES ('{other}', '{user}', 'other');
         INSERT INTO messages (id, chatroom_id, user_id, role, content, status)
             SELECT gen_random_uuid(), '{room}', '{user}', 'user', 'm' || g, 'answered'
             FROM generate_series(1, 200) g;
         INSERT INTO messages (id, chatroom_id, user_id, role, content, status)
             SELECT gen_random_uuid(), '{other}', '{user}', 'user', 'o' || g, 'answered'
             FROM generate_series(1, 20000) g;
         INSERT INTO idempotency_keys (user_id, key, request_hash, message_id, response)
             SELECT user_id, id::text, 'h', id, '{{}}' FROM messages;
         ANALYZE idempotency_keys;",
        other = uuid::Uuid::new_v4(),
    ))
    .await
    .unwrap();
    db.batch_execute("BEGIN").await.unwrap();
    db.execute(
        "DELETE FROM chatrooms WHERE id = $1::text::uuid",
        &[&room.as_str()],
    )
    .await
    .unwrap();
    // This transaction's own table statistics: the cascade's lookups by message_id.
    let row = db
        .query_one(
            "SELECT seq_scan, n_tup_del FROM pg_stat_xact_user_tables \
             WHERE relname = 'idempotency_keys'",
            &[],
        )
        .await
        .unwrap();
    db.batch_execute("COMMIT").await.unwrap();
    assert_eq!(row.get::<_, i64>(1), 200, "the room's keys went with it");
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "one sequential scan of idempotency_keys per deleted message"
    );
}

#[tokio::test]
async fn the_sweeper_tells_a_backlog_from_a_stuck_message() {
    let app = TestApp::spawn_with(|c| c.sweep_after = Duration::from_secs(60)).await;
    mount_reply(&app, "answered by the sweep").await;
    let token = app.user_token(&unique_email("backlog")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("b")).await;
    let mut ids = Vec::new();
    for text in [
        "waiting in the backlog",
        "never enqueued",
        "enqueued before the retention",
    ] {
        let r = app.send_message(&token, &room, text).await;
        ids.push(r.body["message"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        app.count("SELECT count(*) FROM pending_messages WHERE enqueued_at IS NOT NULL")
            .await,
        3,
        "the send records that each job is queued"
    );
    let db = app.db().await;
    // All idle for an hour; one merely waits behind the worker's maximum concurrency
    // (enqueued 20 minutes ago), one's send died before publishing, one's job is older
    // than the queue keeps jobs.
    db.execute(
        "UPDATE messages SET updated_at = now() - interval '1 hour'",
        &[],
    )
    .await
    .unwrap();
    for (id, enqueued) in [
        (&ids[0], Some("20 minutes")),
        (&ids[1], None),
        (&ids[2], Some("5 days")),
    ] {
        db.execute(
            "UPDATE pending_messages SET enqueued_at = now() - $2::text::interval \
             WHERE message_id = $1::text::uuid",
            &[id, &enqueued.unwrap_or("100 years")],
        )
        .await
        .unwrap();
        if enqueued.is_none() {
            db.execute(
                "UPDATE pending_messages SET enqueued_at = NULL WHERE message_id = $1::text::uuid",
                &[id],
            )
            .await
            .unwrap();
        }
    }
    let report = app.worker.sweep().await.unwrap();
    assert_eq!((report.taken, report.answered), (2, 2), "{report:?}");
    let status = |id: &String| {
        let db = &db;
        let id = id.clone();
        async move {
            db.query_one(
                "SELECT status FROM messages WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
        }
    };
    assert_eq!(
        status(&ids[0]).await,
        "pending",
        "the backlog is the queue's"
    );
    assert_eq!(status(&ids[1]).await, "answered");
    assert_eq!(status(&ids[2]).await, "answered");
}

#[tokio::test]
async fn a_rate_limit_answer_never_spends_an_attempt() {
    let app = TestApp::spawn_with(|c| c.gemini.retry_budget = Duration::ZERO).await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(429).set_body_json(serde_json::json!({"error": {
            "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}})))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("ratelimit")).await;
    let room = app.create_chatroom(&token, Some("r")).await;
    let r = app.send_message(&token, &room, "busy model").await;
    let id = r.body["message"]["id"].as_str().unwrap().to_string();
    let job = app.take_jobs().await.remove(0);
    let max = app.state.config.max_receive_count;
    // Even on what would be its last delivery, a rate limit neither fails the message
    // nor counts: the job goes back to the queue (after the 7 s Gemini asked for).
    let outcome = app.worker.process(job, max).await;
    assert_eq!(outcome, Ok(Outcome::Skipped("rate-limited; queued again")));
    assert_eq!(app.take_jobs().await, vec![job], "queued again");
    let row = app
        .db()
        .await
        .query_one(
            "SELECT status, attempts FROM messages WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, i32>(1), 0, "no attempt spent");
}
