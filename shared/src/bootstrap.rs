//! Cold-start wiring shared by every binary.

use std::time::Duration;

use crate::auth::key_ring::KeyRing;
use crate::config::secret_arns::secret_requests;
use crate::config::{Config, ConfigError};
use crate::state::{Adapters, AppState};

/// Logging, secrets, settings and clients (the optional ones `adapters` names); exits with
/// one clear line when a setting or a secret is bad, which Lambda reports as an init error.
pub async fn state_from_env(function: &str, adapters: Adapters) -> AppState {
    crate::telemetry::init();
    crate::store::tls::install_crypto_provider();
    crate::telemetry::metrics::install(function);
    let (config, key_source) = config_from_env()
        .await
        .unwrap_or_else(|e| fail(function, &format!("{e:#}")));
    let refresh_every = refresh_interval().unwrap_or_else(|e| fail(function, &e.to_string()));
    // Only the auth function sends codes; the others never read OTP_DELIVERY.
    if config.in_lambda
        && function == "auth"
        && config.otp_delivery == crate::config::OtpDelivery::Log
    {
        tracing::warn!(
            function,
            "OTP_DELIVERY=log: sign-in codes are written to the logs, so anyone who can read \
             them can sign in as any user; use OTP_DELIVERY=ses for real users"
        );
    }
    let state = AppState::with_adapters(config, adapters)
        .unwrap_or_else(|e| fail(function, &e.to_string()));
    match key_source {
        // Keys from Secrets Manager are read again while the container lives, so a
        // rotation reaches warm containers too (auth::key_ring).
        Some(source) if state.token_keys.is_some() => state.with(|s| {
            let keys = s.token_keys.take().expect("checked above");
            s.token_keys = Some(KeyRing::refreshing(
                keys.snapshot(),
                source,
                refresh_every,
                s.config.jwt_ttl,
            ));
        }),
        _ => state,
    }
}

/// `SECRET_REFRESH_SECONDS` (default 300): how often a warm container reads the JWT key again.
fn refresh_interval() -> Result<Duration, ConfigError> {
    let raw = std::env::var("SECRET_REFRESH_SECONDS").unwrap_or_default();
    if raw.trim().is_empty() {
        return Ok(Duration::from_secs(300));
    }
    match raw.trim().parse::<u64>() {
        Ok(secs) if (10..=86_400).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(ConfigError {
            var: "SECRET_REFRESH_SECONDS",
            reason: format!("must be a number of seconds between 10 and 86400, got `{raw}`"),
        }),
    }
}

type KeySourceHandle = Option<std::sync::Arc<dyn crate::auth::key_ring::KeySource>>;

async fn config_from_env() -> anyhow::Result<(Config, KeySourceHandle)> {
    let get = |name: &str| std::env::var(name).ok();
    #[cfg(feature = "secrets")]
    if !secret_requests(&get)?.is_empty() {
        let client = crate::store::secrets::client().await;
        let config = crate::store::secrets::config_from(get, &client).await?;
        let source = crate::store::secrets::JwtKeySource::from_env(&get, &client);
        return Ok((config, source));
    }
    #[cfg(not(feature = "secrets"))]
    if let Some(first) = secret_requests(&get)?.first() {
        anyhow::bail!(
            "configuration error: {}_SECRET_ARN: this binary is built without Secrets Manager \
             support; set {} instead",
            first.setting,
            first.setting
        );
    }
    Ok((Config::from_lookup(get)?, None))
}

fn fail(function: &str, message: &str) -> ! {
    tracing::error!(function, "{message}");
    eprintln!("{function}: {message}");
    std::process::exit(1)
}

/// The database settings alone, with their secrets (the migrate function, which needs
/// nothing else); inside Lambda the URL must ask for TLS, as for every function.
pub async fn database_from_env() -> anyhow::Result<crate::config::DatabaseSettings> {
    let get = |name: &str| std::env::var(name).ok();
    let requests: Vec<_> = secret_requests(&get)?
        .into_iter()
        .filter(|r| r.setting.starts_with("DATABASE_"))
        .collect();
    #[allow(unused_mut)] // filled only with Secrets Manager support
    let mut values: std::collections::HashMap<&'static str, String> = Default::default();
    #[cfg(feature = "secrets")]
    if !requests.is_empty() {
        let client = crate::store::secrets::client().await;
        values = crate::store::secrets::fetch(&client, &requests).await?;
    }
    #[cfg(not(feature = "secrets"))]
    if let Some(first) = requests.first() {
        anyhow::bail!(
            "configuration error: {}_SECRET_ARN: built without Secrets Manager support",
            first.setting
        );
    }
    let lookup = |name: &str| values.get(name).cloned().or_else(|| get(name));
    let db = crate::config::DatabaseSettings::from_lookup(&lookup)?;
    let plaintext_allowed = get("ALLOW_PLAINTEXT_STORES").is_some_and(|v| v.trim() == "true");
    if get("AWS_LAMBDA_FUNCTION_NAME").is_some() && !plaintext_allowed {
        crate::config::stores::require_database_tls(db.url.expose())?;
    }
    Ok(db)
}
