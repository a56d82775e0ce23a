//! Live replies: how soon a piece of text the model sends reaches a client, and how many
//! open streams the local server holds (and at what memory).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use serde_json::json;
use shared::chat::worker::Outcome;
use shared::clients::queue::ReplyJob;
use uuid::Uuid;

use crate::harness::{Fixture, Settings, ms, pending_messages, worker};
use crate::report::Report;

/// A fake Gemini streaming `frames` SSE frames, `gap` apart; records when each stream's
/// first frame went out.
async fn streaming_gemini(frames: usize, gap: Duration) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let firsts = Arc::new(Mutex::new(Vec::new()));
    let seen = firsts.clone();
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let seen = seen.clone();
                async move {
                    if i == frames {
                        return None;
                    }
                    tokio::time::sleep(gap).await;
                    let mut candidate = json!({ "content": { "role": "model", "parts": [{ "text": format!("piece {i} ") }] } });
                    if i + 1 == frames {
                        candidate["finishReason"] = json!("STOP");
                    }
                    if i == 0 {
                        seen.lock().unwrap().push(Instant::now());
                    }
                    let frame = json!({ "candidates": [candidate] });
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(format!("data: {frame}\r\n\r\n"))),
                        i + 1,
                    ))
                }
            });
            (
                [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(stream),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Each frame leaves when written, as Gemini's would.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), firsts)
}

async fn room_of(db: &tokio_postgres::Client, message: Uuid) -> anyhow::Result<Uuid> {
    Ok(db
        .query_one(
            "SELECT chatroom_id FROM messages WHERE id = $1",
            &[&message],
        )
        .await?
        .get(0))
}

fn stream_url(s: &Settings, room: Uuid, message: Uuid) -> String {
    format!("{}/chatroom/{room}/messages/{message}/stream", s.base)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();

    // 1. First frame at the fake → first `delta` at a client of the local server:
    // the worker (here) appends to Redis, the server's XREAD wakes, the event goes out.
    let (gemini, firsts) = streaming_gemini(5, Duration::from_millis(20)).await;
    let worker = worker(s, &gemini)?;
    let n = if s.quick { 30 } else { 300 };
    let mut latencies = Vec::with_capacity(n);
    for id in pending_messages(db, f, n).await? {
        let room = room_of(db, id).await?;
        let response = client
            .get(stream_url(s, room, id))
            .bearer_auth(&f.token)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "stream: {}", response.status());
        let mut body = response.bytes_stream();
        let job = tokio::spawn({
            let worker = worker.clone();
            async move { worker.process(ReplyJob { message_id: id }, 1).await }
        });
        let mut text = String::new();
        let mut first_delta = None;
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?));
            if first_delta.is_none() && text.contains("event: delta") {
                first_delta = Some(Instant::now());
            }
            if text.contains("event: done") {
                break;
            }
        }
        anyhow::ensure!(job.await? == Ok(Outcome::Answered), "not answered");
        let first_frame = *firsts.lock().unwrap().last().expect("a first frame");
        let first_delta =
            first_delta.ok_or_else(|| anyhow::anyhow!("the stream ended without a delta"))?;
        latencies.push(ms(first_delta.saturating_duration_since(first_frame)));
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    report.add(
        7,
        "live replies",
        &format!("Gemini's first frame → client's first delta, {n} replies"),
        "ms",
        latencies.clone(),
    );
    report.add(7, "live replies", "  the same: p99", "ms", vec![pct(0.99)]);

    // 2. Open streams held at once (messages that stay pending: each stream waits in
    // XREAD BLOCK on a Redis connection of its own), and the server's memory.
    let Some(pid) = std::env::var("BENCH_SERVER_PID")
        .ok()
        .and_then(|p| p.parse().ok())
    else {
        report
            .notes
            .push("live replies: BENCH_SERVER_PID unset, memory not measured".into());
        return Ok(());
    };
    let total = if s.quick { 100 } else { 1000 };
    let steps = [0, total / 4, total / 2, total];
    let ids = pending_messages(db, f, total).await?;
    let mut open = Vec::with_capacity(total);
    let base_rss = rss_mb(pid).unwrap_or(f64::NAN);
    report.add(
        7,
        "live replies",
        "local server RSS before opening streams",
        "MB",
        vec![base_rss],
    );
    for (i, id) in ids.iter().enumerate() {
        let room = room_of(db, *id).await?;
        let response = client
            .get(stream_url(s, room, *id))
            .bearer_auth(&f.token)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "stream {i} refused: {}",
            response.status()
        );
        open.push(response);
        if steps.contains(&(i + 1)) {
            // Let the server settle (every stream reading) before looking.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss = rss_mb(pid).unwrap_or(f64::NAN);
            report.add(
                7,
                "live replies",
                &format!("local server RSS with {} open streams", i + 1),
                "MB",
                vec![rss],
            );
            if i + 1 == total {
                report.add(
                    7,
                    "live replies",
                    "  memory per open stream",
                    "KB",
                    vec![(rss - base_rss) * 1024.0 / total as f64],
                );
            }
        }
    }
    drop(open);
    Ok(())
}
