//! Per-user cache of `GET /chatroom` in Redis (5 minutes).
//!
//! Invalidation bumps a generation counter instead of deleting: an entry is stored
//! with the generation read before the database query, so a reader that raced with a
//! write can only store an entry nobody will accept. Reads are one MGET.

use redis::RedisError;
use uuid::Uuid;

use crate::store::redis::Redis;

pub const TTL_SECS: u64 = 300;
/// The generation outlives every entry stored under it (each store renews it), so it
/// cannot expire, restart at 1 and match an old entry again.
const GENERATION_TTL_SECS: i64 = 24 * 3600;

fn keys(redis: &Redis, user: Uuid) -> (String, String) {
    // One hash tag per user keeps both keys on one slot under Redis Cluster.
    let user = user.to_string();
    (
        redis.tagged_key("chatrooms", &user, "gen"),
        redis.tagged_key("chatrooms", &user, "list"),
    )
}

pub enum Lookup {
    Hit(String),
    /// Store the fresh list under this generation.
    Miss {
        generation: i64,
    },
}

pub async fn lookup(redis: &Redis, user: Uuid) -> Result<Lookup, RedisError> {
    let (gen_key, list_key) = keys(redis, user);
    let (generation, entry): (Option<i64>, Option<String>) = redis::cmd("MGET")
        .arg(&gen_key)
        .arg(&list_key)
        .query_async(&mut redis.conn())
        .await?;
    let generation = generation.unwrap_or(0);
    if let Some((stored, body)) = entry.as_deref().and_then(|e| e.split_once('|'))
        && stored.parse::<i64>().ok() == Some(generation)
    {
        return Ok(Lookup::Hit(body.to_string()));
    }
    Ok(Lookup::Miss { generation })
}

pub async fn store(
    redis: &Redis,
    user: Uuid,
    generation: i64,
    body: &str,
) -> Result<(), RedisError> {
    let (gen_key, list_key) = keys(redis, user);
    redis::pipe()
        .cmd("SET")
        .arg(list_key)
        .arg(format!("{generation}|{body}"))
        .arg("EX")
        .arg(TTL_SECS)
        .ignore()
        .expire(gen_key, GENERATION_TTL_SECS)
        .ignore()
        .query_async(&mut redis.conn())
        .await
}

/// Best effort: a failure is logged, and the entry then ages out within its TTL.
pub async fn invalidate(redis: &Redis, user: Uuid) {
    let (gen_key, list_key) = keys(redis, user);
    let result: Result<(), RedisError> = redis::pipe()
        .atomic()
        .incr(&gen_key, 1)
        .ignore()
        .expire(&gen_key, GENERATION_TTL_SECS)
        .ignore()
        .del(&list_key)
        .ignore()
        .query_async(&mut redis.conn())
        .await;
    if let Err(e) = result {
        tracing::warn!(user_id = %user, error = %e, "could not invalidate the chatroom list cache");
    }
}
