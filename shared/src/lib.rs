//! The shared library of chatroom-lambda: configuration, errors, storage clients,
//! and the domain logic every Lambda function and the local server use.

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod email;
pub mod error;
pub mod http;
pub mod jwt;
pub mod otp;
pub mod password;
pub mod redis_client;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod users;

pub use config::Config;
pub use error::{AppError, AppResult};
pub use state::AppState;
