//! The shared library of chatroom-lambda: configuration, errors, storage clients,
//! and the domain logic every Lambda function and the local server use.

pub mod auth;
#[cfg(any(feature = "sqs", feature = "dynamodb"))]
pub mod aws;
pub mod billing;
pub mod bootstrap;
pub mod chat;
pub mod chat_cache;
pub mod chatrooms;
pub mod config;
pub mod db;
pub mod email;
pub mod error;
#[cfg(feature = "gemini")]
pub mod gemini;
pub mod http;
pub mod jwt;
pub mod messages;
pub mod model;
pub mod otp;
pub mod password;
pub mod queue;
pub mod quota;
pub mod redis_client;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod users;
pub mod worker;

pub use config::Config;
pub use error::{AppError, AppResult};
pub use state::AppState;
