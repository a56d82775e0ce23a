//! At most `STREAMS_PER_USER` live streams per user at once: each holds a stream-function
//! instance for up to `STREAM_MAX_SECONDS`, so one client (or a leaked token) opening
//! streams in a loop could otherwise take every instance the function may run. A slot is
//! a member of a per-user sorted set scored by its expiry: released when its stream ends,
//! however it ends, and dropped by itself once expired if the process dies first.

use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::store::redis::Redis;

/// KEYS[1] the user's slots; ARGV now (ms), expiry (ms), limit, slot id.
/// Returns {1, 0} when the slot is taken, {0, ms until the oldest slot expires} when full.
const ACQUIRE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) - tonumber(ARGV[1])}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {1, 0}
"#;

/// Longest `Retry-After` a refused stream is told: a slot usually frees much sooner (a
/// reply ends, a tab closes) than the oldest one expires.
const RETRY_AFTER_MAX: u64 = 30;

const RELEASE_WITHIN: Duration = Duration::from_secs(1);

/// One open stream's place.
pub struct StreamSlot {
    key: String,
    id: String,
}

fn slots_key(redis: &Redis, user: Uuid) -> String {
    redis.key(&["streams", &user.to_string()])
}

/// Takes a slot for `hold` (the stream's longest life plus a margin), or 429
/// `too_many_streams` with `Retry-After` when `limit` are open. `limit` 0 means no cap.
pub async fn acquire(
    redis: &Redis,
    user: Uuid,
    limit: u64,
    hold: Duration,
) -> AppResult<Option<StreamSlot>> {
    if limit == 0 {
        return Ok(None);
    }
    let key = slots_key(redis, user);
    let id = Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let expiry = now + hold.as_millis() as i64;
    let answer: Vec<i64> = Script::new(ACQUIRE)
        .key(&key)
        .arg(now)
        .arg(expiry)
        .arg(limit)
        .arg(&id)
        .invoke_async(&mut redis.conn())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "stream slots unavailable");
            AppError::redis_unavailable()
        })?;
    match answer.as_slice() {
        [1, _] => Ok(Some(StreamSlot { key, id })),
        [_, wait_ms] => Err(AppError::TooManyStreams {
            limit,
            retry_after: ((*wait_ms).max(0) as u64)
                .div_ceil(1000)
                .clamp(1, RETRY_AFTER_MAX),
        }),
        _ => Err(AppError::internal(anyhow::anyhow!(
            "stream slots: unexpected answer {answer:?}"
        ))),
    }
}

impl StreamSlot {
    /// Frees the slot; a failure only delays that until it expires.
    /// Bounded in time: a hung Redis must not hold the stream open.
    pub async fn release(self, redis: &Redis) {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.key).arg(&self.id);
        let mut conn = redis.conn();
        match tokio::time::timeout(RELEASE_WITHIN, cmd.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not free a stream slot; it expires by itself")
            }
            Err(_) => {
                tracing::warn!("Redis did not answer freeing a stream slot; it expires by itself")
            }
        }
    }
}
