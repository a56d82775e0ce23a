//! The streamed Gemini call against a fake that streams slowly: a long, live reply
//! finishes (the timeout bounds each wait, not the whole reply), a stalled one fails.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures_util::StreamExt;
use shared::chat::model::{ModelError, ModelReply, Prompt, ReplyModel, ReplySink, Role, Turn};
use shared::clients::gemini::GeminiClient;
use shared::config::{GeminiSettings, Secret};

/// A streamGenerateContent that sends `pieces` frames `gap` apart, then (if `finish`)
/// a last frame with finishReason STOP; `stall` waits that long before the last frame.
async fn slow_gemini(pieces: usize, gap: Duration, stall: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let frames = futures_util::stream::iter(0..=pieces).then(move |i| async move {
            let frame = if i < pieces {
                tokio::time::sleep(gap).await;
                serde_json::json!({"candidates": [{"content": {"parts": [{"text": format!("w{i} ")}]}}]})
            } else {
                tokio::time::sleep(stall).await;
                serde_json::json!({"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}]})
            };
            Ok::<_, Infallible>(Bytes::from(format!("data: {frame}\r\n\r\n")))
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(frames))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client(base_url: String, timeout: Duration) -> GeminiClient {
    GeminiClient::new(&GeminiSettings {
        api_key: Some(Secret::new("test-key")),
        model: "gemini-test".into(),
        models: vec!["gemini-test".into()],
        pro_only_models: vec![],
        base_url,
        request_timeout: timeout,
        retry_budget: Duration::from_secs(1),
        max_output_tokens: 256,
        history_max_messages: 20,
        history_max_chars: 16_000,
    })
    .unwrap()
}

struct Collect(Vec<String>);

impl ReplySink for Collect {
    fn text(&mut self, piece: &str) {
        self.0.push(piece.to_string());
    }
    fn cancelled(&self) -> bool {
        false
    }
}

fn question() -> Prompt {
    Prompt::of(vec![Turn {
        role: Role::User,
        text: "Tell me a long story".into(),
    }])
}

#[tokio::test]
async fn long_replies_finish() {
    // 40 s of streaming, a frame every 2 s, under the default 25 s timeout.
    let base = slow_gemini(20, Duration::from_secs(2), Duration::ZERO).await;
    let model = client(base, Duration::from_secs(25));
    let mut sink = Collect(vec![]);
    let started = std::time::Instant::now();
    let reply = model.reply_streaming(&question(), &mut sink).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(40));
    let expected: String = (0..20).map(|i| format!("w{i} ")).collect();
    assert_eq!(
        reply,
        ModelReply::Text {
            text: expected.clone(),
            finish_reason: "STOP".into()
        }
    );
    assert_eq!(sink.0.concat(), expected);
}

#[tokio::test]
async fn a_stalled_stream_fails_as_transient() {
    // Two quick frames, then silence longer than the timeout.
    let base = slow_gemini(2, Duration::from_millis(10), Duration::from_secs(5)).await;
    let model = client(base, Duration::from_secs(1));
    let mut sink = Collect(vec![]);
    let started = std::time::Instant::now();
    let err = model
        .reply_streaming(&question(), &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Transient { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the idle timeout cut it"
    );
    assert_eq!(sink.0.len(), 2);
}
