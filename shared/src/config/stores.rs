//! Where PostgreSQL is and how to sign in to it, and the rule that a deployed function
//! talks to its stores over TLS only.

use serde::Deserialize;

use super::{ConfigError, Secret};

/// Database user and password kept apart from `DATABASE_URL`: the JSON
/// `{"username": ..., "password": ...}` secret that template.yaml generates for the
/// database and RDS Proxy it creates (`DATABASE_CREDENTIALS`, usually through
/// `DATABASE_CREDENTIALS_SECRET_ARN`). They replace any user and password in the URL.
#[derive(Clone, Deserialize)]
pub struct DbCredentials {
    pub username: String,
    pub password: Secret,
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbCredentials({}, ***)", self.username)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Everything needed to reach PostgreSQL (the functions' pools and the migrate function).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub credentials: Option<DbCredentials>,
    /// PEM file of a private CA trusted beside the web PKI and RDS roots.
    pub ca_file: Option<String>,
}

impl DatabaseSettings {
    /// `DATABASE_URL`, `DATABASE_CREDENTIALS` (JSON) and `DATABASE_CA_FILE`; in a Lambda
    /// the URL must ask for TLS (see [`require_tls`]).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let url = set("DATABASE_URL").ok_or(ConfigError {
            var: "DATABASE_URL",
            reason: "is required but not set".into(),
        })?;
        let credentials = set("DATABASE_CREDENTIALS")
            .map(|raw| parse_credentials(&raw))
            .transpose()?;
        Ok(Self {
            url: Secret::new(url),
            credentials,
            ca_file: set("DATABASE_CA_FILE"),
        })
    }
}

fn parse_credentials(raw: &str) -> Result<DbCredentials, ConfigError> {
    let creds: DbCredentials = serde_json::from_str(raw).map_err(|_| ConfigError {
        var: "DATABASE_CREDENTIALS",
        // Never the value: it holds the password.
        reason: "must be JSON {\"username\": ..., \"password\": ...}".into(),
    })?;
    if creds.username.is_empty() || creds.password.expose().is_empty() {
        return Err(ConfigError {
            var: "DATABASE_CREDENTIALS",
            reason: "username and password must not be empty".into(),
        });
    }
    Ok(creds)
}

/// The `sslmode` values that keep a connection encrypted: `prefer` (the default) falls
/// back to plaintext, and with it a cleartext password, when the server offers no TLS.
const TLS_SSLMODES: [&str; 3] = ["require", "verify-ca", "verify-full"];

/// Inside Lambda the stores are reached over a network someone else runs: refuse a
/// `DATABASE_URL` that may fall back to plaintext and a `redis://` URL at cold start.
/// `ALLOW_PLAINTEXT_STORES=true` lifts this for emulators only (template parameter
/// `AllowPlaintextStores`, default false); local runs are not in a Lambda.
pub fn require_tls(database_url: &str, redis_url: &str) -> Result<(), ConfigError> {
    require_database_tls(database_url)?;
    if !redis_url.trim_start().starts_with("rediss://") {
        return Err(ConfigError {
            var: "REDIS_URL",
            reason: "inside Lambda Redis must be reached over TLS: use a rediss:// URL; set \
                     ALLOW_PLAINTEXT_STORES=true only on an emulator"
                .into(),
        });
    }
    Ok(())
}

/// The database half of [`require_tls`] (the migrate function has no Redis).
pub fn require_database_tls(database_url: &str) -> Result<(), ConfigError> {
    let sslmode = database_url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "sslmode")
        .map(|(_, value)| value)
        .next_back();
    match sslmode {
        Some(mode) if TLS_SSLMODES.contains(&mode) => {}
        other => {
            return Err(ConfigError {
                var: "DATABASE_URL",
                reason: format!(
                    "inside Lambda the database must be reached over TLS: add \
                     `sslmode=require` (found {}); set ALLOW_PLAINTEXT_STORES=true only on an emulator",
                    other.map_or("no sslmode, which means prefer".to_string(), |m| format!(
                        "sslmode={m}"
                    ))
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS_TLS: &str = "rediss://cache.example:6379/";

    #[test]
    fn tls_is_required_inside_lambda() {
        for ok in [
            "postgres://u:p@db/x?sslmode=require",
            "postgres://u:p@db/x?application_name=a&sslmode=verify-full",
            "postgres://u:p@db/x?sslmode=verify-ca",
        ] {
            assert!(require_tls(ok, REDIS_TLS).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://u:p@db/x",
            "postgres://u:p@db/x?sslmode=prefer",
            "postgres://u:p@db/x?sslmode=disable",
            "postgres://u:p@db/x?sslmode=require&sslmode=prefer",
        ] {
            let err = require_tls(bad, REDIS_TLS).unwrap_err();
            assert_eq!(err.var, "DATABASE_URL", "{bad}");
            assert!(!err.to_string().contains("u:p"), "never the URL itself");
        }
        let err =
            require_tls("postgres://db/x?sslmode=require", "redis://cache:6379/").unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
    }

    #[test]
    fn credentials_come_from_json_and_never_show() {
        let get = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://proxy:5432/chatroom?sslmode=require".into()),
            "DATABASE_CREDENTIALS" => {
                Some(r#"{"username":"chatroom","password":"p@ss:w/rd"}"#.into())
            }
            _ => None,
        };
        let db = DatabaseSettings::from_lookup(&get).unwrap();
        let creds = db.credentials.unwrap();
        assert_eq!(creds.username, "chatroom");
        assert_eq!(creds.password.expose(), "p@ss:w/rd");
        assert!(!format!("{creds:?}").contains("p@ss"));
        let bad = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://proxy/x".into()),
            "DATABASE_CREDENTIALS" => Some("chatroom:secret".into()),
            _ => None,
        };
        let err = DatabaseSettings::from_lookup(&bad).unwrap_err();
        assert_eq!(err.var, "DATABASE_CREDENTIALS");
        assert!(!err.to_string().contains("secret"));
    }
}
