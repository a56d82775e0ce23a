//! One-time codes: digits from a CSPRNG, stored only as a keyed hash in Redis, valid for
//! 5 minutes, single use, burned after 5 wrong tries.
//!
//! Wrong tries (and tries at an address with no live code: registered or not, the answer
//! is the same) are counted per address **and source**, so a stranger guessing from one
//! place spends only their own budget, never the owner's. Against many sources, every
//! wrong try also counts per address: past [`UNDER_ATTACK`] in 24 hours, 6-digit codes
//! stop being accepted for that address and new ones have 12 digits. A guesser thus gets
//! at most 50 tries at a 1-in-a-million code, then tries at 1-in-10^12 ones: below 1 in
//! 10,000 a day per address (README, "Sign-in"), and the owner is never locked out.

use hmac::{Hmac, Mac};
use rand::Rng;
use redis::Script;
use sha2::Sha256;

use crate::auth::email::Email;
use crate::error::AppError;
use crate::store::redis::Redis;

pub const TTL_SECS: u64 = 300;
pub const MAX_ATTEMPTS: u32 = 5;
/// The rolling window of the wrong-code budgets.
pub const WRONG_WINDOW_SECS: u64 = 86_400;
/// Digits of a code normally, and once its address is under attack.
pub const SHORT_DIGITS: usize = 6;
pub const LONG_DIGITS: usize = 12;
/// Wrong tries at one address (from every source) in [`WRONG_WINDOW_SECS`] after which
/// it is under attack: short codes are refused and long ones issued.
pub const UNDER_ATTACK: u64 = 50;

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
    /// Wrong codes one source may submit for one address per [`WRONG_WINDOW_SECS`].
    max_wrong_per_window: u64,
}

// KEYS[1] the code (hash `h`, wrong tries `a`, digits `n`), KEYS[2] the address's wrong
// tries from every source, KEYS[3] this source's wrong tries at the address (sorted sets,
// score = ms). ARGV[1] candidate hash, ARGV[2] max attempts per code, ARGV[3] now (ms),
// ARGV[4] window (ms), ARGV[5] wrong tries allowed per source and window, ARGV[6] a
// unique member, ARGV[7] the under-attack threshold, ARGV[8] short-code digits.
// 1 = accepted (and consumed), 2 = refused (wrong, burned, or no live code: one answer),
// negative = this source's budget is spent: minus the seconds until its oldest wrong try
// leaves the window. A source past its budget is refused even the right code; others not.
const VERIFY: &str = r#"
local now = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local wait = math.ceil((tonumber(oldest[2]) + window - now) / 1000)
  if wait < 1 then wait = 1 end
  return -wait
end
local stored = redis.call('HGET', KEYS[1], 'h')
if stored and redis.call('HGET', KEYS[1], 'n') == ARGV[8]
   and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then
  -- Under attack: a short code is no longer good enough.
  redis.call('DEL', KEYS[1])
  stored = nil
end
if stored and stored == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('PEXPIRE', KEYS[2], window)
redis.call('ZADD', KEYS[3], now, ARGV[6])
redis.call('PEXPIRE', KEYS[3], window)
if stored then
  local tries = redis.call('HINCRBY', KEYS[1], 'a', 1)
  if tries >= tonumber(ARGV[2]) then redis.call('DEL', KEYS[1]) end
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

    fn source_wrong_key(&self, email: &Email, source: &str) -> String {
        self.redis
            .tagged_key("otp", email.as_str(), &format!("wrong:{source}"))
    }

    /// Whether `email` is under attack now (see [`UNDER_ATTACK`]).
    pub async fn under_attack(&self, email: &Email) -> Result<bool, AppError> {
        let since = chrono::Utc::now().timestamp_millis() - (WRONG_WINDOW_SECS * 1000) as i64;
        let wrong: u64 = redis::cmd("ZCOUNT")
            .arg(self.wrong_key(email))
            .arg(since)
            .arg("+inf")
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(wrong >= UNDER_ATTACK)
    }

    /// Withdraws the live code (one that could not be delivered must not stay valid).
    pub async fn revoke(&self, purpose: Purpose, email: &Email) -> Result<(), AppError> {
        let _: () = redis::cmd("DEL")
            .arg(self.redis_key(purpose, email))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(())
    }

    /// Replaces any live code for this address and purpose with a new one: 6 digits, or
    /// 12 while the address is under attack.
    pub async fn issue(&self, purpose: Purpose, email: &Email) -> Result<String, AppError> {
        let digits = if self.under_attack(email).await? {
            LONG_DIGITS
        } else {
            SHORT_DIGITS
        };
        let code = random_digits(digits);
        let key = self.redis_key(purpose, email);
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("h", self.digest(purpose, email, &code)),
                    ("a", "0".into()),
                    ("n", digits.to_string()),
                ],
            )
            .expire(&key, TTL_SECS as i64)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(code)
    }

    /// Checks `code` for `email`, counting a failure against `source` (the client's IP;
    /// `None` when unknown, which shares one budget) and the address.
    pub async fn verify(
        &self,
        purpose: Purpose,
        email: &Email,
        code: &str,
        source: Option<&str>,
    ) -> Result<(), AppError> {
        // Spaces and dashes a person may type between groups of digits do not count.
        let code: String = code
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let candidate = self.digest(purpose, email, &code);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let member = format!("{now_ms}-{}", rand::rng().random::<u64>());
        let outcome: i64 = Script::new(VERIFY)
            .key(self.redis_key(purpose, email))
            .key(self.wrong_key(email))
            .key(self.source_wrong_key(email, source.unwrap_or("unknown")))
            .arg(candidate)
            .arg(MAX_ATTEMPTS)
            .arg(now_ms)
            .arg(WRONG_WINDOW_SECS * 1000)
            .arg(self.max_wrong_per_window)
            .arg(member)
            .arg(UNDER_ATTACK)
            .arg(SHORT_DIGITS)
            .invoke_async(&mut self.redis.conn())
            .await?;
        match outcome {
            1 => Ok(()),
            wait if wait < 0 => Err(AppError::TooManyRequests {
                retry_after: wait.unsigned_abs(),
            }),
            _ => Err(AppError::InvalidOtp),
        }
    }
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}
