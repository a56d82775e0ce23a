//! Everything a handler needs, built once per container and shared by reference.

use std::ops::Deref;
use std::sync::Arc;

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::caller_reads::CallerReads;
use crate::auth::delivery::CodeMailer;
use crate::auth::jwt::JwtKeys;
use crate::auth::key_ring::KeyRing;
use crate::auth::otp::OtpStore;
use crate::auth::users::User;
use crate::billing::provider::BillingProvider;
use crate::chat::page_reads::PageReads;
use crate::clients::queue::ReplyQueue;
use crate::config::{Config, OtpDelivery};
use crate::error::{AppError, AppResult};
use crate::quota::{QuotaFactory, QuotaStore};
use crate::store::redis::Redis;

#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub config: Config,
    pub db: Pool,
    pub redis: Redis,
    /// `Some` in a process serving many requests at once (the local server): concurrent
    /// reads share statements (see `store::batched`). `None` in a Lambda container,
    /// which serves one request at a time: there a batch would hold one read and cost
    /// the route a second connection.
    pub batched: Option<Batches>,
    /// Access-token keys; `None` in a function that never checks a token (webhook,
    /// worker), so a leak there cannot mint tokens. See [`Services::tokens`].
    pub token_keys: Option<KeyRing>,
    /// One-time codes; the auth function only. See [`Services::otp`].
    pub otp_codes: Option<OtpStore>,
    /// Sends code e-mails; `Some` exactly when `OTP_DELIVERY=ses`.
    pub mailer: Option<Arc<dyn CodeMailer>>,
    pub quota: Arc<dyn QuotaStore>,
    /// `None` when no queue is configured: sending then answers 503.
    pub queue: Option<Arc<dyn ReplyQueue>>,
    /// `None` when Stripe is not configured: billing routes answer 503.
    pub billing: Option<Arc<dyn BillingProvider>>,
}

/// The reads that concurrent requests share statements for.
#[derive(Clone, Default)]
pub struct Batches {
    /// Every authenticated request's caller row.
    pub callers: CallerReads,
    /// `GET /chatroom/{id}` without a cursor.
    pub newest_pages: PageReads,
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
    /// Checks or issues access tokens: needs `JWT_SECRET_KEY` (every HTTP function but
    /// the webhook).
    pub tokens: bool,
    /// Issues and checks one-time codes: needs `OTP_HASH_KEY` (auth).
    pub otp_codes: bool,
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
        tokens: false,
        otp_codes: false,
    };

    /// Checks access tokens and nothing optional (user, stream).
    pub const TOKENS: Self = Self {
        tokens: true,
        ..Self::NONE
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
            tokens: true,
            otp_codes: true,
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
        let token_keys = adapters.tokens.then(|| token_keys(&config)).transpose()?;
        let otp_codes = adapters
            .otp_codes
            .then(|| {
                otp_hash_key(&config)
                    .map(|key| OtpStore::new(redis.clone(), &key, config.otp_max_wrong_per_day))
            })
            .transpose()?;
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
            batched: None,
            token_keys,
            otp_codes,
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

    /// The caller's row, read by a statement issued after this call (batched with other
    /// requests' where [`Services::batched`] is on).
    pub async fn caller(&self, id: uuid::Uuid) -> AppResult<Option<User>> {
        match &self.0.batched {
            Some(batched) => batched.callers.read(&self.0.db, id).await,
            None => crate::auth::users::by_id(&self.db().await?, id).await,
        }
    }
}

impl Services {
    /// The access-token keys, or a 500 in a function built without them (a wiring bug).
    pub fn tokens(&self) -> AppResult<&KeyRing> {
        self.token_keys
            .as_ref()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("this function holds no token key")))
    }

    /// The one-time-code store, or a 500 outside the auth function (a wiring bug).
    pub fn otp(&self) -> AppResult<&OtpStore> {
        self.otp_codes
            .as_ref()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("this function holds no OTP key")))
    }
}

fn token_keys(config: &Config) -> anyhow::Result<KeyRing> {
    let Some(secret) = &config.jwt_secret else {
        anyhow::bail!(
            "configuration error: JWT_SECRET_KEY: is required by this function (it checks \
             access tokens)"
        );
    };
    Ok(KeyRing::fixed(JwtKeys::with_previous(
        secret.expose().as_bytes(),
        config
            .jwt_previous_secret
            .as_ref()
            .map(|p| p.expose().as_bytes()),
        config.jwt_ttl,
    )))
}

/// `OTP_HASH_KEY`. Outside Lambda (local runs, tests) it may be left out and is then
/// derived from the JWT key, so that one dev secret suffices; a deployed function has
/// its own key, so the token key alone does not reveal code hashes.
fn otp_hash_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    match (&config.otp_hash_key, &config.jwt_secret) {
        (Some(key), _) => Ok(key.expose().as_bytes().to_vec()),
        (None, Some(jwt)) if !config.in_lambda => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(jwt.expose().as_bytes()).expect("any key length");
            mac.update(b"chatroom-lambda/otp-hash-key/v1");
            Ok(mac.finalize().into_bytes().to_vec())
        }
        _ => anyhow::bail!(
            "configuration error: OTP_HASH_KEY: is required by this function (it hashes \
             one-time codes)"
        ),
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
