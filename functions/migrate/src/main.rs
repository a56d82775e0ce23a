//! Lambda entry point of the migrate function (a CloudFormation custom resource, or a
//! direct `{"RequestType": "Migrate"}` invocation).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{LambdaEvent, service_fn};
use migrate_fn::{Ran, Request};
use serde_json::Value;
use shared::store::secrets::PlaceholderSecret;

/// Time kept for answering CloudFormation after the migrations.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::store::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let own_version = std::env::var("AWS_LAMBDA_FUNCTION_VERSION").ok();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let http = http.clone();
        let own_version = own_version.clone();
        async move {
            let budget = remaining(event.context.deadline).saturating_sub(ANSWER_MARGIN);
            let request = Request::parse(&event.payload)?;
            let response =
                migrate_fn::answer(&request, own_version.as_deref(), || migrate(budget)).await;
            match &request {
                Request::CustomResource { response_url, .. } => {
                    migrate_fn::send(&http, response_url, &response).await?;
                    Ok::<Value, lambda_runtime::Error>(Value::Null)
                }
                Request::Direct => Ok(migrate_fn::direct_result(&response)),
            }
        }
    }))
    .await
}

/// The database settings, then the migrations, within `budget`. A first create may find
/// RDS Proxy's target still registering: connecting is retried inside the budget.
async fn migrate(budget: Duration) -> anyhow::Result<Ran> {
    let db = match shared::bootstrap::database_from_env().await {
        Ok(db) => db,
        // Existing mode's first deploy: the URL secret is filled after it (deployment.md).
        Err(e) if e.downcast_ref::<PlaceholderSecret>().is_some() => {
            return Ok(Ran::Skipped(format!(
                "{e:#}; run the migrate function again after filling it"
            )));
        }
        Err(e) => return Err(e),
    };
    tokio::time::timeout(
        budget,
        shared::store::postgres::migrate_database(
            &db,
            budget.saturating_sub(Duration::from_secs(30)),
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {budget:?}"))?
    .map(Ran::Applied)
}

/// Time left before Lambda stops the invocation (`deadline` is in epoch milliseconds).
fn remaining(deadline_ms: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now))
}
