//! Google Gemini `generateContent` and `streamGenerateContent` (SSE) over reqwest.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::model::{
    CANCELLED, ModelError, ModelReply, ReplyModel, ReplySink, Role, Turn, clean_title,
};
use crate::config::GeminiSettings;

const SYSTEM_PROMPT: &str =
    "You are a helpful assistant in a chat app. Answer clearly and concisely.";

pub struct GeminiClient {
    /// Built on first use: TLS set-up is the costliest part of the worker's cold start,
    /// and a batch of already-answered records never needs it.
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    url: String,
    stream_url: String,
    api_key: String,
    max_output_tokens: u32,
}

impl GeminiClient {
    pub fn new(settings: &GeminiSettings) -> anyhow::Result<Self> {
        let api_key = settings
            .api_key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("configuration error: GOOGLE_API_KEY is required"))?
            .expose()
            .to_string();
        Ok(Self {
            http: std::sync::OnceLock::new(),
            timeout: settings.request_timeout,
            url: format!(
                "{}/v1beta/models/{}:generateContent",
                settings.base_url, settings.model
            ),
            stream_url: format!(
                "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
                settings.base_url, settings.model
            ),
            api_key,
            max_output_tokens: settings.max_output_tokens,
        })
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("a default TLS configuration builds")
        })
    }

    /// One POST to the API with the key; a failure to get any answer is transient.
    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, ModelError> {
        self.http()
            .post(url)
            .header("x-goog-api-key", &self.api_key)
            .json(body)
            .send()
            .await
            .map_err(|e| transient(format!("request failed: {e}")))
    }

    async fn generate(&self, body: Value) -> Result<GenerateResponse, ModelError> {
        let started = std::time::Instant::now();
        let response = self.post(&self.url, &body).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ModelError::Transient {
            message: format!("reading the response failed: {e}"),
            retry_after: None,
        })?;
        if status.is_success() {
            let parsed: GenerateResponse =
                serde_json::from_str(&text).map_err(|e| ModelError::Transient {
                    message: format!("unreadable response: {e}"),
                    retry_after: None,
                })?;
            let usage = parsed.usage_metadata.as_ref();
            crate::telemetry::metrics::gemini_call(
                started.elapsed(),
                usage.and_then(|u| u.prompt_token_count),
                usage.map(UsageMetadata::output_tokens),
            );
            return Ok(parsed);
        }
        Err(classify_error(status, &text))
    }

    /// `streamGenerateContent?alt=sse`: one `GenerateResponse` per SSE frame, each
    /// piece of text handed to `sink` as it arrives; the stream just ends (no marker).
    async fn generate_streaming(
        &self,
        body: Value,
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let started = std::time::Instant::now();
        let response = self.post(&self.stream_url, &body).await?;
        let status = response.status();
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() || !is_sse {
            let text = response
                .text()
                .await
                .map_err(|e| transient(format!("reading the response failed: {e}")))?;
            if !status.is_success() {
                return Err(classify_error(status, &text));
            }
            // Plain JSON (what the endpoint sends without `alt=sse`: one response or an
            // array of them) is read as the same frames, all at once.
            let frames: Vec<GenerateResponse> = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(items)) => items
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>(),
                Ok(one) => serde_json::from_value(one).map(|r| vec![r]),
                Err(e) => Err(e),
            }
            .map_err(|e| transient(format!("unreadable response: {e}")))?;
            let mut reply = Streamed::default();
            for frame in frames {
                if let Some(done) = reply.take(frame, sink) {
                    reply.record(started);
                    return Ok(done);
                }
            }
            reply.record(started);
            return reply.finish();
        }
        let mut frames = response.bytes_stream().eventsource();
        let mut reply = Streamed::default();
        while let Some(event) = frames.next().await {
            let event = event.map_err(|e| transient(format!("the stream broke: {e}")))?;
            if event.data.trim().is_empty() {
                continue;
            }
            let frame: GenerateResponse = serde_json::from_str(&event.data).map_err(|e| {
                // An error in the middle of a stream comes as an error envelope frame.
                match serde_json::from_str::<ErrorEnvelope>(&event.data) {
                    Ok(env) => transient(format!(
                        "error in the stream: {} {}",
                        env.error.status, env.error.message
                    )),
                    Err(_) => transient(format!("unreadable stream frame: {e}")),
                }
            })?;
            if let Some(done) = reply.take(frame, sink) {
                reply.record(started);
                return Ok(done);
            }
        }
        reply.record(started);
        reply.finish()
    }
}

fn transient(message: String) -> ModelError {
    ModelError::Transient {
        message,
        retry_after: None,
    }
}

/// A streamed reply put together frame by frame.
#[derive(Default)]
struct Streamed {
    text: String,
    finish_reason: Option<String>,
    /// The newest counts (the last frame carries the totals).
    usage: Option<UsageMetadata>,
}

impl Streamed {
    /// Adds one frame; `Some` when the reply ends here (blocked, or cancelled).
    fn take(&mut self, frame: GenerateResponse, sink: &mut dyn ReplySink) -> Option<ModelReply> {
        if frame.usage_metadata.is_some() {
            self.usage = frame.usage_metadata;
        }
        if let Some(reason) = frame.prompt_feedback.and_then(|f| f.block_reason) {
            return Some(ModelReply::Blocked {
                reason: format!("prompt blocked: {reason}"),
            });
        }
        if let Some(candidate) = frame.candidates.into_iter().next() {
            if candidate.finish_reason.is_some() {
                self.finish_reason = candidate.finish_reason;
            }
            let piece: String = candidate
                .content
                .map(|c| c.parts)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !p.thought)
                .filter_map(|p| p.text)
                .collect();
            if !piece.is_empty() {
                sink.text(&piece);
                self.text.push_str(&piece);
            }
        }
        sink.cancelled().then(|| ModelReply::Text {
            text: std::mem::take(&mut self.text),
            finish_reason: CANCELLED.into(),
        })
    }

    /// Latency and tokens of the call, as for a whole reply (EMF metrics).
    fn record(&self, started: std::time::Instant) {
        let usage = self.usage.as_ref();
        crate::telemetry::metrics::gemini_call(
            started.elapsed(),
            usage.and_then(|u| u.prompt_token_count),
            usage.map(UsageMetadata::output_tokens),
        );
    }

    /// The stream ended: the same rules as a whole reply, except that a safety stop
    /// after some text blocks the reply (the text shown so far is withdrawn).
    fn finish(self) -> Result<ModelReply, ModelError> {
        let finish_reason = self.finish_reason.unwrap_or_else(|| "STOP".into());
        if is_safety_stop(&finish_reason) {
            return Ok(ModelReply::Blocked {
                reason: format!("reply blocked: {finish_reason}"),
            });
        }
        decide(self.text, finish_reason)
    }
}

fn is_safety_stop(finish_reason: &str) -> bool {
    matches!(
        finish_reason,
        "SAFETY" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" | "IMAGE_SAFETY"
    )
}

pub fn request_body(conversation: &[Turn], max_output_tokens: u32) -> Value {
    let contents: Vec<Value> = conversation
        .iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Model => "model",
            };
            json!({ "role": role, "parts": [{ "text": t.text }] })
        })
        .collect();
    json!({
        "contents": contents,
        "systemInstruction": { "parts": [{ "text": SYSTEM_PROMPT }] },
        "generationConfig": { "maxOutputTokens": max_output_tokens },
    })
}

/// Turns a non-2xx answer into a retryable or a permanent error.
pub fn classify_error(status: StatusCode, body: &str) -> ModelError {
    let parsed: Option<ErrorEnvelope> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .map(|e| {
            format!(
                "{} {}: {}",
                status.as_u16(),
                e.error.status,
                e.error.message
            )
        })
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let retry_after = parsed.as_ref().and_then(|e| {
        e.error
            .details
            .iter()
            .filter(|d| d.kind.ends_with("google.rpc.RetryInfo"))
            .find_map(|d| d.retry_delay.as_deref().and_then(parse_delay))
    });
    match status.as_u16() {
        408 | 429 | 500 | 502 | 503 | 504 => ModelError::Transient {
            message,
            retry_after,
        },
        _ => ModelError::Permanent { message },
    }
}

/// `"12s"` or `"1.5s"` → a duration.
fn parse_delay(raw: &str) -> Option<Duration> {
    let secs: f64 = raw.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

/// Reads the first candidate: text (thoughts skipped), or why there is none.
pub fn interpret(response: GenerateResponse) -> Result<ModelReply, ModelError> {
    if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
        return Ok(ModelReply::Blocked {
            reason: format!("prompt blocked: {reason}"),
        });
    }
    let Some(candidate) = response.candidates.into_iter().next() else {
        return Err(ModelError::Transient {
            message: "no candidates in the response".into(),
            retry_after: None,
        });
    };
    let finish_reason = candidate.finish_reason.unwrap_or_else(|| "STOP".into());
    let text: String = candidate
        .content
        .map(|c| c.parts)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.thought)
        .filter_map(|p| p.text)
        .collect();
    decide(text, finish_reason)
}

/// A reply's text and finish reason → the reply, or why there is none.
fn decide(text: String, finish_reason: String) -> Result<ModelReply, ModelError> {
    if text.trim().is_empty() {
        if is_safety_stop(&finish_reason) {
            return Ok(ModelReply::Blocked {
                reason: format!("reply blocked: {finish_reason}"),
            });
        }
        if finish_reason == "MAX_TOKENS" {
            return Err(ModelError::Permanent {
                message: "the output token budget ran out before any text was produced".into(),
            });
        }
        return Err(ModelError::Transient {
            message: format!("empty reply (finishReason {finish_reason})"),
            retry_after: None,
        });
    }
    Ok(ModelReply::Text {
        text,
        finish_reason,
    })
}

#[async_trait::async_trait]
impl ReplyModel for GeminiClient {
    async fn reply(&self, conversation: &[Turn]) -> Result<ModelReply, ModelError> {
        let body = request_body(conversation, self.max_output_tokens);
        interpret(self.generate(body).await?)
    }

    async fn reply_streaming(
        &self,
        conversation: &[Turn],
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let body = request_body(conversation, self.max_output_tokens);
        self.generate_streaming(body, sink).await
    }

    async fn title(&self, user_text: &str, reply_text: &str) -> Result<String, ModelError> {
        let prompt = format!(
            "Write a title of at most six words for a chat that starts like this. \
             Answer with the title only.\n\nUser: {}\n\nAssistant: {}",
            user_text.chars().take(1000).collect::<String>(),
            reply_text.chars().take(1000).collect::<String>()
        );
        let turn = [Turn {
            role: Role::User,
            text: prompt,
        }];
        match interpret(self.generate(request_body(&turn, 64)).await?)? {
            ModelReply::Text { text, .. } => Ok(clean_title(&text)),
            ModelReply::Blocked { reason } => Err(ModelError::Permanent { message: reason }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
}

/// Token counts Gemini bills; thinking tokens are output tokens too.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    pub prompt_token_count: Option<u64>,
    pub candidates_token_count: Option<u64>,
    pub thoughts_token_count: Option<u64>,
}

impl UsageMetadata {
    pub fn output_tokens(&self) -> u64 {
        self.candidates_token_count.unwrap_or(0) + self.thoughts_token_count.unwrap_or(0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub content: Option<Content>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Content {
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
pub struct Part {
    pub text: Option<String>,
    #[serde(default)]
    pub thought: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    #[serde(rename = "@type", default)]
    kind: String,
    retry_delay: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> GenerateResponse {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn usage_metadata_counts_thinking_as_output() {
        let r = parse(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 200, "totalTokenCount": 350}
        }));
        let usage = r.usage_metadata.expect("usageMetadata is read");
        assert_eq!(usage.prompt_token_count, Some(120));
        assert_eq!(usage.output_tokens(), 230);
        assert!(parse(json!({"candidates": []})).usage_metadata.is_none());
    }

    #[test]
    fn reads_text_and_skips_thoughts() {
        let r = parse(
            json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true}, {"text": "Hello"}, {"text": " there"}
        ]}, "finishReason": "STOP"}]}),
        );
        assert_eq!(
            interpret(r).unwrap(),
            ModelReply::Text {
                text: "Hello there".into(),
                finish_reason: "STOP".into()
            }
        );
    }

    #[test]
    fn blocked_prompt_and_reply() {
        let r = parse(json!({"promptFeedback": {"blockReason": "SAFETY"}}));
        assert!(matches!(interpret(r).unwrap(), ModelReply::Blocked { .. }));
        let r = parse(json!({"candidates": [{"finishReason": "SAFETY"}]}));
        assert!(matches!(interpret(r).unwrap(), ModelReply::Blocked { .. }));
    }

    #[test]
    fn max_tokens_keeps_partial_text() {
        let r = parse(
            json!({"candidates": [{"content": {"parts": [{"text": "Partial"}]}, "finishReason": "MAX_TOKENS"}]}),
        );
        assert_eq!(
            interpret(r).unwrap(),
            ModelReply::Text {
                text: "Partial".into(),
                finish_reason: "MAX_TOKENS".into()
            }
        );
    }

    #[test]
    fn errors_are_classified_with_retry_delay() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}});
        match classify_error(StatusCode::TOO_MANY_REQUESTS, &body.to_string()) {
            ModelError::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_error(StatusCode::BAD_REQUEST, "{}"),
            ModelError::Permanent { .. }
        ));
        assert!(matches!(
            classify_error(StatusCode::SERVICE_UNAVAILABLE, "oops"),
            ModelError::Transient {
                retry_after: None,
                ..
            }
        ));
    }

    /// Collects pieces; says "cancelled" after `stop_after` pieces.
    struct Collect {
        pieces: Vec<String>,
        stop_after: usize,
    }

    impl ReplySink for Collect {
        fn text(&mut self, piece: &str) {
            self.pieces.push(piece.to_string());
        }
        fn cancelled(&self) -> bool {
            self.pieces.len() >= self.stop_after
        }
    }

    fn frame(text: Option<&str>, finish: Option<&str>) -> GenerateResponse {
        let mut candidate = json!({});
        if let Some(t) = text {
            candidate["content"] = json!({"parts": [{"text": t}]});
        }
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        parse(json!({"candidates": [candidate]}))
    }

    #[test]
    fn streamed_frames_add_up_and_hand_out_pieces() {
        let mut sink = Collect {
            pieces: vec![],
            stop_after: usize::MAX,
        };
        let mut reply = Streamed::default();
        for f in [
            frame(Some("Hel"), None),
            frame(Some("lo"), None),
            frame(None, Some("STOP")),
        ] {
            assert!(reply.take(f, &mut sink).is_none());
        }
        assert_eq!(sink.pieces, ["Hel", "lo"]);
        assert_eq!(
            reply.finish().unwrap(),
            ModelReply::Text {
                text: "Hello".into(),
                finish_reason: "STOP".into()
            }
        );
    }

    #[test]
    fn a_safety_stop_after_text_blocks_and_cancel_keeps_the_text_so_far() {
        let mut sink = Collect {
            pieces: vec![],
            stop_after: usize::MAX,
        };
        let mut reply = Streamed::default();
        reply.take(frame(Some("Sure, "), None), &mut sink);
        reply.take(frame(None, Some("SAFETY")), &mut sink);
        assert!(matches!(
            reply.finish().unwrap(),
            ModelReply::Blocked { .. }
        ));

        let mut sink = Collect {
            pieces: vec![],
            stop_after: 2,
        };
        let mut reply = Streamed::default();
        assert!(reply.take(frame(Some("One "), None), &mut sink).is_none());
        assert_eq!(
            reply.take(frame(Some("two "), None), &mut sink),
            Some(ModelReply::Text {
                text: "One two ".into(),
                finish_reason: CANCELLED.into()
            })
        );
    }
}
