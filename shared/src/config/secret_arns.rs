//! Which settings may come from AWS Secrets Manager (`<SETTING>_SECRET_ARN`), and the
//! secrets a given environment asks for; read by the cold start and by `store::secrets`.

use super::ConfigError;

/// Settings that may come from AWS Secrets Manager: `<SETTING>_SECRET_ARN` names the
/// secret (ARN or name) whose string value is the setting. Deployed functions get only
/// these ARNs, so no secret value sits in a function's environment.
pub const SECRET_SETTINGS: [&str; 8] = [
    "DATABASE_URL",
    // JSON {"username", "password"}: the secret template.yaml generates for the database.
    "DATABASE_CREDENTIALS",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "OTP_HASH_KEY",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "GOOGLE_API_KEY",
];

/// One setting to read from Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRequest {
    pub setting: &'static str,
    pub secret_id: String,
}

impl SecretRequest {
    /// `SETTING (SETTING_SECRET_ARN = id)`, for messages; never the value.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}_SECRET_ARN = {})",
            self.setting, self.setting, self.secret_id
        )
    }
}

/// The `*_SECRET_ARN` settings present in `get`. A setting given both directly and as a
/// secret is refused, so that which one wins is never a surprise.
pub fn secret_requests(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<SecretRequest>, ConfigError> {
    let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let mut requests = Vec::new();
    for setting in SECRET_SETTINGS {
        let Some(id) = set(&format!("{setting}_SECRET_ARN")) else {
            continue;
        };
        if set(setting).is_some() {
            return Err(ConfigError {
                var: setting,
                reason: format!("is set both directly and by {setting}_SECRET_ARN; keep one"),
            });
        }
        requests.push(SecretRequest {
            setting,
            secret_id: id.trim().to_string(),
        });
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_arns_are_collected_and_conflicts_refused() {
        let get = |name: &str| match name {
            "DATABASE_URL_SECRET_ARN" => Some("arn:db".to_string()),
            "JWT_SECRET_KEY_SECRET_ARN" => Some(" arn:jwt ".to_string()),
            "REDIS_URL_SECRET_ARN" => Some("".to_string()),
            "REDIS_URL" => Some("redis://x/".to_string()),
            _ => None,
        };
        let got = secret_requests(&get).unwrap();
        assert_eq!(
            got,
            vec![
                SecretRequest {
                    setting: "DATABASE_URL",
                    secret_id: "arn:db".into()
                },
                SecretRequest {
                    setting: "JWT_SECRET_KEY",
                    secret_id: "arn:jwt".into()
                },
            ]
        );
        let both = |name: &str| match name {
            "GOOGLE_API_KEY_SECRET_ARN" | "GOOGLE_API_KEY" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(secret_requests(&both).unwrap_err().var, "GOOGLE_API_KEY");
    }
}
