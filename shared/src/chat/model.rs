//! The reply model seen by the worker: one trait, with Gemini as the real provider and
//! an offline stand-in for local runs without an API key.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Model,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// What one reply is asked from: the conversation and its chatroom's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    /// Strictly alternating, opening and ending with a user turn.
    pub turns: Vec<Turn>,
    /// The chatroom's instructions: the provider's system instruction, after the
    /// service's own. Messages never go there, only this setting.
    pub instructions: Option<String>,
    /// The model to ask; `None` means the configured default.
    pub model: Option<String>,
}

impl Prompt {
    /// A prompt with the default model and no instructions.
    pub fn of(turns: Vec<Turn>) -> Self {
        Self {
            turns,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelReply {
    /// `finish_reason` as the provider reports it (`STOP`, `MAX_TOKENS`, ...).
    Text { text: String, finish_reason: String },
    /// The prompt or the reply was blocked by safety filters.
    Blocked { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Worth retrying: rate limits, overload, network trouble.
    #[error("transient model error: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Gemini's quota said wait (429): retried inside the delivery's budget like a
    /// transient error, then handed back to the queue with a delay, never spending one of
    /// the message's deliveries.
    #[error("rate limited by the model: {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: the request as sent cannot be answered. `reason` is what
    /// the client reads (one of [`failure`]); `message` is the detail, for the logs only.
    #[error("model error: {message}")]
    Permanent {
        message: String,
        reason: &'static str,
    },
    /// The operator's fault, not the user's: a bad or revoked API key, an unknown model
    /// (401, 403, 404). Retried like a transient error (the message stays pending while
    /// its deliveries last) and counted as `GeminiOperatorErrors`, which alarms.
    #[error("model configuration error: {message}")]
    Operator { message: String },
}

/// Why a message ended `failed`, as clients read it in `failure_reason`: a stable code,
/// a colon, a sentence for people. The upstream error text goes to the logs, never here.
pub mod failure {
    pub const MODEL_REFUSED: &str =
        "model_refused: the model could not answer this message as it was sent";
    pub const MODEL_NO_ANSWER: &str = "model_no_answer: the model stopped without an answer (for example, it would have repeated protected text)";
    pub const OUTPUT_LIMIT: &str =
        "output_limit: the reply's length limit ran out before any text was produced";
    pub const DEAD_LETTERED: &str =
        "dead_lettered: no reply could be produced: every delivery of this message failed";
    pub const STUCK: &str =
        "stuck: no reply could be produced: the message stayed unanswered through every delivery";
    pub const QUEUE_UNAVAILABLE: &str =
        "queue_unavailable: the message could not be queued for a reply";

    /// The model stayed unavailable (overloaded, rate-limited, down) through `deliveries`.
    pub fn model_unavailable(deliveries: u32) -> String {
        format!(
            "model_unavailable: no reply could be produced: the model stayed unavailable through {deliveries} deliveries"
        )
    }
}

/// `finish_reason` of a reply the user stopped: the text is what was produced until then.
pub const CANCELLED: &str = "cancelled";

/// Where a reply goes while it is being produced.
pub trait ReplySink: Send {
    /// The next piece of the reply's text.
    fn text(&mut self, piece: &str);
    /// The user asked to stop: the model stops reading and returns what it has.
    fn cancelled(&self) -> bool;
}

/// A sink that keeps nothing (titles, callers that only want the final reply).
pub struct Discard;

impl ReplySink for Discard {
    fn text(&mut self, _piece: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
pub trait ReplyModel: Send + Sync {
    /// One attempt at a reply to the last user turn; the worker owns retries.
    async fn reply(&self, prompt: &Prompt) -> Result<ModelReply, ModelError>;

    /// The same attempt, handing the text to `sink` as it is produced. Stops early,
    /// with the text so far and finish reason [`CANCELLED`], once the sink says so.
    /// By default the whole reply arrives as one piece.
    async fn reply_streaming(
        &self,
        prompt: &Prompt,
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let reply = self.reply(prompt).await?;
        if let ModelReply::Text { text, .. } = &reply {
            sink.text(text);
        }
        Ok(reply)
    }
    /// A short title for a conversation that starts with this exchange.
    async fn title(&self, user_text: &str, reply_text: &str) -> Result<String, ModelError>;
}

/// Used by `make dev` when `GOOGLE_API_KEY` is not set; its replies say so plainly.
/// Never used by the Lambda worker, which refuses to start without a key.
pub struct OfflineModel;

pub const OFFLINE_LABEL: &str =
    "[offline reply: GOOGLE_API_KEY is not set, so no model was called]";

#[async_trait::async_trait]
impl ReplyModel for OfflineModel {
    async fn reply(&self, prompt: &Prompt) -> Result<ModelReply, ModelError> {
        let last = prompt
            .turns
            .last()
            .map(|t| t.text.as_str())
            .unwrap_or_default();
        let preview: String = last.chars().take(200).collect();
        let settings = match (&prompt.model, &prompt.instructions) {
            (None, None) => String::new(),
            (model, instructions) => format!(
                " (Chatroom settings: model {}, {}.)",
                model.as_deref().unwrap_or("default"),
                if instructions.is_some() {
                    "with instructions"
                } else {
                    "no instructions"
                }
            ),
        };
        Ok(ModelReply::Text {
            text: format!(
                "{OFFLINE_LABEL} You said: \"{preview}\" ({} earlier turns were in context.){settings}",
                prompt.turns.len().saturating_sub(1)
            ),
            finish_reason: "OFFLINE".into(),
        })
    }

    /// A few words at a time with a short pause, so that `make dev` shows a live reply:
    /// pieces the size of Gemini's stream frames, not single words (a word every 60 ms
    /// outran the writer's 50 ms window, one Redis stream entry per word; see
    /// docs/performance.md#where-the-time-goes).
    async fn reply_streaming(
        &self,
        prompt: &Prompt,
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let reply = self.reply(prompt).await?;
        let ModelReply::Text { text, .. } = &reply else {
            return Ok(reply);
        };
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        let mut sent = String::new();
        for piece in words.chunks(OFFLINE_WORDS_PER_PIECE) {
            if sink.cancelled() {
                return Ok(ModelReply::Text {
                    text: sent,
                    finish_reason: CANCELLED.into(),
                });
            }
            tokio::time::sleep(OFFLINE_PIECE_DELAY).await;
            let piece = piece.concat();
            sink.text(&piece);
            sent.push_str(&piece);
        }
        Ok(reply)
    }

    async fn title(&self, user_text: &str, _reply_text: &str) -> Result<String, ModelError> {
        Ok(clean_title(user_text))
    }
}

const OFFLINE_WORDS_PER_PIECE: usize = 4;
const OFFLINE_PIECE_DELAY: Duration = Duration::from_millis(200);

/// A title is one line, unquoted, at most 60 characters (on a word boundary when possible).
pub fn clean_title(raw: &str) -> String {
    let line = raw
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let line = line
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '#')
        .trim();
    let line = line.strip_prefix("Title:").unwrap_or(line).trim();
    if line.chars().count() <= 60 {
        return if line.is_empty() {
            "New chat".into()
        } else {
            line.to_string()
        };
    }
    let cut: String = line.chars().take(60).collect();
    let cut = cut
        .rsplit_once(' ')
        .map(|(head, _)| head)
        .filter(|h| h.len() > 20)
        .unwrap_or(&cut);
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_short_single_lines() {
        assert_eq!(clean_title("\"Rust lifetimes\"\nmore"), "Rust lifetimes");
        assert_eq!(clean_title("Title: Trip to Oslo"), "Trip to Oslo");
        assert_eq!(clean_title("   "), "New chat");
        let long = clean_title(&"word ".repeat(40));
        assert!(long.chars().count() <= 61, "{long}");
        assert!(long.ends_with('…'));
    }
}
