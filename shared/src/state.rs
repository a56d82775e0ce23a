//! Everything a handler needs, built once per container and shared by reference.

use std::ops::Deref;
use std::sync::Arc;

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::error::AppResult;
use crate::jwt::JwtKeys;
use crate::otp::OtpStore;
use crate::redis_client::Redis;

#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub config: Config,
    pub db: Pool,
    pub redis: Redis,
    pub jwt: JwtKeys,
    pub otp: OtpStore,
}

impl AppState {
    /// Cheap and offline: pools and clients connect on first use.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = crate::db::pool(&config)?;
        let redis = Redis::new(&config)?;
        let jwt = JwtKeys::new(config.jwt_secret.expose().as_bytes(), config.jwt_ttl);
        // A key of its own for OTP hashes, derived so that one secret suffices to deploy.
        let mut mac = Hmac::<Sha256>::new_from_slice(config.jwt_secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"chatroom-lambda/otp-hash-key/v1");
        let otp = OtpStore::new(redis.clone(), &mac.finalize().into_bytes());
        Ok(Self(Arc::new(Services {
            config,
            db,
            redis,
            jwt,
            otp,
        })))
    }

    pub async fn db(&self) -> AppResult<deadpool_postgres::Client> {
        Ok(self.0.db.get().await?)
    }
}

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}
