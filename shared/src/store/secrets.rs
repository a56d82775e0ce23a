//! Secrets from AWS Secrets Manager, read once at cold start with one
//! `BatchGetSecretValue` call: `<SETTING>_SECRET_ARN` names the secret whose string value
//! is the setting (see [`crate::config::secret_arns::SECRET_SETTINGS`]).

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;

use crate::config::Config;
use crate::config::secret_arns::{SecretRequest, secret_requests};

/// The value template.yaml gives the secrets it cannot generate, until they are filled.
pub const PLACEHOLDER: &str = "REPLACE_AFTER_DEPLOY";

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
    let values = fetch(client, &requests).await?;
    Ok(Config::from_lookup(|name| {
        values.get(name).cloned().or_else(|| get(name))
    })?)
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
            Some(value) if value.trim() == PLACEHOLDER => anyhow::bail!(
                "secrets: {} still holds the placeholder {PLACEHOLDER}; put the real value \
                 (aws secretsmanager put-secret-value)",
                request.describe()
            ),
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
