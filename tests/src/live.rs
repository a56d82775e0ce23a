//! Live replies in tests: a fake Gemini that streams `text/event-stream` frames with
//! real pauses between them (wiremock can only delay a whole response), and a reader
//! of the stream route's server-sent events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::time::Instant;

/// One answer of the fake, in the order requests arrive (the last one repeats).
#[derive(Clone)]
pub enum Script {
    /// SSE frames, each sent `gap` after the previous one (the first too). `broken`
    /// cuts the connection after the last frame instead of ending the body.
    Frames {
        frames: Vec<Value>,
        gap: Duration,
        broken: bool,
    },
    /// A non-2xx answer with a JSON body, before any frame.
    Status(u16, Value),
}

impl Script {
    /// The text as Gemini streams it: one frame per piece, the last with `finishReason`.
    pub fn text(pieces: &[&str], finish_reason: &str, gap: Duration) -> Self {
        let n = pieces.len();
        let frames = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut candidate =
                    json!({ "content": { "role": "model", "parts": [{ "text": p }] } });
                if i + 1 == n {
                    candidate["finishReason"] = json!(finish_reason);
                }
                let mut frame = json!({ "candidates": [candidate] });
                if i + 1 == n {
                    frame["usageMetadata"] =
                        json!({ "promptTokenCount": 5, "candidatesTokenCount": n });
                }
                frame
            })
            .collect();
        Script::Frames {
            frames,
            gap,
            broken: false,
        }
    }
}

#[derive(Default)]
struct Shared {
    scripts: VecDeque<Script>,
    requests: usize,
    first_frame_at: Vec<Instant>,
    last_frame_at: Option<Instant>,
    frames_sent: usize,
}

#[derive(Clone)]
pub struct FakeGemini {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl FakeGemini {
    /// Listens on a random local port and answers every POST with the next script.
    pub async fn start(scripts: Vec<Script>) -> Self {
        let shared = Arc::new(Mutex::new(Shared {
            scripts: scripts.into(),
            ..Default::default()
        }));
        let state = shared.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let state = state.clone();
            async move { answer(state, headers).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, shared }
    }

    pub fn requests(&self) -> usize {
        self.shared.lock().unwrap().requests
    }

    pub fn frames_sent(&self) -> usize {
        self.shared.lock().unwrap().frames_sent
    }

    /// When the last frame of the most recent stream went out (`None` while it has not).
    pub fn last_frame_at(&self) -> Option<Instant> {
        self.shared.lock().unwrap().last_frame_at
    }

    /// When the first frame of each stream went out.
    pub fn first_frames_at(&self) -> Vec<Instant> {
        self.shared.lock().unwrap().first_frame_at.clone()
    }

    /// Replaces the scripts (for the next requests).
    pub fn script(&self, scripts: Vec<Script>) {
        self.shared.lock().unwrap().scripts = scripts.into();
    }
}

async fn answer(state: Arc<Mutex<Shared>>, _headers: HeaderMap) -> Response {
    let script = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.last_frame_at = None;
        if s.scripts.len() > 1 {
            s.scripts.pop_front().unwrap()
        } else {
            s.scripts.front().cloned().expect("a script")
        }
    };
    match script {
        Script::Status(code, body) => (
            StatusCode::from_u16(code).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Script::Frames {
            frames,
            gap,
            broken,
        } => {
            let total = frames.len();
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let state = state.clone();
                let frame = frames.get(i).cloned();
                async move {
                    match frame {
                        Some(frame) => {
                            tokio::time::sleep(gap).await;
                            let mut s = state.lock().unwrap();
                            s.frames_sent += 1;
                            if i == 0 {
                                s.first_frame_at.push(Instant::now());
                            }
                            if i + 1 == total {
                                s.last_frame_at = Some(Instant::now());
                            }
                            let bytes = Bytes::from(format!("data: {frame}\r\n\r\n"));
                            Some((Ok::<_, std::io::Error>(bytes), i + 1))
                        }
                        None if broken && i == total => {
                            // After a pause: hyper drops what it has not flushed yet
                            // when a body fails.
                            tokio::time::sleep(gap).await;
                            Some((Err(std::io::Error::other("cut off")), i + 1))
                        }
                        None => None,
                    }
                }
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

/// One server-sent event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
    /// When the client had it.
    pub at: Instant,
}

/// Reads the events of a streaming response body, as they arrive.
pub struct SseReader {
    body: Body,
    buf: String,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
}

impl SseReader {
    pub fn new(body: Body) -> Self {
        Self {
            body,
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event; `None` when the body ends. Panics after `timeout` of silence.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                    at: Instant::now(),
                };
                let mut data = String::new();
                let mut fields = 0;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some((k, v)) = line.split_once(':') {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        fields += 1;
                        match k {
                            "id" => event.id = Some(v.to_string()),
                            "event" => event.event = v.to_string(),
                            "data" => data.push_str(v),
                            _ => {}
                        }
                    }
                }
                if fields == 0 {
                    continue;
                }
                event.data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                return Some(event);
            }
            let frame = tokio::time::timeout(timeout, self.body.frame())
                .await
                .expect("an event within the timeout")?;
            let frame = frame.expect("the body reads");
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    /// Every event until the body ends.
    pub async fn rest(&mut self, timeout: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next(timeout).await {
            out.push(e);
        }
        out
    }
}

/// The text a client shows after these events: deltas appended, `reset` clears.
pub fn shown_text(events: &[SseEvent]) -> String {
    let mut text = String::new();
    for e in events {
        match e.event.as_str() {
            "delta" => text.push_str(e.data["text"].as_str().unwrap()),
            "reset" => text.clear(),
            _ => {}
        }
    }
    text
}
