//! Adapters to the data stores: the PostgreSQL pool and the shared Redis connection.

pub mod postgres;
pub mod redis;
