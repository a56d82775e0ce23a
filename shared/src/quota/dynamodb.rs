//! DynamoDB counters: one conditional `UpdateItem` with `ADD`, so the check and the
//! increment are a single atomic step; `ConditionalCheckFailed` means over the cap.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::NaiveDate;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Decision, KEY_TTL_SECS, QuotaStore};
use crate::error::{AppError, AppResult};

/// The `QUOTA_BACKEND=dynamodb` store of `Adapters` (state.rs): the table from
/// `QUOTA_TABLE` (required with that backend by the settings' own check).
pub fn store(config: &crate::config::Config) -> std::sync::Arc<dyn QuotaStore> {
    std::sync::Arc::new(DynamoQuota::from_env(
        config.quota_table.clone().unwrap_or_default(),
    ))
}

pub struct DynamoQuota {
    client: OnceCell<Client>,
    table: String,
}

impl DynamoQuota {
    /// The client is built on first use (credentials from the environment), keeping cold starts short.
    pub fn from_env(table: String) -> Self {
        Self {
            client: OnceCell::new(),
            table,
        }
    }

    pub fn with_client(client: Client, table: String) -> Self {
        Self {
            client: OnceCell::new_with(Some(client)),
            table,
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(crate::clients::aws::sdk_config().await) })
            .await
    }

    fn key(user: Uuid, day: NaiveDate) -> AttributeValue {
        AttributeValue::S(format!("user#{user}#{day}"))
    }
}

/// Counting writes go out once: an `ADD` retried after its answer was lost would be
/// applied twice (idempotency is kept by giving back on uncertainty instead).
fn no_retries() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
}

fn unavailable<E: std::fmt::Debug>(err: E) -> AppError {
    tracing::warn!(error = ?err, "dynamodb quota store unavailable");
    AppError::Unavailable {
        code: "quota_unavailable",
        message: "the usage counter is unavailable; retry shortly".into(),
    }
}

fn number(item: Option<&std::collections::HashMap<String, AttributeValue>>) -> u32 {
    item.and_then(|m| m.get("used"))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl QuotaStore for DynamoQuota {
    async fn try_consume(
        &self,
        user: Uuid,
        day: NaiveDate,
        limit: Option<u32>,
    ) -> AppResult<Decision> {
        let expires = chrono::Utc::now().timestamp() + KEY_TTL_SECS;
        let mut req = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::key(user, day))
            .update_expression("ADD #used :one SET #ttl = :ttl")
            .expression_attribute_names("#used", "used")
            .expression_attribute_names("#ttl", "expires_at")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":ttl", AttributeValue::N(expires.to_string()))
            .return_values(ReturnValue::UpdatedNew);
        if let Some(limit) = limit {
            req = req
                .condition_expression("attribute_not_exists(#used) OR #used < :limit")
                .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()));
        }
        // Sent once: the SDK's retry of an ADD whose answer was lost would count twice.
        // A failed count is then uncertain, and the caller gives the unit back.
        match req.customize().config_override(no_retries()).send().await {
            Ok(out) => Ok(Decision::Admitted {
                used: number(out.attributes()),
            }),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Decision::Refused {
                    used: limit.unwrap_or(0),
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn refund(&self, user: Uuid, day: NaiveDate) -> AppResult<()> {
        let result = self
            .client()
            .await
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::key(user, day))
            .update_expression("ADD #used :minus")
            .condition_expression("#used > :zero")
            .expression_attribute_names("#used", "used")
            .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .customize()
            .config_override(no_retries())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Nothing left to give back.
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn used(&self, user: Uuid, day: NaiveDate) -> AppResult<u32> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::key(user, day))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(number(out.item()))
    }
}
