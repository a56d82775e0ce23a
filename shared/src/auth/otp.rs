//! One-time codes: 6 digits from a CSPRNG, stored only as a keyed hash in Redis,
//! valid for 5 minutes, single use, burned after 5 wrong tries. Wrong tries are also
//! logged per address for 24 hours, so re-issuing codes does not reset the budget.

use hmac::{Hmac, Mac};
use rand::Rng;
use redis::Script;
use sha2::Sha256;

use crate::auth::email::Email;
use crate::error::AppError;
use crate::store::redis::Redis;

pub const TTL_SECS: u64 = 300;
pub const MAX_ATTEMPTS: u32 = 5;
/// The rolling window of the per-address wrong-code budget.
pub const WRONG_WINDOW_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Login,
    PasswordReset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::PasswordReset => "reset",
        }
    }
}

#[derive(Clone)]
pub struct OtpStore {
    redis: Redis,
    key: Vec<u8>,
    /// Wrong codes one address may submit per [`WRONG_WINDOW_SECS`].
    max_wrong_per_window: u64,
}

// KEYS[1] the code's hash, KEYS[2] the address's wrong tries (sorted set, score = ms);
// ARGV[1] candidate hash, ARGV[2] max attempts per code, ARGV[3] now (ms),
// ARGV[4] window (ms), ARGV[5] wrong tries allowed per window, ARGV[6] a unique member.
// 1 = accepted (and consumed), 0 = no live code, 2 = wrong, 3 = wrong and now burned,
// negative = budget spent: minus the seconds until its oldest wrong try leaves the window.
// The budget is checked first: past it even the right code is refused.
const VERIFY: &str = r#"
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local wait = math.ceil((tonumber(oldest[2]) + window - now) / 1000)
  if wait < 1 then wait = 1 end
  return -wait
end
local stored = redis.call('HGET', KEYS[1], 'h')
if not stored then return 0 end
if stored == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[2], window)
local tries = redis.call('HINCRBY', KEYS[1], 'a', 1)
if tries >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 3
end
return 2
"#;

impl OtpStore {
    /// `key` is the HMAC key; a Redis dump alone never reveals a live code.
    pub fn new(redis: Redis, key: &[u8], max_wrong_per_window: u64) -> Self {
        Self {
            redis,
            key: key.to_vec(),
            max_wrong_per_window,
        }
    }

    fn digest(&self, purpose: Purpose, email: &Email, code: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(email.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    // An address's codes and its wrong-code budget share one hash slot: the verifying
    // script touches both, and Redis Cluster refuses a script's keys across slots.
    fn redis_key(&self, purpose: Purpose, email: &Email) -> String {
        self.redis
            .tagged_key("otp", email.as_str(), purpose.as_str())
    }

    fn wrong_key(&self, email: &Email) -> String {
        self.redis.tagged_key("otp", email.as_str(), "wrong")
    }

    /// Withdraws the live code (one that could not be delivered must not stay valid).
    pub async fn revoke(&self, purpose: Purpose, email: &Email) -> Result<(), AppError> {
        let _: () = redis::cmd("DEL")
            .arg(self.redis_key(purpose, email))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Replaces any live code for this address and purpose with a new one.
    pub async fn issue(&self, purpose: Purpose, email: &Email) -> Result<String, AppError> {
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        let key = self.redis_key(purpose, email);
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[("h", self.digest(purpose, email, &code)), ("a", "0".into())],
            )
            .expire(&key, TTL_SECS as i64)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(code)
    }

    pub async fn verify(
        &self,
        purpose: Purpose,
        email: &Email,
        code: &str,
    ) -> Result<(), AppError> {
        // Anything but six digits can never match; count it as a wrong try all the same.
        let candidate = self.digest(purpose, email, code.trim());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let member = format!("{now_ms}-{}", rand::rng().random::<u64>());
        let outcome: i64 = Script::new(VERIFY)
            .key(self.redis_key(purpose, email))
            .key(self.wrong_key(email))
            .arg(candidate)
            .arg(MAX_ATTEMPTS)
            .arg(now_ms)
            .arg(WRONG_WINDOW_SECS * 1000)
            .arg(self.max_wrong_per_window)
            .arg(member)
            .invoke_async(&mut self.redis.conn())
            .await?;
        match outcome {
            1 => Ok(()),
            0 => Err(AppError::OtpExpired),
            wait if wait < 0 => Err(AppError::TooManyRequests {
                retry_after: wait.unsigned_abs(),
            }),
            _ => Err(AppError::InvalidOtp),
        }
    }
}
