//! Per-key request throttling in Redis: a minimum gap plus a rolling hourly budget,
//! checked and counted in one atomic script.

use redis::Script;

use crate::error::AppError;
use crate::store::redis::Redis;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_gap_secs: u64,
    pub per_window: u64,
    pub window_secs: u64,
}

// KEYS[1] gap marker, KEYS[2] window counter; ARGV gap, window, budget.
// Returns 0 when allowed, otherwise the seconds until a retry may succeed.
const SCRIPT: &str = r#"
local gap = redis.call('TTL', KEYS[1])
if gap > 0 then return gap end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
if n > tonumber(ARGV[3]) then
  local ttl = redis.call('TTL', KEYS[2])
  if ttl < 1 then ttl = 1 end
  return ttl
end
if tonumber(ARGV[1]) > 0 then redis.call('SET', KEYS[1], '1', 'EX', ARGV[1]) end
return 0
"#;

// KEYS as above. Gives back one counted attempt and lifts the gap it set.
const REFUND: &str = r#"
redis.call('DEL', KEYS[1])
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > 0 then redis.call('DECR', KEYS[2]) end
return 0
"#;

/// The gap marker and window counter of `subject`, in one hash slot (Redis Cluster
/// requires a script's keys to share one); [`hit`] and [`refund`] must agree on them.
fn keys(redis: &Redis, scope: &str, subject: &str) -> (String, String) {
    let tag = format!("{scope}:{subject}");
    (
        redis.tagged_key("throttle", &tag, "gap"),
        redis.tagged_key("throttle", &tag, "window"),
    )
}

/// Undoes one [`hit`] for `subject` (an attempt that failed on our side, such as an
/// e-mail that could not be sent, must not use up the caller's budget).
pub async fn refund(redis: &Redis, scope: &str, subject: &str) -> Result<(), AppError> {
    let (gap, window) = keys(redis, scope, subject);
    let _: i64 = Script::new(REFUND)
        .key(gap)
        .key(window)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(())
}

/// Counts one attempt for `subject`; refuses with 429 and a retry delay when over.
pub async fn hit(
    redis: &Redis,
    scope: &str,
    subject: &str,
    limits: Limits,
) -> Result<(), AppError> {
    let (gap, window) = keys(redis, scope, subject);
    let retry_after: u64 = Script::new(SCRIPT)
        .key(gap)
        .key(window)
        .arg(limits.min_gap_secs)
        .arg(limits.window_secs)
        .arg(limits.per_window)
        .invoke_async(&mut redis.conn())
        .await?;
    if retry_after > 0 {
        return Err(AppError::TooManyRequests { retry_after });
    }
    Ok(())
}
