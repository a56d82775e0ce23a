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
use crate::quota::{QuotaFactory, QuotaStore};
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

/// The optional clients a binary can wire: each Lambda function names the ones it uses
/// (`functions/*/src/main.rs`). Every function builds `shared` with the same features, so
/// one release build of it serves all seven; what a binary does not name here is never
/// referenced, and the linker leaves its SDK out of that binary.
#[derive(Clone, Copy, Default)]
pub struct Adapters {
    /// Sends code e-mails when `OTP_DELIVERY=ses` (auth).
    pub mailer: Option<MailerFactory>,
    /// Publishes reply jobs to `REPLY_QUEUE_URL` (chatroom).
    pub queue: Option<QueueFactory>,
    /// Talks to the payment provider when its settings are present (subscription, webhook).
    pub billing: Option<BillingFactory>,
    /// Daily counters in DynamoDB when `QUOTA_BACKEND=dynamodb` (chatroom, subscription).
    pub dynamodb_quota: Option<QuotaFactory>,
}

pub type MailerFactory = fn(&Config) -> anyhow::Result<Arc<dyn CodeMailer>>;
pub type QueueFactory = fn(&Config) -> Arc<dyn ReplyQueue>;
pub type BillingFactory = fn(&Config) -> anyhow::Result<Option<Arc<dyn BillingProvider>>>;

impl Adapters {
    /// No optional client: Redis counters, no e-mail, no queue, no billing.
    pub const NONE: Self = Self {
        mailer: None,
        queue: None,
        billing: None,
        dynamodb_quota: None,
    };

    /// Every client this build of `shared` has (tests, bench, local tools).
    // With every feature on, `..Self::NONE` fills nothing; with fewer, it fills the rest.
    #[allow(clippy::needless_update)]
    pub fn all() -> Self {
        Self {
            #[cfg(feature = "ses")]
            mailer: Some(crate::clients::ses::mailer),
            #[cfg(feature = "sqs")]
            queue: Some(crate::clients::queue::sqs::queue),
            #[cfg(feature = "stripe")]
            billing: Some(crate::billing::stripe::provider),
            #[cfg(feature = "dynamodb")]
            dynamodb_quota: Some(crate::quota::dynamodb::store),
            ..Self::NONE
        }
    }
}

impl AppState {
    /// Every client of this build ([`Adapters::all`]); cheap and offline.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Self::with_adapters(config, Adapters::all())
    }

    /// Cheap and offline: pools and clients connect on first use.
    pub fn with_adapters(config: Config, adapters: Adapters) -> anyhow::Result<Self> {
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
        let mailer = mailer_from_config(&config, &adapters)?;
        let quota = crate::quota::store_from_config(&config, &redis, adapters.dynamodb_quota)?;
        let queue = match (adapters.queue, &config.reply_queue_url) {
            (Some(queue), Some(_)) => Some(queue(&config)),
            _ => None,
        };
        let billing = match adapters.billing {
            Some(billing) => billing(&config)?,
            None => None,
        };
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

fn mailer_from_config(
    config: &Config,
    adapters: &Adapters,
) -> anyhow::Result<Option<Arc<dyn CodeMailer>>> {
    if config.otp_delivery != OtpDelivery::Ses {
        return Ok(None);
    }
    match adapters.mailer {
        Some(mailer) => mailer(config).map(Some),
        None => anyhow::bail!(
            "configuration error: OTP_DELIVERY: this binary does not send e-mail; `ses` is for the auth function"
        ),
    }
}
