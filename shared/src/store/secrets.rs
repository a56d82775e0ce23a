//! Secrets from AWS Secrets Manager, read at cold start with one `BatchGetSecretValue`
//! call: `<SETTING>_SECRET_ARN` names the secret whose string value is the setting (see
//! [`crate::config::secret_arns::SECRET_SETTINGS`]). The JWT key's AWSPREVIOUS version is
//! read too, and the JWT key again while the container lives ([`JwtKeySource`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use crate::auth::key_ring::KeySource;
use crate::config::secret_arns::{SecretRequest, secret_requests};
use crate::config::{Config, Secret};

/// The value template.yaml gives the secrets it cannot generate, until they are filled.
pub const PLACEHOLDER: &str = "REPLACE_AFTER_DEPLOY";

/// A secret that still holds [`PLACEHOLDER`] (a typed error, so the migrate function can
/// tell "not filled yet" from a failure).
#[derive(Debug, thiserror::Error)]
#[error(
    "secrets: {0} still holds the placeholder {PLACEHOLDER}; put the real value \
     (aws secretsmanager put-secret-value)"
)]
pub struct PlaceholderSecret(pub String);

/// The client the functions use (credentials and region from the Lambda environment).
pub async fn client() -> Client {
    Client::new(crate::clients::aws::sdk_config().await)
}

/// Settings from `get`, with every `<SETTING>_SECRET_ARN` replaced by its secret's value.
pub async fn config_from(
    get: impl Fn(&str) -> Option<String>,
    client: &Client,
) -> anyhow::Result<Config> {
    let requests = secret_requests(&get)?;
    let mut values = fetch(client, &requests).await?;
    if let Some(jwt) = requests.iter().find(|r| r.setting == "JWT_SECRET_KEY")
        && let Some(previous) = previous_version(client, &jwt.secret_id).await
    {
        values.insert("JWT_SECRET_KEY_PREVIOUS", previous);
    }
    Ok(Config::from_lookup(|name| {
        values.get(name).cloned().or_else(|| get(name))
    })?)
}

/// The version before the last rotation, if the secret has one. A failure to read it is
/// logged, not fatal: only tokens signed before the rotation depend on it.
async fn previous_version(client: &Client, secret_id: &str) -> Option<String> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .version_stage("AWSPREVIOUS")
        .send()
        .await;
    match out {
        Ok(out) => out
            .secret_string()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v != PLACEHOLDER),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            None // never rotated
        }
        Err(e) => {
            tracing::warn!(
                secret_id,
                error = %aws_sdk_secretsmanager::error::DisplayErrorContext(e),
                "cannot read the AWSPREVIOUS version of the JWT key; tokens signed before the last rotation will be refused"
            );
            None
        }
    }
}

/// The JWT key's secret, read again by `auth::key_ring` while a container lives.
pub struct JwtKeySource {
    client: Client,
    secret_id: String,
}

impl JwtKeySource {
    /// `Some` when `JWT_SECRET_KEY_SECRET_ARN` is set.
    pub fn from_env(
        get: &impl Fn(&str) -> Option<String>,
        client: &Client,
    ) -> Option<Arc<dyn KeySource>> {
        let id = get("JWT_SECRET_KEY_SECRET_ARN").filter(|v| !v.trim().is_empty())?;
        Some(Arc::new(Self {
            client: client.clone(),
            secret_id: id.trim().to_string(),
        }))
    }
}

#[async_trait]
impl KeySource for JwtKeySource {
    async fn read(&self) -> anyhow::Result<(Secret, Option<Secret>)> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "secrets: cannot read JWT_SECRET_KEY ({}): {}",
                    self.secret_id,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        let current = out
            .secret_string()
            .map(str::trim)
            .filter(|v| v.len() >= crate::config::MIN_JWT_SECRET_LEN)
            .ok_or_else(|| anyhow::anyhow!("secrets: JWT_SECRET_KEY is empty or too short"))?;
        let previous = previous_version(&self.client, &self.secret_id).await;
        Ok((Secret::new(current), previous.map(Secret::new)))
    }
}

/// One call for every requested secret; any missing or unreadable one is an error naming
/// the setting and the secret (never a value).
pub async fn fetch(
    client: &Client,
    requests: &[SecretRequest],
) -> anyhow::Result<HashMap<&'static str, String>> {
    if requests.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = requests.iter().map(|r| r.secret_id.clone()).collect();
    let out = client
        .batch_get_secret_value()
        .set_secret_id_list(Some(ids))
        .send()
        .await
        .map_err(|e| {
            let names: Vec<String> = requests.iter().map(SecretRequest::describe).collect();
            anyhow::anyhow!(
                "secrets: BatchGetSecretValue failed for {}: {}",
                names.join(", "),
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?;
    let mut values = HashMap::new();
    for request in requests {
        // The answer names a secret by ARN and name; the request may use either.
        let id = request.secret_id.as_str();
        let found = out
            .secret_values()
            .iter()
            .find(|v| v.arn() == Some(id) || v.name() == Some(id));
        match found.and_then(|v| v.secret_string()) {
            Some(value) if value.trim() == PLACEHOLDER => {
                return Err(PlaceholderSecret(request.describe()).into());
            }
            Some(value) if !value.trim().is_empty() => {
                values.insert(request.setting, value.trim().to_string());
            }
            Some(_) => anyhow::bail!("secrets: {} is empty", request.describe()),
            None => {
                let reason = out
                    .errors()
                    .iter()
                    .find(|e| e.secret_id() == Some(id))
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.error_code().unwrap_or("error"),
                            e.message().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| {
                        if found.is_some() {
                            "it holds no string value".into()
                        } else {
                            "not found".into()
                        }
                    });
                anyhow::bail!("secrets: cannot read {}: {reason}", request.describe());
            }
        }
    }
    Ok(values)
}
