//! `Idempotency-Key` bookkeeping beside the stored answers: a short-lived Redis mark for
//! a request still in flight, and the expiry of stored keys (a key answers retries for
//! 24 hours, then it is forgotten and purged by the sweeper).

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::error::AppResult;
use crate::store::redis::Redis;

/// How long an in-flight mark lives: longer than any send takes (the chatroom function's
/// timeout is 29 s), so a mark left by a request that died goes by itself.
pub const IN_FLIGHT_SECS: u64 = 35;

/// What a retry is told to wait while the first request with its key is in flight.
pub const IN_FLIGHT_RETRY_AFTER: u64 = 1;

fn in_flight_key(redis: &Redis, user: Uuid, key: &str) -> String {
    redis.key(&["idem-in-flight", &user.to_string(), key])
}

/// Marks `key` in flight for `user`; `false` when another request already holds it.
pub async fn mark_in_flight(redis: &Redis, user: Uuid, key: &str) -> AppResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(in_flight_key(redis, user, key))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(IN_FLIGHT_SECS)
        .query_async(&mut redis.conn())
        .await?;
    Ok(set.is_some())
}

/// Lifts the mark once the request is answered; a failure only logs (the mark expires).
pub async fn clear_in_flight(redis: &Redis, user: Uuid, key: &str) {
    let deleted: Result<i64, _> = redis::cmd("DEL")
        .arg(in_flight_key(redis, user, key))
        .query_async(&mut redis.conn())
        .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "could not clear an in-flight idempotency mark; it expires");
    }
}

/// How long a key replays its first answer, in hours (the SQL below uses the same value).
pub const TTL_HOURS: i64 = 24;

/// SQL condition, for `idempotency_keys` rows still within their lifetime.
pub const LIVE: &str = "created_at > now() - interval '24 hours'";

/// Deletes expired keys, `batch` rows per statement (short locks), until none are left
/// or `max_batches` ran; returns how many went.
pub async fn purge_expired<C: GenericClient>(
    db: &C,
    batch: i64,
    max_batches: u32,
) -> AppResult<u64> {
    let mut purged = 0;
    for _ in 0..max_batches {
        let n = db
            .execute(
                "DELETE FROM idempotency_keys WHERE ctid IN ( \
                     SELECT ctid FROM idempotency_keys \
                     WHERE created_at <= now() - interval '24 hours' LIMIT $1)",
                &[&batch],
            )
            .await?;
        purged += n;
        if (n as i64) < batch {
            break;
        }
    }
    Ok(purged)
}
