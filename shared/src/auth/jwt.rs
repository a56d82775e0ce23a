//! Access tokens: HS256 JWTs carrying the user's token version, so that a password
//! change or reset revokes every older token.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AppError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Must equal the user's current `token_version`.
    pub ver: i32,
}

/// One signing key and its id (the `kid` header of the tokens it signs).
#[derive(Clone)]
struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        Self {
            kid: key_id(secret),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// A key's public name: the first 16 hex digits of its SHA-256. It tells which key signed
/// a token without revealing the key.
pub fn key_id(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..8])
}

/// The current key (signs and checks) and the one before the last rotation (checks only).
#[derive(Clone)]
pub struct JwtKeys {
    current: Key,
    previous: Option<Key>,
    ttl: Duration,
}

/// What a successful login hands the client.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// Why a token was refused; [`TokenError::UnknownKey`] may mean this container has not
/// seen a rotation yet (see `auth::key_ring`).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    UnknownKey,
    Invalid,
}

impl From<TokenError> for AppError {
    fn from(_: TokenError) -> Self {
        AppError::Unauthorized("invalid or expired token".into())
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self::with_previous(secret, None, ttl)
    }

    pub fn with_previous(secret: &[u8], previous: Option<&[u8]>, ttl: Duration) -> Self {
        let current = Key::new(secret);
        // After a rotation to the same value there is nothing older to accept.
        let previous = previous.map(Key::new).filter(|p| p.kid != current.kid);
        Self {
            current,
            previous,
            ttl,
        }
    }

    /// Id of the key that signs new tokens.
    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    pub fn issue(&self, user_id: Uuid, token_version: i32) -> Result<IssuedToken, AppError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            ver: token_version,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.current.encoding)
            .map_err(AppError::internal)?;
        Ok(IssuedToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Checks signature, algorithm (HS256 only, so `alg: none` fails) and expiry, with the
    /// key the `kid` header names (the current one when there is none: tokens from before
    /// key ids).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match header.kid.as_deref() {
            None => &self.current,
            Some(kid) if kid == self.current.kid => &self.current,
            Some(kid) => match &self.previous {
                Some(previous) if previous.kid == kid => previous,
                _ => return Err(TokenError::UnknownKey),
            },
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "rejected token");
                TokenError::Invalid
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60))
    }

    #[test]
    fn round_trip() {
        let id = Uuid::new_v4();
        let t = keys().issue(id, 3).unwrap();
        let c = keys().verify(&t.access_token).unwrap();
        assert_eq!((c.sub, c.ver), (id, 3));
        assert_eq!(t.expires_in, 60);
    }

    #[test]
    fn other_key_is_rejected() {
        let t = keys().issue(Uuid::new_v4(), 0).unwrap();
        let other = JwtKeys::new(b"ffffffffffffffffffffffffffffffff", Duration::from_secs(60));
        assert!(other.verify(&t.access_token).is_err());
    }

    #[test]
    fn tokens_of_the_previous_key_stay_valid_after_a_rotation() {
        let old = b"0123456789abcdef0123456789abcdef";
        let new = b"fedcba9876543210fedcba9876543210";
        let ttl = Duration::from_secs(60);
        let before = JwtKeys::new(old, ttl).issue(Uuid::new_v4(), 0).unwrap();
        let rotated = JwtKeys::with_previous(new, Some(old), ttl);
        assert!(rotated.verify(&before.access_token).is_ok());
        let after = rotated.issue(Uuid::new_v4(), 0).unwrap();
        assert!(rotated.verify(&after.access_token).is_ok());
        // A container that has not seen the rotation knows the new key by name only.
        assert_eq!(
            JwtKeys::new(old, ttl).verify(&after.access_token),
            Err(TokenError::UnknownKey)
        );
        let header = jsonwebtoken::decode_header(&after.access_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(new).as_str()));
        assert_eq!(key_id(new).len(), 16);
    }

    #[test]
    fn a_forged_kid_does_not_pick_a_key() {
        let t = keys().issue(Uuid::new_v4(), 0).unwrap().access_token;
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "0000000000000000"});
        parts[0] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            header.to_string(),
        );
        assert_eq!(keys().verify(&parts.join(".")), Err(TokenError::UnknownKey));
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let t = keys().issue(Uuid::new_v4(), 0).unwrap().access_token;
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(keys().verify(&parts.join(".")).is_err());
    }
}
