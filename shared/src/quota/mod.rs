//! Daily message caps: an atomic per-user, per-UTC-day counter behind one trait,
//! stored in Redis or DynamoDB (`QUOTA_BACKEND`).

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod redis;

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use crate::config::{Config, QuotaBackend};
use crate::error::AppResult;
use crate::store::redis::Redis;

/// Keys live a little past their day so a late refund still finds them.
pub const KEY_TTL_SECS: i64 = 2 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted; `used` includes this unit.
    Admitted { used: u32 },
    /// Over the cap; nothing was counted.
    Refused { used: u32 },
}

#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// Atomically counts one unit unless `limit` is reached (`None`: unlimited, still counted).
    async fn try_consume(
        &self,
        user: Uuid,
        day: NaiveDate,
        limit: Option<u32>,
    ) -> AppResult<Decision>;
    /// Gives back a unit counted for a request that then failed.
    async fn refund(&self, user: Uuid, day: NaiveDate) -> AppResult<()>;
    async fn used(&self, user: Uuid, day: NaiveDate) -> AppResult<u32>;
}

/// Builds the DynamoDB store when a binary wires it (`Adapters` in state.rs).
pub type QuotaFactory = fn(&Config) -> Arc<dyn QuotaStore>;

/// Redis counters, or DynamoDB's through `dynamodb` when the binary wires it
/// (`Adapters` in state.rs).
pub fn store_from_config(
    config: &Config,
    redis: &Redis,
    dynamodb: Option<QuotaFactory>,
) -> anyhow::Result<Arc<dyn QuotaStore>> {
    match (config.quota_backend, dynamodb) {
        (QuotaBackend::Redis, _) => Ok(Arc::new(self::redis::RedisQuota::new(redis.clone()))),
        (QuotaBackend::DynamoDb, Some(dynamodb)) => Ok(dynamodb(config)),
        (QuotaBackend::DynamoDb, None) => anyhow::bail!(
            "configuration error: QUOTA_BACKEND: this binary does not read the daily counters from DynamoDB"
        ),
    }
}

/// The daily limit for a tier: `None` for Pro (unlimited).
pub fn limit_for(tier: &str, basic_limit: u32) -> Option<u32> {
    if tier == "pro" {
        None
    } else {
        Some(basic_limit)
    }
}

pub fn today(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// Seconds until the next UTC midnight, when every counter starts over (at least 1).
pub fn seconds_until_reset(now: DateTime<Utc>) -> u64 {
    let next = (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    (next - now).num_seconds().max(1) as u64
}

pub fn reset_at(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn reset_is_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 30).unwrap();
        assert_eq!(seconds_until_reset(now), 30);
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(seconds_until_reset(now), 86_400);
    }

    #[test]
    fn pro_is_unlimited() {
        assert_eq!(limit_for("pro", 5), None);
        assert_eq!(limit_for("basic", 5), Some(5));
    }
}
