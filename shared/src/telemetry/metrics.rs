//! Business metrics in CloudWatch Embedded Metric Format (EMF): one JSON line per flush
//! on stdout, which CloudWatch Logs turns into metrics (no API calls, no extra latency).
//! Call sites use the named functions below, so metric names live in this file only.
//! Without `install` (local server, tests) every function here is a no-op.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_cloudwatch_embedded::Collector;

use crate::billing::webhook;
use crate::chat::outcome::Outcome;
use crate::error::{AppError, AppResult};

/// Every metric this module emits (the template's alarms and dashboard use these names).
pub const NAMES: [&str; 16] = [
    MESSAGES_QUEUED,
    REPLIES_ANSWERED,
    REPLIES_FAILED,
    REPLIES_BLOCKED,
    GEMINI_LATENCY,
    GEMINI_PROMPT_TOKENS,
    GEMINI_OUTPUT_TOKENS,
    GEMINI_OPERATOR_ERRORS,
    DAILY_CAP_REFUSALS,
    OTP_CODES_SENT,
    OTP_EMAILS_FAILED,
    WEBHOOK_EVENTS_APPLIED,
    WEBHOOK_EVENTS_DUPLICATE,
    WEBHOOK_EVENTS_REJECTED,
    CHATROOM_CACHE_HITS,
    CHATROOM_CACHE_MISSES,
];

/// The one dimension every metric carries: which function emitted it.
pub const DIMENSION: &str = "function";
/// Namespace when `METRICS_NAMESPACE` is unset (the template sets the stack name).
pub const DEFAULT_NAMESPACE: &str = "chatroom-lambda";

const MESSAGES_QUEUED: &str = "MessagesQueued";
const REPLIES_ANSWERED: &str = "RepliesAnswered";
const REPLIES_FAILED: &str = "RepliesFailed";
const REPLIES_BLOCKED: &str = "RepliesBlocked";
const GEMINI_LATENCY: &str = "GeminiLatency";
const GEMINI_PROMPT_TOKENS: &str = "GeminiPromptTokens";
const GEMINI_OUTPUT_TOKENS: &str = "GeminiOutputTokens";
const GEMINI_OPERATOR_ERRORS: &str = "GeminiOperatorErrors";
const DAILY_CAP_REFUSALS: &str = "DailyCapRefusals";
const OTP_CODES_SENT: &str = "OtpCodesSent";
const OTP_EMAILS_FAILED: &str = "OtpEmailsFailed";
const WEBHOOK_EVENTS_APPLIED: &str = "WebhookEventsApplied";
const WEBHOOK_EVENTS_DUPLICATE: &str = "WebhookEventsDuplicate";
const WEBHOOK_EVENTS_REJECTED: &str = "WebhookEventsRejected";
const CHATROOM_CACHE_HITS: &str = "ChatroomCacheHits";
const CHATROOM_CACHE_MISSES: &str = "ChatroomCacheMisses";

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the EMF recorder for this process when running on Lambda (or with
/// `METRICS_EMF=1`); `function` becomes the metrics' dimension. Idempotent.
pub fn install(function: &str) {
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    if on_lambda || std::env::var("METRICS_EMF").is_ok_and(|v| v == "1") {
        let namespace =
            std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| DEFAULT_NAMESPACE.into());
        install_with(&namespace, function);
    }
}

/// Installs the recorder unconditionally (tests call this directly).
pub fn install_with(namespace: &str, function: &str) {
    COLLECTOR.get_or_init(|| {
        let collector = metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(namespace.to_owned())
            .with_dimension(DIMENSION, function.to_owned())
            .init()
            .expect("the EMF recorder is installed once per process");
        for name in NAMES {
            let unit = if name == GEMINI_LATENCY {
                Unit::Milliseconds
            } else {
                Unit::Count
            };
            metrics::describe_counter!(name, unit, "");
        }
        collector
    });
}

/// Writes what was recorded since the last flush as EMF lines on stdout. Called once
/// per invocation (HTTP: by `shared::http::app`; worker: after each batch).
pub fn flush() {
    let mut lines = Vec::new();
    flush_into(&mut lines);
    if !lines.is_empty() {
        // One write, so log lines from other tasks cannot land inside a metric line.
        let _ = std::io::stdout().lock().write_all(&lines);
    }
}

/// Like `flush`, into `out`.
pub fn flush_into(out: &mut Vec<u8>) {
    if let Some(collector) = COLLECTOR.get()
        && let Err(e) = collector.flush(&mut *out)
    {
        tracing::warn!(error = %e, "could not serialise metrics");
    }
}

pub fn message_queued() {
    metrics::counter!(MESSAGES_QUEUED).increment(1);
}

/// The worker settled a job. Skipped jobs (redeliveries) are not replies.
pub fn reply_outcome(outcome: &Outcome) {
    let name = match outcome {
        Outcome::Answered => REPLIES_ANSWERED,
        Outcome::Blocked => REPLIES_BLOCKED,
        Outcome::Failed(_) => REPLIES_FAILED,
        Outcome::Skipped(_) => return,
    };
    metrics::counter!(name).increment(1);
}

/// One `generateContent` call: its latency, and tokens from `usageMetadata` when present.
pub fn gemini_call(latency: Duration, prompt_tokens: Option<u64>, output_tokens: Option<u64>) {
    metrics::histogram!(GEMINI_LATENCY).record(latency.as_secs_f64() * 1000.0);
    if let Some(n) = prompt_tokens {
        metrics::counter!(GEMINI_PROMPT_TOKENS).increment(n);
    }
    if let Some(n) = output_tokens {
        metrics::counter!(GEMINI_OUTPUT_TOKENS).increment(n);
    }
}

/// Gemini refused the service's key or model (401, 403, 404): the operator must act.
pub fn gemini_operator_error() {
    metrics::counter!(GEMINI_OPERATOR_ERRORS).increment(1);
}

pub fn daily_cap_refused() {
    metrics::counter!(DAILY_CAP_REFUSALS).increment(1);
}

pub fn otp_code_sent() {
    metrics::counter!(OTP_CODES_SENT).increment(1);
}

/// A code e-mail SES refused or could not take. The client was answered as if it had
/// been sent (a distinct answer would tell that the address is registered), so this
/// metric and its alarm are how anyone learns of it.
pub fn otp_email_failed() {
    metrics::counter!(OTP_EMAILS_FAILED).increment(1);
}

/// A Stripe webhook delivery: applied, duplicate (already recorded) or rejected (bad
/// signature). Ignored event types and database failures (500, counted by the API's
/// 5xx metric) are not counted here.
pub fn webhook_event(result: &AppResult<webhook::Outcome>) {
    let name = match result {
        Ok(webhook::Outcome::Applied) => WEBHOOK_EVENTS_APPLIED,
        Ok(webhook::Outcome::Duplicate) => WEBHOOK_EVENTS_DUPLICATE,
        Err(AppError::InvalidSignature(_)) => WEBHOOK_EVENTS_REJECTED,
        Ok(webhook::Outcome::Ignored) | Err(_) => return,
    };
    metrics::counter!(name).increment(1);
}

/// The chatroom-list cache answered (`hit`) or the database did.
pub fn chatroom_cache(hit: bool) {
    let name = if hit {
        CHATROOM_CACHE_HITS
    } else {
        CHATROOM_CACHE_MISSES
    };
    metrics::counter!(name).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Reads back what a flush wrote: every line is an EMF document whose metrics are
    /// declared under the namespace with the `function` dimension and carry values.
    #[test]
    fn emits_emf_lines_with_names_units_and_dimension() {
        install_with("chatroom-lambda-test", "unit-test");
        message_queued();
        message_queued();
        reply_outcome(&Outcome::Answered);
        reply_outcome(&Outcome::Blocked);
        reply_outcome(&Outcome::Failed("x".into()));
        reply_outcome(&Outcome::Skipped("redelivery"));
        gemini_call(Duration::from_millis(250), Some(12), Some(34));
        daily_cap_refused();
        otp_code_sent();
        otp_email_failed();
        gemini_operator_error();
        webhook_event(&Ok(webhook::Outcome::Applied));
        webhook_event(&Ok(webhook::Outcome::Duplicate));
        webhook_event(&Ok(webhook::Outcome::Ignored));
        webhook_event(&Err(AppError::InvalidSignature("bad".into())));
        chatroom_cache(true);
        chatroom_cache(false);

        let mut out = Vec::new();
        flush_into(&mut out);
        let text = String::from_utf8(out).unwrap();
        let mut values = serde_json::Map::new();
        for line in text.lines() {
            let doc: Value = serde_json::from_str(line).expect("each line is one JSON document");
            assert!(doc["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
            let directive = &doc["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "chatroom-lambda-test");
            assert_eq!(directive["Dimensions"], serde_json::json!([["function"]]));
            assert_eq!(doc["function"], "unit-test");
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                let unit = if name == GEMINI_LATENCY {
                    "Milliseconds"
                } else {
                    "Count"
                };
                assert_eq!(metric["Unit"], unit, "{name}");
                values.insert(name.into(), doc[name].clone());
            }
        }
        let mut names: Vec<_> = values.keys().cloned().collect();
        names.sort();
        let mut want: Vec<_> = NAMES.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "every metric, and nothing else");
        assert_eq!(values[MESSAGES_QUEUED], 2);
        assert_eq!(values[REPLIES_FAILED], 1);
        assert_eq!(values[WEBHOOK_EVENTS_APPLIED], 1);
        assert_eq!(values[GEMINI_LATENCY], serde_json::json!([250.0]));
        assert_eq!(values[GEMINI_PROMPT_TOKENS], 12);
        assert_eq!(values[GEMINI_OUTPUT_TOKENS], 34);

        // Counters are deltas: a second flush with nothing new writes nothing.
        let mut again = Vec::new();
        flush_into(&mut again);
        assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
    }
}
