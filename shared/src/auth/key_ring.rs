//! The token keys a container holds, kept current while it stays warm: a rotated key is
//! read again every `SECRET_REFRESH_SECONDS` and at once (at most every 30 s) when a token
//! names a key this container has not seen, so warm and new containers accept each
//! other's tokens across a rotation.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::jwt::{Claims, IssuedToken, JwtKeys, TokenError};
use crate::config::Secret;
use crate::error::AppResult;

/// Where the keys live (Secrets Manager's AWSCURRENT and AWSPREVIOUS versions on AWS).
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The current key and the one before it, freshly read.
    async fn read(&self) -> anyhow::Result<(Secret, Option<Secret>)>;
}

/// An unknown key id triggers a re-read at most this often, so forged ids cannot turn
/// into a stream of Secrets Manager calls.
const UNKNOWN_KEY_BACKOFF: Duration = Duration::from_secs(30);

pub struct KeyRing {
    keys: RwLock<Arc<JwtKeys>>,
    source: Option<Refresh>,
}

struct Refresh {
    source: Arc<dyn KeySource>,
    every: Duration,
    ttl: Duration,
    /// Serialises reads; holds when the keys were last read.
    last: tokio::sync::Mutex<Instant>,
}

impl KeyRing {
    /// Fixed keys (local runs, tests, a function given the key directly).
    pub fn fixed(keys: JwtKeys) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            source: None,
        }
    }

    /// Keys read at cold start from `source`, read again every `every`.
    pub fn refreshing(
        keys: JwtKeys,
        source: Arc<dyn KeySource>,
        every: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            source: Some(Refresh {
                source,
                every,
                ttl,
                last: tokio::sync::Mutex::new(Instant::now()),
            }),
        }
    }

    /// Tests: the keys were last read `ago`.
    #[cfg(test)]
    fn read_ago(&self, ago: Duration) {
        if let Some(refresh) = &self.source {
            *refresh.last.try_lock().expect("idle") = Instant::now() - ago;
        }
    }

    /// The keys in hand now.
    pub fn snapshot(&self) -> JwtKeys {
        self.current().as_ref().clone()
    }

    fn current(&self) -> Arc<JwtKeys> {
        self.keys.read().expect("key ring lock").clone()
    }

    pub async fn issue(&self, user_id: Uuid, token_version: i32) -> AppResult<IssuedToken> {
        self.refresh_if_older_than(None).await;
        self.current().issue(user_id, token_version)
    }

    pub async fn verify(&self, token: &str) -> AppResult<Claims> {
        self.refresh_if_older_than(None).await;
        match self.current().verify(token) {
            Err(TokenError::UnknownKey) if self.source.is_some() => {
                self.refresh_if_older_than(Some(UNKNOWN_KEY_BACKOFF)).await;
                Ok(self.current().verify(token)?)
            }
            result => Ok(result?),
        }
    }

    /// Reads the keys again when the last read is older than `age` (default: the
    /// schedule). A failed read keeps the keys in hand: they were valid a moment ago.
    async fn refresh_if_older_than(&self, age: Option<Duration>) {
        let Some(refresh) = &self.source else {
            return;
        };
        let age = age.unwrap_or(refresh.every);
        if refresh
            .last
            .try_lock()
            .is_ok_and(|last| last.elapsed() < age)
        {
            return;
        }
        let mut last = refresh.last.lock().await;
        if last.elapsed() < age {
            return; // another request just read them
        }
        *last = Instant::now();
        match refresh.source.read().await {
            Ok((current, previous)) => {
                let keys = JwtKeys::with_previous(
                    current.expose().as_bytes(),
                    previous.as_ref().map(|p| p.expose().as_bytes()),
                    refresh.ttl,
                );
                let old = self.current().current_kid().to_string();
                if keys.current_kid() != old {
                    tracing::info!(kid = keys.current_kid(), previous_kid = %old, "token key rotated");
                }
                *self.keys.write().expect("key ring lock") = Arc::new(keys);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not re-read the token keys; keeping the ones in hand")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const K1: &str = "0123456789abcdef0123456789abcdef";
    const K2: &str = "fedcba9876543210fedcba9876543210";
    const TTL: Duration = Duration::from_secs(60);

    /// Secrets Manager after a rotation from K1 to K2, counting reads.
    struct Rotated(AtomicUsize);

    #[async_trait]
    impl KeySource for Rotated {
        async fn read(&self) -> anyhow::Result<(Secret, Option<Secret>)> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok((Secret::new(K2), Some(Secret::new(K1))))
        }
    }

    #[tokio::test]
    async fn a_warm_container_accepts_tokens_signed_after_a_rotation() {
        let source = Arc::new(Rotated(AtomicUsize::new(0)));
        // Warm since before the rotation: knows only K1.
        let warm = KeyRing::refreshing(
            JwtKeys::new(K1.as_bytes(), TTL),
            source.clone(),
            Duration::from_secs(300),
            TTL,
        );
        // A new container, started after it.
        let fresh = JwtKeys::with_previous(K2.as_bytes(), Some(K1.as_bytes()), TTL);
        let user = Uuid::new_v4();
        let new_token = fresh.issue(user, 1).unwrap().access_token;
        let old_token = warm.issue(user, 1).await.unwrap().access_token;
        // Read at cold start two minutes ago; the rotation happened since.
        warm.read_ago(Duration::from_secs(120));
        assert_eq!(warm.verify(&new_token).await.unwrap().sub, user);
        assert_eq!(
            source.0.load(Ordering::SeqCst),
            1,
            "one read on the unknown key"
        );
        assert!(
            fresh.verify(&old_token).is_ok(),
            "and the new container takes the old token"
        );
        // Forged key ids do not cause a read each.
        for _ in 0..5 {
            let forged = KeyRing::fixed(JwtKeys::new(b"another-key-another-key-another-k", TTL))
                .issue(user, 1)
                .await
                .unwrap()
                .access_token;
            assert!(warm.verify(&forged).await.is_err());
        }
        assert_eq!(source.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn keys_are_read_again_on_schedule() {
        let source = Arc::new(Rotated(AtomicUsize::new(0)));
        let ring = KeyRing::refreshing(
            JwtKeys::new(K1.as_bytes(), TTL),
            source.clone(),
            Duration::ZERO,
            TTL,
        );
        let token = ring.issue(Uuid::new_v4(), 0).await.unwrap().access_token;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        assert_eq!(
            kid,
            super::super::jwt::key_id(K2.as_bytes()),
            "signs with the new key"
        );
        assert!(source.0.load(Ordering::SeqCst) >= 1);
    }
}
