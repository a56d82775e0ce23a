//! The CloudFormation custom resource that applies the database migrations on every
//! deploy that changes them (template.yaml, `Migrations`): Create and Update run the
//! embedded, ordered, idempotent migrations; Delete changes nothing (a stack deletion
//! never drops data). The answer goes to the pre-signed `ResponseURL`; a FAILED answer
//! fails the deploy and CloudFormation rolls back.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse,
    CloudFormationCustomResourceResponseStatus,
};

/// One resource for the life of the stack: an Update never replaces it.
pub const PHYSICAL_ID: &str = "chatroom-migrations";

/// The longest `Reason` CloudFormation shows; the rest of an error is in the logs.
const MAX_REASON: usize = 900;

/// Runs `migrate` for Create and Update and builds the answer; never fails, so
/// CloudFormation always hears back.
pub async fn answer<F, Fut>(
    request: &CloudFormationCustomResourceRequest,
    migrate: F,
) -> CloudFormationCustomResourceResponse
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<String>>>,
{
    let (kind, stack_id, request_id, logical_id) = match request {
        CloudFormationCustomResourceRequest::Create(r) => {
            ("Create", &r.stack_id, &r.request_id, &r.logical_resource_id)
        }
        CloudFormationCustomResourceRequest::Update(r) => {
            ("Update", &r.stack_id, &r.request_id, &r.logical_resource_id)
        }
        CloudFormationCustomResourceRequest::Delete(r) => {
            ("Delete", &r.stack_id, &r.request_id, &r.logical_resource_id)
        }
        _ => ("Unknown", &String::new(), &String::new(), &String::new()),
    };
    let mut response = CloudFormationCustomResourceResponse::default();
    response.physical_resource_id = PHYSICAL_ID.to_string();
    response.stack_id = stack_id.clone();
    response.request_id = request_id.clone();
    response.logical_resource_id = logical_id.clone();
    let outcome = match kind {
        "Create" | "Update" => migrate().await.map(Some),
        "Delete" => Ok(None),
        other => Err(anyhow::anyhow!("unknown request type {other}")),
    };
    match outcome {
        Ok(applied) => {
            let applied = applied.unwrap_or_default();
            tracing::info!(request = kind, applied = ?applied, "migrations answered SUCCESS");
            response.status = CloudFormationCustomResourceResponseStatus::Success;
            response.reason = Some(if applied.is_empty() {
                "database schema is up to date".into()
            } else {
                format!("applied {}", applied.join(", "))
            });
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

/// The pre-signed URL the answer is PUT to.
pub fn response_url(request: &CloudFormationCustomResourceRequest) -> Option<&str> {
    match request {
        CloudFormationCustomResourceRequest::Create(r) => Some(&r.response_url),
        CloudFormationCustomResourceRequest::Update(r) => Some(&r.response_url),
        CloudFormationCustomResourceRequest::Delete(r) => Some(&r.response_url),
        _ => None,
    }
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
