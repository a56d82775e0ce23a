//! Redis counters: check, increment and expiry in one Lua script, so concurrent
//! requests can never over-admit and no key is left without a TTL.

use chrono::NaiveDate;
use redis::Script;
use uuid::Uuid;

use super::{Decision, KEY_TTL_SECS, QuotaStore};
use crate::error::AppResult;
use crate::store::redis::Redis;

// KEYS[1] counter; ARGV[1] limit (-1 = unlimited), ARGV[2] ttl.
// Returns {admitted (1|0), used}.
const CONSUME: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit >= 0 and used >= limit then return {0, used} end
used = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, used}
"#;

const REFUND: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"#;

pub struct RedisQuota {
    redis: Redis,
}

impl RedisQuota {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, user: Uuid, day: NaiveDate) -> String {
        self.redis
            .key(&["quota", &user.to_string(), &day.to_string()])
    }
}

#[async_trait::async_trait]
impl QuotaStore for RedisQuota {
    async fn try_consume(
        &self,
        user: Uuid,
        day: NaiveDate,
        limit: Option<u32>,
    ) -> AppResult<Decision> {
        let (admitted, used): (i64, u32) = Script::new(CONSUME)
            .key(self.key(user, day))
            .arg(limit.map_or(-1, i64::from))
            .arg(KEY_TTL_SECS)
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(if admitted == 1 {
            Decision::Admitted { used }
        } else {
            Decision::Refused { used }
        })
    }

    async fn refund(&self, user: Uuid, day: NaiveDate) -> AppResult<()> {
        let _: i64 = Script::new(REFUND)
            .key(self.key(user, day))
            .invoke_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    async fn used(&self, user: Uuid, day: NaiveDate) -> AppResult<u32> {
        let used: Option<u32> = redis::cmd("GET")
            .arg(self.key(user, day))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(used.unwrap_or(0))
    }
}
