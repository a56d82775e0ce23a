//! The one error type of the service. Its HTTP mapping lives in `http::error`.

use std::error::Error as _;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Input that parsed but breaks a rule (422).
    #[error("{0}")]
    Validation(String),
    /// A body that is not valid JSON, or a bad query/path (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Unauthorized(String),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    /// A code that is wrong, expired, used, burned, or never issued: one answer for all,
    /// so it never tells whether an address is registered.
    #[error(
        "the code is wrong or no longer valid (a code lasts 5 minutes, ends after 5 wrong \
         tries, and a newer one replaces it): check it, or request a new one"
    )]
    InvalidOtp,
    /// A right password for an address nobody has proven yet (403).
    #[error(
        "this address has not been confirmed yet: sign in with a code sent to it \
         (send the password along with the code to keep it)"
    )]
    EmailNotVerified,
    /// Allowed to others, not to this caller (403), e.g. `pro_model_required`.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// An earlier request with the same `Idempotency-Key` is still being handled (409).
    #[error("a request with this Idempotency-Key is still in progress; retry in {retry_after} s")]
    RequestInProgress { retry_after: u64 },
    #[error("too many requests; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    /// A route's own rate limit (429 with its code, e.g. `export_rate_limited`).
    #[error("{message}")]
    RateLimited {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
    /// The user has `limit` live streams open already (429).
    #[error(
        "{limit} live streams are open for this account; close one, or retry in {retry_after} s"
    )]
    TooManyStreams { limit: u64, retry_after: u64 },
    #[error("daily limit of {limit} messages reached; it resets at the next UTC midnight")]
    DailyLimitReached { limit: u32, retry_after: u64 },
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    /// A dependency other than the database is down (Redis, the queue, ...).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// A webhook signature that does not verify (400).
    #[error("invalid webhook signature: {0}")]
    InvalidSignature(String),
    /// Processing failed for a reason that may pass; the sender should deliver again (500).
    #[error("{0}")]
    RetryLater(String),
    /// A bug or an unexpected failure; details go to the log, never to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn validation(msg: impl Into<String>) -> Self {
        Self::Validation(msg.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The mail service refused or could not be reached.
    pub fn email_unavailable() -> Self {
        Self::Unavailable {
            code: "email_unavailable",
            message: "the code could not be e-mailed right now; retry shortly".into(),
        }
    }

    pub fn redis_unavailable() -> Self {
        Self::Unavailable {
            code: "cache_unavailable",
            message: "a backing service (Redis) is unavailable; retry shortly".into(),
        }
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(err: tokio_postgres::Error) -> Self {
        match connection_failure(&err) {
            Some(cause) => {
                // The error chain names the cause (refused, TLS handshake, unknown CA,
                // no pg_hba.conf entry, ...); tokio-postgres never puts the password in it.
                tracing::warn!(cause, error = %error_chain(&err), "database connection failure");
                Self::DatabaseUnavailable
            }
            None => Self::Internal(err.into()),
        }
    }
}

/// `err: source: source...`: tokio-postgres shows only "db error" for a server's answer,
/// whose message is in the source.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Lost connections, refused connections, server shutdowns, TLS and authentication
/// failures are outages (503), each with a short cause for the log; anything else from
/// Postgres is a bug (500).
pub fn connection_failure(err: &tokio_postgres::Error) -> Option<&'static str> {
    if err.is_closed() {
        return Some("connection closed");
    }
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P0x: admin shutdown / cannot connect now;
        // class 53: insufficient resources (too many connections when Lambda scales out);
        // class 28: authentication (a wrong password, or pg_hba.conf refusing a
        // connection without TLS).
        return if code.starts_with("28") {
            Some("authentication or TLS required by the server")
        } else if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
            Some("server unavailable")
        } else {
            None
        };
    }
    let mut source = err.source();
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return Some("TLS");
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return Some("TLS");
            }
            return Some("network");
        }
        source = s.source();
    }
    // tokio-postgres reports "server does not support TLS" (sslmode=require) without a source.
    if err.to_string().contains("TLS") {
        return Some("TLS");
    }
    None
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Backend(e) => e.into(),
            PoolError::NoRuntimeSpecified => Self::internal(anyhow::anyhow!("{err}")),
            other => {
                tracing::warn!(error = %other, "database pool failure");
                Self::DatabaseUnavailable
            }
        }
    }
}

impl From<redis::RedisError> for AppError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
            // A wrong or missing password (REDIS_URL) is an outage for the callers too.
            || err.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(err.code(), Some("NOAUTH" | "WRONGPASS"))
            // A replica loading its data set or a failover in progress (ElastiCache).
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::ReadOnly
                        | redis::ServerErrorKind::TryAgain
                        | redis::ServerErrorKind::MasterDown
                        | redis::ServerErrorKind::ClusterDown
                )
            )
        {
            tracing::warn!(error = %err, "redis unavailable");
            Self::redis_unavailable()
        } else {
            Self::Internal(err.into())
        }
    }
}
