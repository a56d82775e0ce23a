//! Everything a handler needs, built once per container and shared by reference.

use std::ops::Deref;
use std::sync::Arc;

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::delivery::CodeMailer;
use crate::auth::jwt::JwtKeys;
use crate::auth::otp::OtpStore;
use crate::billing::provider::BillingProvider;
use crate::clients::queue::ReplyQueue;
use crate::config::{Config, OtpDelivery};
use crate::error::AppResult;
use crate::quota::QuotaStore;
use crate::store::redis::Redis;

#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub config: Config,
    pub db: Pool,
    pub redis: Redis,
    pub jwt: JwtKeys,
    pub otp: OtpStore,
    /// Sends code e-mails; `Some` exactly when `OTP_DELIVERY=ses`.
    pub mailer: Option<Arc<dyn CodeMailer>>,
    pub quota: Arc<dyn QuotaStore>,
    /// `None` when no queue is configured: sending then answers 503.
    pub queue: Option<Arc<dyn ReplyQueue>>,
    /// `None` when Stripe is not configured: billing routes answer 503.
    pub billing: Option<Arc<dyn BillingProvider>>,
}

impl AppState {
    /// Cheap and offline: pools and clients connect on first use.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = crate::store::postgres::pool(&config)?;
        let redis = Redis::new(&config)?;
        let jwt = JwtKeys::new(config.jwt_secret.expose().as_bytes(), config.jwt_ttl);
        // A key of its own for OTP hashes, derived so that one secret suffices to deploy.
        let mut mac = Hmac::<Sha256>::new_from_slice(config.jwt_secret.expose().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"chatroom-lambda/otp-hash-key/v1");
        let otp = OtpStore::new(
            redis.clone(),
            &mac.finalize().into_bytes(),
            config.otp_max_wrong_per_day,
        );
        let mailer = mailer_from_config(&config)?;
        let quota = crate::quota::store_from_config(&config, &redis)?;
        let queue = queue_from_config(&config)?;
        let billing = billing_from_config(&config)?;
        Ok(Self(Arc::new(Services {
            config,
            db,
            redis,
            jwt,
            otp,
            mailer,
            quota,
            queue,
            billing,
        })))
    }

    /// Replaces parts before the state is shared (local server, tests).
    pub fn with(self, change: impl FnOnce(&mut Services)) -> Self {
        let mut services = Arc::try_unwrap(self.0)
            .unwrap_or_else(|_| panic!("AppState::with must be called before the state is cloned"));
        change(&mut services);
        Self(Arc::new(services))
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

#[cfg(feature = "sqs")]
fn queue_from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn ReplyQueue>>> {
    Ok(config.reply_queue_url.clone().map(|url| {
        Arc::new(crate::clients::queue::sqs::SqsQueue::from_env(url)) as Arc<dyn ReplyQueue>
    }))
}

#[cfg(not(feature = "sqs"))]
fn queue_from_config(_config: &Config) -> anyhow::Result<Option<Arc<dyn ReplyQueue>>> {
    Ok(None)
}

#[cfg(feature = "ses")]
fn mailer_from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn CodeMailer>>> {
    if config.otp_delivery != OtpDelivery::Ses {
        return Ok(None);
    }
    let from = config
        .otp_email_from
        .clone()
        .ok_or_else(|| anyhow::anyhow!("OTP_EMAIL_FROM is required when OTP_DELIVERY=ses"))?;
    Ok(Some(Arc::new(crate::clients::ses::SesMailer::from_env(
        from,
        config.ses_configuration_set.clone(),
    ))))
}

#[cfg(not(feature = "ses"))]
fn mailer_from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn CodeMailer>>> {
    if config.otp_delivery == OtpDelivery::Ses {
        anyhow::bail!(
            "configuration error: OTP_DELIVERY: `ses` needs a build with the `ses` feature"
        );
    }
    Ok(None)
}

#[cfg(feature = "stripe")]
fn billing_from_config(config: &Config) -> anyhow::Result<Option<Arc<dyn BillingProvider>>> {
    Ok(
        crate::billing::stripe::StripeBilling::from_settings(&config.stripe)?
            .map(|b| Arc::new(b) as Arc<dyn BillingProvider>),
    )
}

#[cfg(not(feature = "stripe"))]
fn billing_from_config(_config: &Config) -> anyhow::Result<Option<Arc<dyn BillingProvider>>> {
    Ok(None)
}
