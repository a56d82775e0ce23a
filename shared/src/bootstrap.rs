//! Cold-start wiring shared by every binary.

use crate::config::Config;
use crate::state::AppState;

/// Logging, settings and clients; exits with one clear line when a setting is bad,
/// which Lambda reports as an init error.
pub fn state_from_env(function: &str) -> AppState {
    crate::telemetry::init();
    crate::telemetry::metrics::install(function);
    let config = Config::from_env().unwrap_or_else(|e| fail(function, &e.to_string()));
    AppState::new(config).unwrap_or_else(|e| fail(function, &e.to_string()))
}

fn fail(function: &str, message: &str) -> ! {
    tracing::error!(function, "{message}");
    eprintln!("{function}: {message}");
    std::process::exit(1)
}
