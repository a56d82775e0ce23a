//! Typed settings, read from the environment once at cold start.

pub mod secret_arns;
pub mod stores;

pub use stores::{DatabaseSettings, DbCredentials};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// A string that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How one-time codes reach the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpDelivery {
    /// Local development only: the code is returned in the HTTP response.
    Response,
    /// The code is written to the log (development and staging).
    Log,
    /// The code is e-mailed through Amazon SES from `OTP_EMAIL_FROM` (production).
    Ses,
}

impl FromStr for OtpDelivery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "response" => Ok(Self::Response),
            "log" => Ok(Self::Log),
            "ses" => Ok(Self::Ses),
            other => Err(format!(
                "expected `ses`, `log` or `response`, got `{other}`"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    /// User and password that replace the URL's (`DATABASE_CREDENTIALS`, JSON).
    pub database_credentials: Option<DbCredentials>,
    /// PEM file of a private CA trusted for PostgreSQL, beside the web PKI and RDS roots.
    pub database_ca_file: Option<String>,
    pub db_pool_size: usize,
    pub redis_url: Secret,
    /// PEM file of the CA that signs a `rediss://` server (instead of the web PKI roots).
    pub redis_ca_file: Option<String>,
    /// `REDIS_CLUSTER=true`: a cluster client, for cluster-mode-enabled groups.
    pub redis_cluster: bool,
    /// Prepended to every Redis key; lets environments (and tests) share one server.
    pub redis_key_prefix: String,
    /// Signs and checks access tokens; only the functions that check tokens get it.
    pub jwt_secret: Option<Secret>,
    /// The key before the last rotation (`JWT_SECRET_KEY_PREVIOUS`, or the secret's
    /// AWSPREVIOUS version): tokens it signed stay valid, so a rotation signs nobody out.
    pub jwt_previous_secret: Option<Secret>,
    pub jwt_ttl: Duration,
    /// Keys the HMAC of stored one-time codes (`OTP_HASH_KEY`); the auth function only.
    pub otp_hash_key: Option<Secret>,
    pub otp_delivery: OtpDelivery,
    /// Minimum seconds between two codes for one address.
    pub otp_min_interval_secs: u64,
    /// Codes one address may request per hour.
    pub otp_max_per_hour: u64,
    /// Wrong codes one address may submit per rolling 24 hours, both purposes together.
    pub otp_max_wrong_per_day: u64,
    /// The verified SES identity codes are sent from (`OTP_DELIVERY=ses`).
    pub otp_email_from: Option<String>,
    /// Optional SES configuration set (event publishing, dedicated IPs).
    pub ses_configuration_set: Option<String>,
    /// Per-client-IP throttles of the sign-in routes.
    pub ip_limits: IpLimits,
    /// Running inside AWS Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set).
    pub in_lambda: bool,
    pub quota_backend: QuotaBackend,
    /// DynamoDB table of daily counters (`QUOTA_BACKEND=dynamodb`).
    pub quota_table: Option<String>,
    /// Messages a Basic user may send per UTC day.
    pub basic_daily_limit: u32,
    /// SQS queue of reply jobs; without it the send route answers 503.
    pub reply_queue_url: Option<String>,
    pub gemini: GeminiSettings,
    /// The queue's maxReceiveCount: on the last receive a still-failing message is marked failed.
    pub max_receive_count: u32,
    /// ARN of the reply queue's dead-letter queue: records the worker receives from it
    /// are jobs whose every delivery failed, and their messages end `failed`.
    pub dead_letter_queue_arn: Option<String>,
    /// The sweeper takes a pending message idle this long (not created, not delivered):
    /// longer than the queue's visibility timeout, so live redeliveries are left alone.
    pub sweep_after: Duration,
    /// How long the reply queue keeps a job (`QUEUE_RETENTION_SECONDS`, the template's
    /// MessageRetentionPeriod): a job enqueued longer ago is lost, and the sweeper's.
    pub queue_retention: Duration,
    pub stripe: StripeSettings,
    /// Longest a live reply stream stays open before the client must reconnect
    /// (with `Last-Event-ID`); below the stream function's timeout.
    pub stream_max: Duration,
    /// Live streams one user may hold open at once (`STREAMS_PER_USER`, 0 = no cap).
    pub streams_per_user: u64,
}

/// Requests one client IP may make per hour; 0 turns a limit off. Generous by default:
/// an office or a mobile carrier puts many people behind one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimits {
    /// `POST /auth/signup`.
    pub signups_per_hour: u64,
    /// `POST /auth/send-otp` and `POST /auth/forgot-password`.
    pub code_requests_per_hour: u64,
    /// `POST /auth/verify-otp`, `/auth/login` and `/auth/reset-password`.
    pub sign_in_attempts_per_hour: u64,
}

impl Default for IpLimits {
    fn default() -> Self {
        Self {
            signups_per_hour: 200,
            code_requests_per_hour: 300,
            sign_in_attempts_per_hour: 600,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub api_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub pro_price_id: Option<String>,
    /// Where Checkout and the portal send users back to.
    pub frontend_url: String,
    /// Override of `https://api.stripe.com/` (tests point it at a fake).
    pub api_base: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaBackend {
    Redis,
    DynamoDb,
}

impl FromStr for QuotaBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redis" => Ok(Self::Redis),
            "dynamodb" => Ok(Self::DynamoDb),
            other => Err(format!("expected `redis` or `dynamodb`, got `{other}`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GeminiSettings {
    /// `None` means no key: the local server then uses the offline reply provider.
    pub api_key: Option<Secret>,
    /// The default model (`GEMINI_MODEL`).
    pub model: String,
    /// What a chatroom may choose (`GEMINI_MODELS`, comma-separated; always holds the
    /// default) and which of those only Pro users may (`GEMINI_PRO_ONLY_MODELS`).
    pub models: Vec<String>,
    pub pro_only_models: Vec<String>,
    pub base_url: String,
    pub request_timeout: Duration,
    /// Time allowed for retries of 429/5xx inside one delivery before SQS redelivers.
    pub retry_budget: Duration,
    pub max_output_tokens: u32,
    pub history_max_messages: usize,
    pub history_max_chars: usize,
}

pub const MIN_JWT_SECRET_LEN: usize = 32;

impl Config {
    /// Reads every setting; the first bad one fails with a message naming it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Config::from_env`] over any lookup function (used by tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&get);
        let database = DatabaseSettings::from_lookup(&get)?;
        let jwt_secret = env.key("JWT_SECRET_KEY")?;
        let jwt_previous_secret = env.key("JWT_SECRET_KEY_PREVIOUS")?;
        let otp_hash_key = env.key("OTP_HASH_KEY")?;
        let db_pool_size: usize = env.parsed("DB_POOL_SIZE", 2)?;
        if !(1..=16).contains(&db_pool_size) {
            return Err(ConfigError {
                var: "DB_POOL_SIZE",
                reason: "must be between 1 and 16".into(),
            });
        }
        let jwt_ttl_secs: u64 = env.parsed("JWT_TTL_SECONDS", 3600)?;
        if !(60..=30 * 86_400).contains(&jwt_ttl_secs) {
            return Err(ConfigError {
                var: "JWT_TTL_SECONDS",
                reason: "must be between 60 and 2592000".into(),
            });
        }
        let quota_backend: QuotaBackend = env.parsed("QUOTA_BACKEND", QuotaBackend::Redis)?;
        let quota_table = env.optional("QUOTA_TABLE");
        if quota_backend == QuotaBackend::DynamoDb && quota_table.is_none() {
            return Err(ConfigError {
                var: "QUOTA_TABLE",
                reason: "is required when QUOTA_BACKEND=dynamodb".into(),
            });
        }
        let redis_key_prefix = env.optional("REDIS_KEY_PREFIX").unwrap_or_default();
        // A brace would start a hash tag and put every key of the service in one slot.
        if redis_key_prefix.contains(['{', '}']) {
            return Err(ConfigError {
                var: "REDIS_KEY_PREFIX",
                reason: "must not contain `{` or `}`".into(),
            });
        }
        let in_lambda = env.optional("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let redis_url = env.required("REDIS_URL")?;
        if in_lambda && !env.parsed("ALLOW_PLAINTEXT_STORES", false)? {
            stores::require_tls(database.url.expose(), &redis_url)?;
        }
        let otp_delivery: OtpDelivery = env.parsed("OTP_DELIVERY", OtpDelivery::Log)?;
        if in_lambda && otp_delivery == OtpDelivery::Response {
            return Err(ConfigError {
                var: "OTP_DELIVERY",
                reason: "`response` hands sign-in codes to whoever asks and is refused in a \
                         Lambda (AWS_LAMBDA_FUNCTION_NAME is set): use `ses`, or `log` for staging"
                    .into(),
            });
        }
        let otp_email_from = env.optional("OTP_EMAIL_FROM");
        match (&otp_email_from, otp_delivery) {
            (None, OtpDelivery::Ses) => {
                return Err(ConfigError {
                    var: "OTP_EMAIL_FROM",
                    reason: "is required when OTP_DELIVERY=ses (a verified SES identity)".into(),
                });
            }
            (Some(from), _) if !from.contains('@') || from.contains(['\r', '\n']) => {
                return Err(ConfigError {
                    var: "OTP_EMAIL_FROM",
                    reason: format!("`{from}` is not an e-mail address"),
                });
            }
            _ => {}
        }
        let otp_max_wrong_per_day: u64 = env.parsed("OTP_MAX_WRONG_PER_DAY", 20)?;
        if otp_max_wrong_per_day == 0 {
            return Err(ConfigError {
                var: "OTP_MAX_WRONG_PER_DAY",
                reason: "must be at least 1".into(),
            });
        }
        let ip_defaults = IpLimits::default();
        let default_model = env
            .optional("GEMINI_MODEL")
            .unwrap_or_else(|| "gemini-2.5-flash".into());
        let (models, pro_only_models) = model_lists(
            &default_model,
            env.optional("GEMINI_MODELS").as_deref(),
            env.optional("GEMINI_PRO_ONLY_MODELS").as_deref(),
        )?;
        Ok(Self {
            database_url: database.url,
            database_credentials: database.credentials,
            database_ca_file: database.ca_file,
            db_pool_size,
            redis_url: Secret::new(redis_url),
            redis_ca_file: env.optional("REDIS_CA_FILE"),
            redis_cluster: env.parsed("REDIS_CLUSTER", false)?,
            redis_key_prefix,
            jwt_secret,
            jwt_previous_secret,
            jwt_ttl: Duration::from_secs(jwt_ttl_secs),
            otp_hash_key,
            otp_delivery,
            otp_min_interval_secs: env.parsed("OTP_MIN_INTERVAL_SECONDS", 30)?,
            otp_max_per_hour: env.parsed("OTP_MAX_PER_HOUR", 10)?,
            otp_max_wrong_per_day,
            otp_email_from,
            ses_configuration_set: env.optional("SES_CONFIGURATION_SET"),
            ip_limits: IpLimits {
                signups_per_hour: env
                    .parsed("IP_SIGNUPS_PER_HOUR", ip_defaults.signups_per_hour)?,
                code_requests_per_hour: env.parsed(
                    "IP_CODE_REQUESTS_PER_HOUR",
                    ip_defaults.code_requests_per_hour,
                )?,
                sign_in_attempts_per_hour: env.parsed(
                    "IP_SIGN_IN_ATTEMPTS_PER_HOUR",
                    ip_defaults.sign_in_attempts_per_hour,
                )?,
            },
            in_lambda,
            quota_backend,
            quota_table,
            basic_daily_limit: env.parsed("BASIC_DAILY_LIMIT", 5)?,
            reply_queue_url: env.optional("REPLY_QUEUE_URL"),
            gemini: GeminiSettings {
                api_key: env.optional("GOOGLE_API_KEY").map(Secret::new),
                model: default_model.clone(),
                models,
                pro_only_models,
                base_url: env
                    .optional("GEMINI_BASE_URL")
                    .unwrap_or_else(|| "https://generativelanguage.googleapis.com".into())
                    .trim_end_matches('/')
                    .to_string(),
                request_timeout: Duration::from_secs(env.parsed("GEMINI_TIMEOUT_SECONDS", 25)?),
                retry_budget: Duration::from_secs(env.parsed("GEMINI_RETRY_BUDGET_SECONDS", 20)?),
                max_output_tokens: env.parsed("GEMINI_MAX_OUTPUT_TOKENS", 2048)?,
                history_max_messages: env.parsed("HISTORY_MAX_MESSAGES", 20)?,
                history_max_chars: env.parsed("HISTORY_MAX_CHARS", 16_000)?,
            },
            max_receive_count: env.parsed("MAX_RECEIVE_COUNT", 5)?,
            dead_letter_queue_arn: env.optional("DEAD_LETTER_QUEUE_ARN"),
            sweep_after: Duration::from_secs(env.parsed("SWEEP_AFTER_SECONDS", 600)?),
            queue_retention: Duration::from_secs(env.parsed("QUEUE_RETENTION_SECONDS", 345_600)?),
            stripe: StripeSettings {
                api_key: env.optional("STRIPE_API_KEY").map(Secret::new),
                webhook_secret: env.optional("STRIPE_WEBHOOK_SECRET").map(Secret::new),
                pro_price_id: env.optional("STRIPE_PRO_PRICE_ID"),
                frontend_url: env
                    .optional("FRONTEND_URL")
                    .unwrap_or_else(|| "http://localhost:3000".into())
                    .trim_end_matches('/')
                    .to_string(),
                api_base: env.optional("STRIPE_API_BASE"),
            },
            stream_max: Duration::from_secs(env.parsed("STREAM_MAX_SECONDS", 240)?),
            streams_per_user: env.parsed("STREAMS_PER_USER", 5)?,
        })
    }
}

/// The allow-list of models: `GEMINI_MODELS` (default: only the default model), which
/// always includes the default; the Pro-only ones must be in it, and the default may not
/// be one of them (a Basic user's chatroom falls back to it).
fn model_lists(
    default: &str,
    models: Option<&str>,
    pro_only: Option<&str>,
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let split = |raw: Option<&str>| -> Vec<String> {
        raw.unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut all = vec![default.to_string()];
    for m in split(models) {
        if !all.contains(&m) {
            all.push(m);
        }
    }
    let valid = |m: &String| {
        m.len() <= 100
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    if let Some(bad) = all.iter().find(|m| !valid(m)) {
        return Err(ConfigError {
            var: "GEMINI_MODELS",
            reason: format!("`{bad}` is not a model name (letters, digits, - . _)"),
        });
    }
    let pro_only = split(pro_only);
    for m in &pro_only {
        if !all.contains(m) {
            return Err(ConfigError {
                var: "GEMINI_PRO_ONLY_MODELS",
                reason: format!("`{m}` is not in GEMINI_MODELS"),
            });
        }
        if m == default {
            return Err(ConfigError {
                var: "GEMINI_PRO_ONLY_MODELS",
                reason: format!("`{m}` is the default model (GEMINI_MODEL), which every user gets"),
            });
        }
    }
    Ok((all, pro_only))
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn optional(&self, var: &'static str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var).ok_or(ConfigError {
            var,
            reason: "is required but not set".into(),
        })
    }

    /// An optional signing key, refused when shorter than [`MIN_JWT_SECRET_LEN`].
    fn key(&self, var: &'static str) -> Result<Option<Secret>, ConfigError> {
        match self.optional(var) {
            Some(key) if key.len() < MIN_JWT_SECRET_LEN => Err(ConfigError {
                var,
                reason: format!("must be at least {MIN_JWT_SECRET_LEN} bytes"),
            }),
            key => Ok(key.map(Secret::new)),
        }
    }

    fn parsed<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                var,
                reason: format!("cannot parse `{raw}`: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://u@localhost/db"),
        ("REDIS_URL", "redis://127.0.0.1/"),
        ("JWT_SECRET_KEY", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn defaults_apply() {
        let c = Config::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(c.db_pool_size, 2);
        assert_eq!(c.otp_delivery, OtpDelivery::Log);
        assert_eq!(c.jwt_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn model_allow_list() {
        let c = Config::from_lookup(lookup(BASE)).unwrap();
        assert_eq!(c.gemini.models, vec!["gemini-2.5-flash".to_string()]);
        let mut pairs = BASE.to_vec();
        pairs.push(("GEMINI_MODELS", "gemini-2.5-pro, gemini-2.5-flash"));
        pairs.push(("GEMINI_PRO_ONLY_MODELS", "gemini-2.5-pro"));
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.gemini.models, ["gemini-2.5-flash", "gemini-2.5-pro"]);
        assert_eq!(c.gemini.pro_only_models, ["gemini-2.5-pro"]);
        pairs.push(("GEMINI_MODEL", "gemini-2.5-pro"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(err.var, "GEMINI_PRO_ONLY_MODELS");
        let mut pairs = BASE.to_vec();
        pairs.push(("GEMINI_MODELS", "a/b"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "GEMINI_MODELS"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let err = Config::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.to_string().contains("DATABASE_URL"));
    }

    #[test]
    fn malformed_variable_is_named() {
        let mut pairs = BASE.to_vec();
        pairs.push(("DB_POOL_SIZE", "two"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(err.var, "DB_POOL_SIZE");
        let mut pairs = BASE.to_vec();
        pairs.push(("OTP_DELIVERY", "sms"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "OTP_DELIVERY"
        );
    }

    #[test]
    fn store_settings_parse() {
        let c = Config::from_lookup(lookup(BASE)).unwrap();
        assert!(!c.redis_cluster);
        assert_eq!(c.database_ca_file, None);
        let mut pairs = BASE.to_vec();
        pairs.extend([("REDIS_CLUSTER", "true"), ("DATABASE_CA_FILE", "/ca.pem")]);
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert!(c.redis_cluster);
        assert_eq!(c.database_ca_file.as_deref(), Some("/ca.pem"));
        let mut pairs = BASE.to_vec();
        pairs.push(("REDIS_CLUSTER", "yes"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "REDIS_CLUSTER"
        );
        let mut pairs = BASE.to_vec();
        pairs.push(("REDIS_KEY_PREFIX", "{env}:"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "REDIS_KEY_PREFIX"
        );
    }

    #[test]
    fn response_delivery_is_refused_in_a_lambda() {
        let mut pairs = BASE.to_vec();
        pairs.push(("OTP_DELIVERY", "response"));
        assert!(Config::from_lookup(lookup(&pairs)).is_ok(), "fine locally");
        pairs.push(("ALLOW_PLAINTEXT_STORES", "true"));
        pairs.push(("AWS_LAMBDA_FUNCTION_NAME", "chatroom-auth"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(err.var, "OTP_DELIVERY");
        assert!(err.to_string().contains("refused in a Lambda"), "{err}");
        // `log` starts (with a warning, see bootstrap), `ses` too.
        pairs.retain(|(k, _)| *k != "OTP_DELIVERY");
        pairs.push(("OTP_DELIVERY", "log"));
        assert!(Config::from_lookup(lookup(&pairs)).unwrap().in_lambda);
    }

    #[test]
    fn ses_delivery_needs_a_sender() {
        let mut pairs = BASE.to_vec();
        pairs.push(("OTP_DELIVERY", "ses"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(err.var, "OTP_EMAIL_FROM");
        assert!(err.to_string().contains("OTP_EMAIL_FROM"));
        pairs.push(("OTP_EMAIL_FROM", "not-an-address"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "OTP_EMAIL_FROM"
        );
        pairs.pop();
        pairs.push(("OTP_EMAIL_FROM", "Chatroom <noreply@example.com>"));
        pairs.push(("SES_CONFIGURATION_SET", "auth-mail"));
        let c = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.otp_delivery, OtpDelivery::Ses);
        assert_eq!(c.ses_configuration_set.as_deref(), Some("auth-mail"));
        assert_eq!(c.ip_limits, IpLimits::default());
        assert_eq!(c.otp_max_wrong_per_day, 20);
    }

    #[test]
    fn short_jwt_secret_is_refused() {
        let mut pairs = BASE.to_vec();
        pairs[2] = ("JWT_SECRET_KEY", "short");
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "JWT_SECRET_KEY"
        );
    }

    #[test]
    fn tls_stores_are_required_inside_lambda_only() {
        let mut pairs = BASE.to_vec();
        assert!(
            Config::from_lookup(lookup(&pairs)).is_ok(),
            "plaintext is fine locally"
        );
        pairs.push(("AWS_LAMBDA_FUNCTION_NAME", "chatroom-user"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "DATABASE_URL"
        );
        pairs[0] = ("DATABASE_URL", "postgres://u@db/x?sslmode=require");
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "REDIS_URL"
        );
        pairs[1] = ("REDIS_URL", "rediss://cache:6379/");
        assert!(Config::from_lookup(lookup(&pairs)).is_ok());
        pairs[0] = ("DATABASE_URL", "postgres://u@db/x?sslmode=prefer");
        pairs.push(("ALLOW_PLAINTEXT_STORES", "true"));
        assert!(
            Config::from_lookup(lookup(&pairs)).is_ok(),
            "emulators only"
        );
    }

    #[test]
    fn keys_are_optional_but_never_short() {
        let c = Config::from_lookup(lookup(&BASE[..2])).unwrap();
        assert!(c.jwt_secret.is_none() && c.otp_hash_key.is_none());
        let mut pairs = BASE.to_vec();
        pairs.push(("OTP_HASH_KEY", "short"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err().var,
            "OTP_HASH_KEY"
        );
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = Config::from_lookup(lookup(BASE)).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef"));
        assert!(!shown.contains("postgres://"));
    }
}
