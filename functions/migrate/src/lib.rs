//! The CloudFormation custom resource that applies the database migrations on every
//! deploy that changes them (template.yaml, `Migrations`): Create and Update run the
//! embedded, ordered, idempotent migrations; Delete changes nothing (a stack deletion
//! never drops data). The answer goes to the pre-signed `ResponseURL`; a FAILED answer
//! fails the deploy and CloudFormation rolls back. Invoked directly with
//! `{"RequestType": "Migrate"}` it migrates and returns the outcome (docs/deployment.md).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceResponse, CloudFormationCustomResourceResponseStatus,
};
use serde_json::{Value, json};

/// One resource for the life of the stack: an Update never replaces it.
pub const PHYSICAL_ID: &str = "chatroom-migrations";

/// The longest `Reason` CloudFormation shows; the rest of an error is in the logs.
const MAX_REASON: usize = 900;

/// What a migration run did.
#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    /// The migrations applied now (none when the schema was up to date).
    Applied(Vec<String>),
    /// Nothing to run against yet, and why (existing mode's first deploy: the URL secret
    /// still holds its placeholder).
    Skipped(String),
}

/// A request, as the function receives it.
#[derive(Debug)]
pub enum Request {
    /// From CloudFormation: answered at `response_url`.
    CustomResource {
        kind: String,
        response_url: String,
        stack_id: String,
        request_id: String,
        logical_id: String,
        /// `ResourceProperties.CodeVersion`: the migrate function version this deploy wants.
        code_version: Option<String>,
    },
    /// `aws lambda invoke --payload '{"RequestType": "Migrate"}'`: answered in the result.
    Direct,
}

impl Request {
    pub fn parse(event: &Value) -> anyhow::Result<Self> {
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
        let kind =
            text("RequestType").ok_or_else(|| anyhow::anyhow!("the event has no RequestType"))?;
        if kind == "Migrate" {
            return Ok(Self::Direct);
        }
        let response_url = text("ResponseURL")
            .ok_or_else(|| anyhow::anyhow!("a {kind} request without a ResponseURL"))?;
        Ok(Self::CustomResource {
            kind,
            response_url,
            stack_id: text("StackId").unwrap_or_default(),
            request_id: text("RequestId").unwrap_or_default(),
            logical_id: text("LogicalResourceId").unwrap_or_default(),
            code_version: event
                .pointer("/ResourceProperties/CodeVersion")
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(v.to_string()))
                }),
        })
    }
}

/// The number at the end of a version or version ARN (`3`, `arn:...:function:f:3`).
fn version_number(v: &str) -> Option<u64> {
    v.rsplit(':').next()?.parse().ok()
}

/// Runs `migrate` when the request asks for it and builds the answer; never fails, so
/// CloudFormation always hears back. `own_version` is `AWS_LAMBDA_FUNCTION_VERSION`.
pub async fn answer<F, Fut>(
    request: &Request,
    own_version: Option<&str>,
    migrate: F,
) -> CloudFormationCustomResourceResponse
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Ran>>,
{
    let mut response = CloudFormationCustomResourceResponse::default();
    response.physical_resource_id = PHYSICAL_ID.to_string();
    let kind = match request {
        Request::CustomResource {
            kind,
            stack_id,
            request_id,
            logical_id,
            ..
        } => {
            response.stack_id = stack_id.clone();
            response.request_id = request_id.clone();
            response.logical_resource_id = logical_id.clone();
            kind.as_str()
        }
        Request::Direct => "Migrate",
    };
    let rollback = match request {
        // CloudFormation rolling back asks an older version of this function to
        // "update" to itself: migrations are never undone (each deploy only adds what
        // the code before it can live with), so there is nothing to do.
        Request::CustomResource {
            code_version: Some(wanted),
            ..
        } if kind == "Update" => {
            match (version_number(wanted), own_version.and_then(version_number)) {
                (Some(wanted), Some(own)) if wanted < own => Some(wanted),
                _ => None,
            }
        }
        _ => None,
    };
    let outcome = match (kind, rollback) {
        ("Delete", _) => Ok(Ran::Skipped("a stack deletion never drops data".into())),
        ("Update", Some(wanted)) => Ok(Ran::Skipped(format!(
            "rollback to version {wanted}: migrations are never undone"
        ))),
        ("Create" | "Update" | "Migrate", _) => migrate().await,
        (other, _) => Err(anyhow::anyhow!("unknown request type {other}")),
    };
    match outcome {
        Ok(ran) => {
            let (applied, reason) = match ran {
                Ran::Applied(applied) if applied.is_empty() => {
                    (applied, "database schema is up to date".to_string())
                }
                Ran::Applied(applied) => {
                    let reason = format!("applied {}", applied.join(", "));
                    (applied, reason)
                }
                Ran::Skipped(why) => (Vec::new(), format!("skipped: {why}")),
            };
            tracing::info!(request = kind, applied = ?applied, %reason, "migrations answered SUCCESS");
            response.status = CloudFormationCustomResourceResponseStatus::Success;
            response.reason = Some(reason);
            // `Applied` is always present: the stack's output reads it.
            response.data = HashMap::from([("Applied".to_string(), applied.join(","))]);
        }
        Err(e) => {
            let reason = format!("migrations failed: {e:#}");
            tracing::error!(request = kind, "{reason}");
            response.status = CloudFormationCustomResourceResponseStatus::Failed;
            response.reason = Some(reason.chars().take(MAX_REASON).collect());
        }
    }
    response
}

/// The result of a direct invocation: `{"Status", "Applied", "Reason"}`.
pub fn direct_result(response: &CloudFormationCustomResourceResponse) -> Value {
    let status = match response.status {
        CloudFormationCustomResourceResponseStatus::Success => "SUCCESS",
        _ => "FAILED",
    };
    json!({
        "Status": status,
        "Applied": response.data.get("Applied").cloned().unwrap_or_default(),
        "Reason": response.reason,
    })
}

/// PUTs the answer; retried, since a lost answer leaves the stack waiting for an hour.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    response: &CloudFormationCustomResourceResponse,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(response)?;
    let mut last = None;
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
        }
        // S3 pre-signed URLs sign an empty content type.
        match http
            .put(url)
            .header("content-type", "")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = Some(anyhow::anyhow!("ResponseURL answered {}", r.status())),
            Err(e) => last = Some(anyhow::anyhow!("ResponseURL: {e}")),
        }
    }
    Err(last.expect("three attempts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_numbers_and_arns() {
        assert_eq!(version_number("3"), Some(3));
        assert_eq!(
            version_number("arn:aws:lambda:eu-west-1:1:function:m:12"),
            Some(12)
        );
        assert_eq!(version_number("$LATEST"), None);
    }
}
