//! The shared library of chatroom-lambda: configuration, errors, storage clients,
//! and the domain logic every Lambda function and the local server use.

pub mod account;
pub mod auth;
pub mod billing;
pub mod bootstrap;
pub mod chat;
pub mod clients;
pub mod config;
pub mod error;
pub mod http;
pub mod maintenance;
pub mod quota;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use error::{AppError, AppResult};
pub use state::AppState;
