//! Lambda entry point of the migrate function (a CloudFormation custom resource).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    shared::store::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<CloudFormationCustomResourceRequest>| {
            let http = http.clone();
            async move {
                let deadline = event.context.deadline;
                let request = event.payload;
                // Answer before Lambda's own timeout: a function killed mid-way would
                // leave CloudFormation waiting an hour for the answer.
                let budget = remaining(deadline).saturating_sub(Duration::from_secs(15));
                let response = migrate_fn::answer(&request, || async {
                    let db = shared::bootstrap::database_from_env().await?;
                    tokio::time::timeout(budget, shared::store::postgres::migrate_database(&db))
                        .await
                        .map_err(|_| anyhow::anyhow!("timed out after {budget:?}"))?
                })
                .await;
                let url = migrate_fn::response_url(&request)
                    .ok_or_else(|| anyhow::anyhow!("request without a ResponseURL"))?;
                migrate_fn::send(&http, url, &response).await?;
                Ok::<_, lambda_runtime::Error>(())
            }
        },
    ))
    .await
}

/// Time left before Lambda stops the invocation (`deadline` is in epoch milliseconds).
fn remaining(deadline_ms: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now))
}
