//! Cold-start wiring shared by every binary.

use crate::config::Config;
use crate::config::secret_arns::secret_requests;
use crate::state::{Adapters, AppState};

/// Logging, secrets, settings and clients (the optional ones `adapters` names); exits with
/// one clear line when a setting or a secret is bad, which Lambda reports as an init error.
pub async fn state_from_env(function: &str, adapters: Adapters) -> AppState {
    crate::telemetry::init();
    crate::store::tls::install_crypto_provider();
    crate::telemetry::metrics::install(function);
    let config = config_from_env()
        .await
        .unwrap_or_else(|e| fail(function, &format!("{e:#}")));
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
    AppState::with_adapters(config, adapters).unwrap_or_else(|e| fail(function, &e.to_string()))
}

async fn config_from_env() -> anyhow::Result<Config> {
    let get = |name: &str| std::env::var(name).ok();
    #[cfg(feature = "secrets")]
    if !secret_requests(&get)?.is_empty() {
        let client = crate::store::secrets::client().await;
        return crate::store::secrets::config_from(get, &client).await;
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
    Ok(Config::from_lookup(get)?)
}

fn fail(function: &str, message: &str) -> ! {
    tracing::error!(function, "{message}");
    eprintln!("{function}: {message}");
    std::process::exit(1)
}
