//! Adapters to the data stores: the PostgreSQL pool, the shared Redis connection, TLS
//! for both, and the secrets read from Secrets Manager at cold start.

pub mod batched;
pub mod postgres;
pub mod redis;
#[cfg(feature = "secrets")]
pub mod secrets;
pub mod tls;
