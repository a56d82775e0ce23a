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
    #[error("the code is incorrect")]
    InvalidOtp,
    #[error(
        "no valid code for this address: it expired, was used or was burned; request a new one"
    )]
    OtpExpired,
    /// A right password for an address nobody has proven yet (403).
    #[error(
        "this address has not been confirmed yet: sign in with a code sent to it \
         (send the password along with the code to keep it)"
    )]
    EmailNotVerified,
    #[error("{0}")]
    NotFound(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("too many requests; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
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
        if is_connection_failure(&err) {
            tracing::warn!(error = %err, "database connection failure");
            Self::DatabaseUnavailable
        } else {
            Self::Internal(err.into())
        }
    }
}

/// Lost connections, refused connections and server shutdowns are outages (503);
/// anything else from Postgres is a bug (500).
fn is_connection_failure(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P0x: admin shutdown / cannot connect now;
        // class 53: insufficient resources (too many connections when Lambda scales out).
        return code.starts_with("08") || code.starts_with("57P") || code.starts_with("53");
    }
    let mut source = err.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
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
