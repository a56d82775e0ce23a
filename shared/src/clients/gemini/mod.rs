//! Google Gemini `generateContent` and `streamGenerateContent` (SSE) over reqwest: the
//! client and the requests it sends. Reading the answers: `response`, and `stream` for
//! the streamed ones.

mod response;
mod stream;

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat::model::{
    ModelError, ModelReply, Prompt, ReplyModel, ReplySink, Role, Turn, clean_title,
};
use crate::config::GeminiSettings;
use response::transient;

pub use response::{
    Candidate, Content, GenerateResponse, Part, PromptFeedback, UsageMetadata, classify_error,
    interpret,
};

const SYSTEM_PROMPT: &str =
    "You are a helpful assistant in a chat app. Answer clearly and concisely.";

pub struct GeminiClient {
    /// Built on first use: TLS set-up is the costliest part of the worker's cold start,
    /// and a batch of already-answered records never needs it.
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    base_url: String,
    default_model: String,
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
            base_url: settings.base_url.clone(),
            default_model: settings.model.clone(),
            api_key,
            max_output_tokens: settings.max_output_tokens,
        })
    }

    /// No whole-request timeout here: a streamed reply may take longer than any single
    /// wait should. `read_timeout` bounds each wait for the next bytes (the headers, then
    /// every chunk), so a stalled stream fails while a long, live one finishes.
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(self.timeout)
                .build()
                .expect("a default TLS configuration builds")
        })
    }

    /// One POST to the API with the key; a failure to get any answer is transient.
    /// `whole` bounds the entire exchange (the non-streamed calls).
    async fn post(
        &self,
        url: &str,
        body: &Value,
        whole: Option<Duration>,
    ) -> Result<reqwest::Response, ModelError> {
        let mut request = self
            .http()
            .post(url)
            .header("x-goog-api-key", &self.api_key)
            .json(body);
        if let Some(whole) = whole {
            request = request.timeout(whole);
        }
        request
            .send()
            .await
            .map_err(|e| transient(format!("request failed: {e}")))
    }

    /// `{base}/v1beta/models/{model}{method}` (`method` with its colon, as the literal
    /// scripts/sam-check.sh looks for); the chatroom's model or the default (names are
    /// checked against `GEMINI_MODELS` before they get here).
    fn url(&self, model: Option<&str>, method: &str) -> String {
        format!(
            "{}/v1beta/models/{}{method}",
            self.base_url,
            model.unwrap_or(&self.default_model)
        )
    }

    async fn generate(
        &self,
        model: Option<&str>,
        body: Value,
    ) -> Result<GenerateResponse, ModelError> {
        let started = std::time::Instant::now();
        let url = self.url(model, ":generateContent");
        let response = self.post(&url, &body, Some(self.timeout)).await?;
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

    /// `streamGenerateContent?alt=sse`: each piece of text handed to `sink` as it arrives.
    async fn generate_streaming(
        &self,
        model: Option<&str>,
        body: Value,
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let started = std::time::Instant::now();
        let url = self.url(model, ":streamGenerateContent?alt=sse");
        let response = self.post(&url, &body, None).await?;
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
            return stream::from_json(&text, sink, started);
        }
        stream::from_sse(response, sink, started).await
    }
}

/// The request for `prompt`: its turns as `contents`; the service's system prompt, then
/// the chatroom's instructions (a part of their own), as `systemInstruction`.
pub fn request_body(prompt: &Prompt, max_output_tokens: u32) -> Value {
    let contents: Vec<Value> = prompt
        .turns
        .iter()
        .map(|t| {
            let role = match t.role {
                Role::User => "user",
                Role::Model => "model",
            };
            json!({ "role": role, "parts": [{ "text": t.text }] })
        })
        .collect();
    let mut system = vec![json!({ "text": SYSTEM_PROMPT })];
    if let Some(instructions) = &prompt.instructions {
        system.push(json!({ "text": format!(
            "The user set these instructions for this conversation:\n{instructions}"
        ) }));
    }
    json!({
        "contents": contents,
        "systemInstruction": { "parts": system },
        "generationConfig": { "maxOutputTokens": max_output_tokens },
    })
}

#[async_trait::async_trait]
impl ReplyModel for GeminiClient {
    async fn reply(&self, prompt: &Prompt) -> Result<ModelReply, ModelError> {
        let body = request_body(prompt, self.max_output_tokens);
        interpret(self.generate(prompt.model.as_deref(), body).await?)
    }

    async fn reply_streaming(
        &self,
        prompt: &Prompt,
        sink: &mut dyn ReplySink,
    ) -> Result<ModelReply, ModelError> {
        let body = request_body(prompt, self.max_output_tokens);
        self.generate_streaming(prompt.model.as_deref(), body, sink)
            .await
    }

    async fn title(&self, user_text: &str, reply_text: &str) -> Result<String, ModelError> {
        let prompt = format!(
            "Write a title of at most six words for a chat that starts like this. \
             Answer with the title only.\n\nUser: {}\n\nAssistant: {}",
            user_text.chars().take(1000).collect::<String>(),
            reply_text.chars().take(1000).collect::<String>()
        );
        let turn = Prompt::of(vec![Turn {
            role: Role::User,
            text: prompt,
        }]);
        match interpret(self.generate(None, request_body(&turn, 64)).await?)? {
            ModelReply::Text { text, .. } => Ok(clean_title(&text)),
            ModelReply::Blocked { reason } => Err(ModelError::Permanent {
                message: reason,
                reason: crate::chat::model::failure::MODEL_REFUSED,
            }),
        }
    }
}
