//! The streamed answer (`streamGenerateContent?alt=sse`): frames read as they arrive,
//! each piece of text handed on at once, the reply put together from them.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

use super::response::{
    Content, ErrorEnvelope, GenerateResponse, UsageMetadata, decide, is_safety_stop, transient,
};
use crate::chat::model::{CANCELLED, ModelError, ModelReply, ReplySink};

/// Plain JSON (what the endpoint sends without `alt=sse`: one response or an array of
/// them) is read as the same frames, all at once.
pub(super) fn from_json(
    text: &str,
    sink: &mut dyn ReplySink,
    started: std::time::Instant,
) -> Result<ModelReply, ModelError> {
    let frames: Vec<GenerateResponse> = match serde_json::from_str::<Value>(text) {
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
    reply.finish()
}

/// How often a stream waiting for the model's next frame looks at the user's cancel.
const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// One `GenerateResponse` per SSE frame, read as it arrives; the stream just ends (no
/// marker).
pub(super) async fn from_sse(
    response: reqwest::Response,
    sink: &mut dyn ReplySink,
    started: std::time::Instant,
) -> Result<ModelReply, ModelError> {
    let mut frames = response.bytes_stream().eventsource();
    let mut reply = Streamed::default();
    // A cancel is honoured while the model sends nothing too (its thinking can take a
    // while before the first text).
    let mut check = tokio::time::interval(CANCEL_CHECK);
    loop {
        let event = tokio::select! {
            event = frames.next() => match event {
                Some(event) => event,
                None => break,
            },
            _ = check.tick() => {
                if sink.cancelled() {
                    reply.record(started);
                    return Ok(ModelReply::Text {
                        text: std::mem::take(&mut reply.text),
                        finish_reason: CANCELLED.into(),
                    });
                }
                continue;
            }
        };
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
            let piece = candidate.content.map(Content::text).unwrap_or_default();
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
        // The last frame of a finished reply names why it ended; a stream cut short (a
        // dropped connection that still closed cleanly) has none and is not a reply.
        let Some(finish_reason) = self.finish_reason else {
            return Err(transient(format!(
                "the stream ended without a finishReason after {} characters: the reply is incomplete",
                self.text.chars().count()
            )));
        };
        if is_safety_stop(&finish_reason) {
            return Ok(ModelReply::Blocked {
                reason: format!("reply blocked: {finish_reason}"),
            });
        }
        decide(self.text, finish_reason)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        serde_json::from_value(json!({"candidates": [candidate]})).unwrap()
    }

    #[test]
    fn a_truncated_model_stream_is_not_a_complete_reply() {
        let mut sink = Collect {
            pieces: vec![],
            stop_after: usize::MAX,
        };
        let mut reply = Streamed::default();
        reply.take(frame(Some("The answer is"), None), &mut sink);
        let err = reply.finish().unwrap_err();
        assert!(
            matches!(&err, ModelError::Transient { message, .. } if message.contains("without a finishReason")),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_recitation_or_other_finish_is_a_permanent_failure() {
        for reason in ["RECITATION", "OTHER"] {
            let mut sink = Collect {
                pieces: vec![],
                stop_after: usize::MAX,
            };
            let mut reply = Streamed::default();
            reply.take(frame(None, Some(reason)), &mut sink);
            let err = reply.finish().unwrap_err();
            assert!(
                matches!(&err, ModelError::Permanent { message, .. } if message.contains(reason)),
                "{reason}: {err:?}"
            );
        }
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
