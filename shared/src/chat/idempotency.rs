//! Expiry of `Idempotency-Key` records: a key answers retries for 24 hours, then it is
//! forgotten (not replayed, free for reuse) and purged by the sweeper.

use deadpool_postgres::GenericClient;

use crate::error::AppResult;

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
