//! The AWS SDK configuration, loaded once per container on first use (credentials and
//! region from the Lambda environment), so cold starts pay nothing for it.

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

pub async fn sdk_config() -> &'static SdkConfig {
    static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();
    CONFIG
        .get_or_init(|| aws_config::load_defaults(BehaviorVersion::latest()))
        .await
}
