//! The AWS SDK configuration, loaded once per container on first use (credentials and
//! region from the Lambda environment), so cold starts pay nothing for it.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

pub async fn sdk_config() -> &'static SdkConfig {
    static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();
    CONFIG
        .get_or_init(|| {
            aws_config::defaults(BehaviorVersion::latest())
                // The SDK sets no operation timeout: a hung SQS or DynamoDB call would hold
                // a send (and its quota unit) until the Lambda itself times out.
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(2))
                        .operation_attempt_timeout(Duration::from_secs(2))
                        .operation_timeout(Duration::from_secs(5))
                        .build(),
                )
                .load()
        })
        .await
}
