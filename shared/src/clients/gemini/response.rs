//! Gemini's answers: the response format, a whole reply read from it, and error answers
//! (retryable or not, with the delay Gemini asks for).

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::chat::model::failure;
use crate::chat::model::{ModelError, ModelReply};

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
    let text = candidate.content.map(Content::text).unwrap_or_default();
    decide(text, finish_reason)
}

/// Finish reasons that end a reply for good when it has no text, with a sentence for people.
fn stopped_without_text(finish_reason: &str) -> Option<&'static str> {
    match finish_reason {
        "RECITATION" => Some("it would have repeated protected text"),
        "LANGUAGE" => Some("the language of the request is not supported"),
        "OTHER" => Some("it stopped for an unspecified reason"),
        _ => None,
    }
}

/// A reply's text and finish reason → the reply, or why there is none.
pub(super) fn decide(text: String, finish_reason: String) -> Result<ModelReply, ModelError> {
    if text.trim().is_empty() {
        if is_safety_stop(&finish_reason) {
            return Ok(ModelReply::Blocked {
                reason: format!("reply blocked: {finish_reason}"),
            });
        }
        if finish_reason == "MAX_TOKENS" {
            return Err(ModelError::Permanent {
                message: "the output token budget ran out before any text was produced".into(),
                reason: failure::OUTPUT_LIMIT,
            });
        }
        // The model chose to stop with nothing to say: asking again gives the same.
        if let Some(why) = stopped_without_text(&finish_reason) {
            return Err(ModelError::Permanent {
                message: format!("the model gave no answer ({finish_reason}): {why}"),
                reason: failure::MODEL_NO_ANSWER,
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

pub(super) fn is_safety_stop(finish_reason: &str) -> bool {
    matches!(
        finish_reason,
        "SAFETY" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" | "IMAGE_SAFETY"
    )
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
        429 => ModelError::RateLimited {
            message,
            retry_after,
        },
        408 | 500 | 502 | 503 | 504 => ModelError::Transient {
            message,
            retry_after,
        },
        // A bad key, a key without access, an unknown model: the operator's to fix.
        401 | 403 | 404 => ModelError::Operator { message },
        _ => ModelError::Permanent {
            message,
            reason: failure::MODEL_REFUSED,
        },
    }
}

/// `"12s"` or `"1.5s"` → a duration.
fn parse_delay(raw: &str) -> Option<Duration> {
    let secs: f64 = raw.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

pub(super) fn transient(message: String) -> ModelError {
    ModelError::Transient {
        message,
        retry_after: None,
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

impl Content {
    /// The parts' text, thoughts skipped.
    pub(super) fn text(self) -> String {
        self.parts
            .into_iter()
            .filter(|p| !p.thought)
            .filter_map(|p| p.text)
            .collect()
    }
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
pub(super) struct ErrorEnvelope {
    pub(super) error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) status: String,
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
    use serde_json::{Value, json};

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
            ModelError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(1500)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_error(StatusCode::BAD_REQUEST, "{}"),
            ModelError::Permanent { .. }
        ));
        for operator in [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
        ] {
            assert!(matches!(
                classify_error(operator, "{}"),
                ModelError::Operator { .. }
            ));
        }
        assert!(matches!(
            classify_error(StatusCode::SERVICE_UNAVAILABLE, "oops"),
            ModelError::Transient {
                retry_after: None,
                ..
            }
        ));
    }
}
