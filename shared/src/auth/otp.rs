//! One-time codes: 6 digits from a CSPRNG, stored only as a keyed hash in Redis,
//! valid for 5 minutes, single use, burned after 5 wrong tries.

use hmac::{Hmac, Mac};
use rand::Rng;
use redis::Script;
use sha2::Sha256;

use crate::auth::email::Email;
use crate::error::AppError;
use crate::store::redis::Redis;

pub const TTL_SECS: u64 = 300;
pub const MAX_ATTEMPTS: u32 = 5;

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
}

// KEYS[1] the code's hash; ARGV[1] candidate hash, ARGV[2] max attempts.
// 1 = accepted (and consumed), 0 = no live code, 2 = wrong, 3 = wrong and now burned.
const VERIFY: &str = r#"
local stored = redis.call('HGET', KEYS[1], 'h')
if not stored then return 0 end
if stored == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
local tries = redis.call('HINCRBY', KEYS[1], 'a', 1)
if tries >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 3
end
return 2
"#;

impl OtpStore {
    /// `key` is the HMAC key; a Redis dump alone never reveals a live code.
    pub fn new(redis: Redis, key: &[u8]) -> Self {
        Self {
            redis,
            key: key.to_vec(),
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

    fn redis_key(&self, purpose: Purpose, email: &Email) -> String {
        self.redis.key(&["otp", purpose.as_str(), email.as_str()])
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
        let outcome: i64 = Script::new(VERIFY)
            .key(self.redis_key(purpose, email))
            .arg(candidate)
            .arg(MAX_ATTEMPTS)
            .invoke_async(&mut self.redis.conn())
            .await?;
        match outcome {
            1 => Ok(()),
            0 => Err(AppError::OtpExpired),
            _ => Err(AppError::InvalidOtp),
        }
    }
}
