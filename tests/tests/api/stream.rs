//! Live replies: the worker streaming from a fake Gemini that sends `text/event-stream`
//! frames with pauses between them, into a Redis Stream, read by the stream route.

use std::time::Duration;

use api_tests::live::{FakeGemini, Script, SseEvent, SseReader, shown_text};
use api_tests::{TestApp, unique_email};
use axum::http::{Method, StatusCode};
use serde_json::json;
use shared::chat::worker::{BLOCKED_TEXT, Outcome, Retry};

const WAIT: Duration = Duration::from_secs(10);
const GAP: Duration = Duration::from_millis(150);

struct Live {
    app: TestApp,
    fake: FakeGemini,
    token: String,
    room: String,
}

impl Live {
    async fn start(scripts: Vec<Script>) -> Self {
        Self::start_with(scripts, |_| {}).await
    }

    async fn start_with(
        scripts: Vec<Script>,
        tweak: impl FnOnce(&mut shared::config::Config),
    ) -> Self {
        let app = TestApp::spawn_with(tweak).await;
        let fake = FakeGemini::start(scripts).await;
        let token = app.user_token(&unique_email("live")).await;
        // Named, so no title request reaches the fake.
        let room = app.create_chatroom(&token, Some("live")).await;
        Self {
            app,
            fake,
            token,
            room,
        }
    }

    /// Sends a message; returns its id (the job stays queued).
    async fn send(&self, content: &str) -> String {
        let r = self
            .app
            .send_message(&self.token, &self.room, content)
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        r.body["message"]["id"].as_str().unwrap().to_string()
    }

    /// Runs the queued job in the background (first delivery).
    async fn answer(&self) -> tokio::task::JoinHandle<Vec<Result<Outcome, Retry>>> {
        let worker = self.app.worker_with_gemini(&self.fake.url);
        let jobs = self.app.take_jobs().await;
        tokio::spawn(async move {
            let mut out = Vec::new();
            for job in jobs {
                out.push(worker.process(job, 1).await);
            }
            out
        })
    }

    async fn open(&self, message: &str, last_event_id: Option<&str>) -> SseReader {
        let (status, headers, reader) = self
            .app
            .open_stream(&self.token, &self.room, message, last_event_id)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/event-stream");
        reader
    }

    /// The message and its stored reply, from the long-poll route.
    async fn stored(&self, message: &str) -> serde_json::Value {
        self.app
            .get(
                &format!("/chatroom/{}/messages/{message}", self.room),
                &self.token,
            )
            .await
            .body
    }

    async fn replies(&self) -> i64 {
        self.app
            .count("SELECT count(*) FROM messages WHERE role = 'model'")
            .await
    }
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn pieces(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("word{i} ")).collect()
}

#[tokio::test]
async fn deltas_arrive_before_the_model_finishes_and_add_up_to_the_stored_reply() {
    let words = [
        "Hello",
        " there,",
        " this",
        " is",
        " a",
        " streamed",
        " reply.",
    ];
    let live = Live::start(vec![Script::text(&words, "STOP", GAP)]).await;
    let id = live.send("stream please").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;

    let mut early = 0;
    let mut events = Vec::new();
    while let Some(e) = reader.next(WAIT).await {
        if e.event == "delta" && live.fake.last_frame_at().is_none() {
            early += 1;
        }
        events.push(e);
    }
    assert!(
        early >= 2,
        "{early} deltas before Gemini's last frame: {events:?}"
    );
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);

    let done = &events.last().unwrap().data;
    let stored = live.stored(&id).await;
    assert_eq!(stored["reply"]["content"], words.concat());
    assert_eq!(shown_text(&events), words.concat());
    assert_eq!(done["reply"], stored["reply"]);
    assert_eq!(done["message"]["status"], "answered");
    // Every event can be resumed from, and ids only grow.
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_deref().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|i| {
        let (a, b) = i.split_once('-').unwrap();
        (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap())
    });
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(live.replies().await, 1);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_loses_and_repeats_nothing() {
    let words = pieces(8);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let live = Live::start(vec![Script::text(&words, "STOP", GAP)]).await;
    let id = live.send("resume me").await;
    let mut first = live.open(&id, None).await;
    let worker = live.answer().await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = first.next(WAIT).await.expect("more events");
        assert_eq!(e.event, "delta", "{e:?}");
        seen.push(e);
    }
    drop(first);
    // The connection dropped mid-reply; the client resumes after the last event it had.
    let last = seen.last().unwrap().id.clone().unwrap();
    let mut second = live.open(&id, Some(&last)).await;
    let rest = second.rest(WAIT).await;
    assert!(
        live.fake.frames_sent() > 2,
        "resumed while the reply was still being written"
    );
    worker.await.unwrap();
    assert_eq!(kinds(&rest).last(), Some(&"done"));
    seen.extend(rest);
    let mut ids: Vec<_> = seen.iter().map(|e| e.id.clone().unwrap()).collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an event came twice");
    assert_eq!(shown_text(&seen), words.concat());
    assert_eq!(live.stored(&id).await["reply"]["content"], words.concat());
}

#[tokio::test]
async fn resume_from_the_done_event_replays_nothing_but_done() {
    let live = Live::start(vec![Script::text(&["All ", "done."], "STOP", GAP)]).await;
    let id = live.send("finish").await;
    assert_eq!(
        live.answer().await.await.unwrap(),
        vec![Ok(Outcome::Answered)]
    );
    // Read live from the Redis Stream, then resume from its `done`.
    let key = shared::chat::live::stream_key(&live.app.state.redis, id.parse().unwrap());
    let mut redis = live.app.state.redis.conn();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let done_id = &entries.last().unwrap().0;
    let events = live.open(&id, Some(done_id)).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["done"], "{events:?}");
    assert_eq!(events[0].id.as_deref(), Some(done_id.as_str()));
    assert_eq!(events[0].data["reply"]["content"], "All done.");
    // The same from the stored reply's end id, once the stream has expired.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let events = live.open(&id, Some("0-2")).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["done"], "{events:?}");
}

#[tokio::test]
async fn a_finished_message_streams_its_stored_reply_even_after_the_stream_expired() {
    let live = Live::start(vec![Script::text(&["Done ", "already."], "STOP", GAP)]).await;
    let id = live.send("quick").await;
    assert_eq!(
        live.answer().await.await.unwrap(),
        vec![Ok(Outcome::Answered)]
    );

    let events = live.open(&id, None).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["delta", "done"]);
    assert_eq!(events[0].data["text"], "Done already.");
    assert_eq!(events[1].data["reply"]["finish_reason"], "STOP");

    // Resuming from a live entry id while the Redis Stream still exists: just the end.
    let key = shared::chat::live::stream_key(&live.app.state.redis, id.parse().unwrap());
    let mut redis = live.app.state.redis.conn();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        (1..=shared::chat::live::TTL_AFTER_END_SECS).contains(&ttl),
        "the stream expires after the end: {ttl}"
    );
    let before_end = &entries[entries.len() - 2].0;
    let events = live.open(&id, Some(before_end)).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["done"]);

    // The stream expired: the same answer, from PostgreSQL.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let events = live.open(&id, None).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["delta", "done"]);
    assert_eq!(events[0].data["text"], "Done already.");
    // A client that had part of it and resumes: withdraw, then the whole reply.
    let events = live.open(&id, Some(before_end)).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["reset", "delta", "done"]);
    assert_eq!(shown_text(&events), "Done already.");
    // Resuming from the stored events' own ids.
    let events = live.open(&id, Some("0-1")).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["done"]);
}

#[tokio::test]
async fn cancel_mid_stream_keeps_the_partial_reply() {
    let words = pieces(30);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let live = Live::start(vec![Script::text(
        &words,
        "STOP",
        Duration::from_millis(100),
    )])
    .await;
    let id = live.send("talk for a while").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;
    let mut events = Vec::new();
    while events.len() < 2 {
        events.push(reader.next(WAIT).await.unwrap());
    }
    let cancel_path = format!("/chatroom/{}/messages/{id}/cancel", live.room);
    let r = live
        .app
        .call(Method::POST, &cancel_path, None, Some(&live.token))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["message"]["id"], id.as_str());
    events.extend(reader.rest(WAIT).await);
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);

    let done = events.last().unwrap();
    assert_eq!(done.event, "done", "{events:?}");
    assert_eq!(done.data["message"]["status"], "answered");
    assert_eq!(done.data["reply"]["finish_reason"], "cancelled");
    let stored = live.stored(&id).await;
    let partial = stored["reply"]["content"].as_str().unwrap();
    assert_eq!(shown_text(&events), partial);
    assert!(
        !partial.is_empty() && partial.len() < words.concat().len(),
        "partial: {partial:?}"
    );
    assert!(live.fake.frames_sent() < words.len(), "stopped reading");

    // Finished now: a second cancel is refused, and so is someone else's.
    let r = live
        .app
        .call(Method::POST, &cancel_path, None, Some(&live.token))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "already_finished");
    let other = live.app.user_token(&unique_email("other")).await;
    let r = live
        .app
        .call(Method::POST, &cancel_path, None, Some(&other))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (status, _, _) = live.app.open_stream(&other, &live.room, &id, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_redelivery_after_a_broken_stream_resets_then_answers_once() {
    let broken = Script::Frames {
        frames: vec![
            json!({"candidates": [{"content": {"parts": [{"text": "Half an "}]}}]}),
            json!({"candidates": [{"content": {"parts": [{"text": "answ"}]}}]}),
        ],
        gap: GAP,
        broken: true,
    };
    let whole = Script::text(&["A whole ", "answer."], "STOP", GAP);
    // No time for retries inside a delivery: the queue delivers the job again.
    let live = Live::start_with(vec![broken, whole], |c| {
        c.gemini.retry_budget = Duration::ZERO;
    })
    .await;
    let id = live.send("flaky").await;
    let mut reader = live.open(&id, None).await;
    let job = live.app.take_jobs().await.remove(0);
    let worker = live.app.worker_with_gemini(&live.fake.url);
    assert!(worker.process(job, 1).await.is_err(), "to be redelivered");
    assert_eq!(worker.process(job, 2).await, Ok(Outcome::Answered));
    // A late duplicate delivery changes nothing.
    assert!(matches!(
        worker.process(job, 3).await,
        Ok(Outcome::Skipped(_))
    ));

    let events = reader.rest(WAIT).await;
    assert_eq!(
        kinds(&events),
        ["delta", "delta", "reset", "delta", "delta", "done"],
        "{events:?}"
    );
    assert_eq!(shown_text(&events[..2]), "Half an answ");
    assert_eq!(shown_text(&events), "A whole answer.");
    assert_eq!(
        live.stored(&id).await["reply"]["content"],
        "A whole answer."
    );
    assert_eq!(live.replies().await, 1);
}

#[tokio::test]
async fn a_safety_block_mid_stream_withdraws_the_text() {
    let frames = vec![
        json!({"candidates": [{"content": {"parts": [{"text": "Sure, here is how "}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "you "}]}}]}),
        json!({"candidates": [{"finishReason": "SAFETY"}]}),
    ];
    let live = Live::start(vec![Script::Frames {
        frames,
        gap: GAP,
        broken: false,
    }])
    .await;
    let id = live.send("something bad").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;
    let events = reader.rest(WAIT).await;
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Blocked)]);
    assert_eq!(kinds(&events), ["delta", "delta", "reset", "delta", "done"]);
    assert_eq!(shown_text(&events), BLOCKED_TEXT);
    let done = &events.last().unwrap().data;
    assert_eq!(done["message"]["status"], "blocked");
    assert_eq!(done["reply"]["finish_reason"], "SAFETY");
    assert_eq!(live.stored(&id).await["message"]["status"], "blocked");
}

#[tokio::test]
async fn a_rate_limit_before_the_first_frame_is_retried() {
    let busy = Script::Status(
        429,
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.2s"}]}}),
    );
    let live = Live::start(vec![
        busy,
        Script::text(&["After ", "waiting."], "STOP", GAP),
    ])
    .await;
    let id = live.send("hi").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;
    let events = reader.rest(WAIT).await;
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);
    assert_eq!(live.fake.requests(), 2);
    assert_eq!(kinds(&events), ["delta", "delta", "done"]);
    assert_eq!(shown_text(&events), "After waiting.");
}

#[tokio::test]
async fn a_bad_request_ends_the_stream_with_an_error() {
    let bad = Script::Status(
        400,
        json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad request"}}),
    );
    let live = Live::start(vec![bad]).await;
    let id = live.send("hi").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;
    let events = reader.rest(WAIT).await;
    assert!(matches!(worker.await.unwrap()[0], Ok(Outcome::Failed(_))));
    assert_eq!(live.fake.requests(), 1, "not retried");
    assert_eq!(kinds(&events), ["error"]);
    assert_eq!(events[0].data["error"]["code"], "reply_failed");
    // A stable code and a sentence; Gemini's own error text stays in the logs.
    assert_eq!(
        events[0].data["error"]["message"],
        shared::chat::model::failure::MODEL_REFUSED
    );
    // Later, from PostgreSQL: the same end.
    let events = live.open(&id, None).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["error"]);
    assert_eq!(live.stored(&id).await["message"]["status"], "failed");
}

#[tokio::test]
async fn bad_input_is_refused_before_streaming() {
    let live = Live::start(vec![Script::text(&["x"], "STOP", GAP)]).await;
    let id = live.send("hi").await;
    let (status, _, _) = live
        .app
        .open_stream(&live.token, &live.room, &id, Some("not-an-id"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = uuid::Uuid::new_v4().to_string();
    let (status, _, _) = live
        .app
        .open_stream(&live.token, &live.room, &missing, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = live
        .app
        .call(
            Method::GET,
            &format!("/chatroom/{}/messages/{id}/stream", live.room),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_stream_closes_at_its_deadline_and_resumes_where_it_stopped() {
    let words = ["Slow ", "but ", "sure."];
    let live = Live::start_with(
        vec![Script::text(&words, "STOP", Duration::from_millis(700))],
        |c| c.stream_max = Duration::from_secs(1),
    )
    .await;
    let id = live.send("take your time").await;
    let mut reader = live.open(&id, None).await;
    let worker = live.answer().await;
    let started = tokio::time::Instant::now();
    let first = reader.rest(WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed at the deadline"
    );
    assert!(
        !kinds(&first).contains(&"done"),
        "the reply outlasts one connection: {first:?}"
    );
    // The client reconnects (from the start when it had nothing yet) until the end.
    let mut all = first;
    while kinds(&all).last() != Some(&"done") {
        let last = all.last().and_then(|e| e.id.clone());
        all.extend(live.open(&id, last.as_deref()).await.rest(WAIT).await);
    }
    worker.await.unwrap();
    assert_eq!(shown_text(&all), words.concat());
}

#[tokio::test]
async fn redis_down_costs_no_reply_and_the_live_routes_say_503() {
    let live = Live::start(vec![Script::text(&["Stored ", "anyway."], "STOP", GAP)]).await;
    let id = live.send("is redis there?").await;
    let job = live.app.take_jobs().await.remove(0);
    // The same database, with Redis at a port where nothing listens.
    let mut config = api_tests::test_config(&live.app.database_url);
    config.redis_url = shared::config::Secret::new("redis://127.0.0.1:1/");
    let broken = TestApp::from_config(config).await;

    let (status, _, _) = broken.open_stream(&live.token, &live.room, &id, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let r = broken
        .call(
            Method::POST,
            &format!("/chatroom/{}/messages/{id}/cancel", live.room),
            None,
            Some(&live.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.error_code(), "cache_unavailable");

    let worker = broken.worker_with_gemini(&live.fake.url);
    assert_eq!(worker.process(job, 1).await, Ok(Outcome::Answered));
    assert_eq!(live.stored(&id).await["reply"]["content"], "Stored anyway.");
    // Redis is back (the healthy app): the finished message streams from PostgreSQL.
    let events = live.open(&id, None).await.rest(WAIT).await;
    assert_eq!(kinds(&events), ["delta", "done"]);
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats_and_then_the_reply() {
    let live = Live::start(vec![Script::text(&["still", " here"], "STOP", GAP)]).await;
    let id = live.send("take your time").await;
    let mut reader = live.open(&id, None).await;
    // Nobody answers for longer than the heartbeat interval: the connection must still
    // carry something, or proxies and browsers would drop it as idle.
    tokio::time::sleep(stream_fn::HEARTBEAT + Duration::from_secs(1)).await;
    let worker = live.answer().await;
    let first = reader.next(WAIT).await.expect("the reply after the pause");
    assert!(
        reader.comments >= 1,
        "no heartbeat in {:?} of silence",
        stream_fn::HEARTBEAT
    );
    assert_eq!(first.event, "delta", "{first:?}");
    let mut events = vec![first];
    events.extend(reader.rest(WAIT).await);
    assert_eq!(events.last().unwrap().event, "done", "{events:?}");
    assert_eq!(shown_text(&events), "still here");
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);
}

#[tokio::test]
async fn open_streams_are_bounded_per_user_and_freed_however_they_end() {
    let live = Live::start_with(vec![], |c| c.stream_max = Duration::from_secs(3)).await;
    let mut ids = Vec::new();
    let mut open = Vec::new();
    for i in 0..5 {
        let id = live.send(&format!("question {i}")).await;
        open.push(live.open(&id, None).await);
        ids.push(id);
    }
    // A sixth, while five are open (nobody answers, so they stay open).
    let path = format!("/chatroom/{}/messages/{}/stream", live.room, ids[0]);
    let refused = live.app.get(&path, &live.token).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.error_code(), "too_many_streams");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");

    // The client leaves one: its slot is free again.
    drop(open.pop());
    let mut reopened = None;
    for _ in 0..30 {
        let (status, _, reader) = live
            .app
            .open_stream(&live.token, &live.room, &ids[4], None)
            .await;
        if status == StatusCode::OK {
            reopened = Some(reader);
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a closed stream gives its slot back");

    // The others end at their deadline: every slot is free after it.
    for reader in &mut open {
        assert!(reader.rest(WAIT).await.iter().all(|e| e.event != "done"));
    }
    reopened.unwrap().rest(WAIT).await;
    for id in &ids {
        let (status, _, _) = live
            .app
            .open_stream(&live.token, &live.room, id, None)
            .await;
        assert_eq!(status, StatusCode::OK, "slots freed at the deadline");
    }
}

impl Live {
    async fn cancel(&self, id: &str) -> api_tests::TestResponse {
        let path = format!("/chatroom/{}/messages/{id}/cancel", self.room);
        self.app
            .call(Method::POST, &path, None, Some(&self.token))
            .await
    }
}

#[tokio::test]
async fn cancel_and_publish_races() {
    // (1) A cancel answered 202 ends the reply `cancelled`, even when the model finished
    // before the worker saw the flag (here the flag never reaches Redis's reader).
    let live = Live::start(vec![Script::text(&["Whole ", "answer."], "STOP", GAP)]).await;
    let id = live.send("cancel me").await;
    assert_eq!(live.cancel(&id).await.status, StatusCode::ACCEPTED);
    let key = shared::chat::live::cancel_key(&live.app.state.redis, id.parse().unwrap());
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut live.app.state.redis.conn())
        .await
        .unwrap();
    assert_eq!(
        live.answer().await.await.unwrap(),
        vec![Ok(Outcome::Answered)]
    );
    let stored = live.stored(&id).await;
    assert_eq!(stored["reply"]["finish_reason"], "cancelled", "{stored}");
    // ...and once stored, a cancel is 409.
    let r = live.cancel(&id).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "already_finished");

    // (2) fail_unqueued keeps the key of a message the worker already answered: a retry
    // with that key replays, never sends twice.
    let sent = live
        .app
        .send_with_key(&live.token, &live.room, "key-race-1", "keyed")
        .await;
    let keyed = sent.body["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        live.answer().await.await.unwrap(),
        vec![Ok(Outcome::Answered)]
    );
    // The publish "failed" after all (it timed out, yet the job went through).
    shared::chat::messages::fail_unqueued(
        &live.app.state.db().await.unwrap(),
        keyed.parse().unwrap(),
        "x",
    )
    .await
    .unwrap();
    let again = live
        .app
        .send_with_key(&live.token, &live.room, "key-race-1", "keyed")
        .await;
    assert_eq!(
        again.body["message"]["id"],
        keyed.as_str(),
        "replayed, not sent again"
    );
}

#[tokio::test]
async fn cancel_is_honoured_while_the_model_sends_no_text() {
    // The model thinks for 5 s before its first text.
    let live = Live::start(vec![Script::text(
        &["Late."],
        "STOP",
        Duration::from_secs(5),
    )])
    .await;
    let id = live.send("think hard").await;
    let worker = live.answer().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert_eq!(live.cancel(&id).await.status, StatusCode::ACCEPTED);
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped at once: {:?}",
        started.elapsed()
    );
    assert_eq!(live.fake.frames_sent(), 0);
    let stored = live.stored(&id).await;
    assert_eq!(stored["reply"]["finish_reason"], "cancelled");
}

#[tokio::test]
async fn a_cancel_after_a_transient_error_keeps_the_partial_text() {
    let broken = Script::Frames {
        frames: vec![json!({"candidates": [{"content": {"parts": [{"text": "Half an "}]}}]})],
        gap: Duration::from_millis(300),
        broken: true,
    };
    let whole = Script::text(&["A whole answer."], "STOP", GAP);
    let live = Live::start_with(vec![broken, whole], |c| {
        c.gemini.retry_budget = Duration::from_secs(5);
    })
    .await;
    let id = live.send("flaky").await;
    let worker = live.answer().await;
    // The first text is shown, then the stream breaks; cancel in between or just after.
    for _ in 0..100 {
        if live.fake.frames_sent() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.cancel(&id).await.status, StatusCode::ACCEPTED);
    assert_eq!(worker.await.unwrap(), vec![Ok(Outcome::Answered)]);
    let stored = live.stored(&id).await;
    assert_eq!(stored["reply"]["content"], "Half an ", "{stored}");
    assert_eq!(stored["reply"]["finish_reason"], "cancelled");
}
