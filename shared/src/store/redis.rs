//! Redis: one lazily connected, self-healing connection per container; TLS for
//! `rediss://` URLs, and a cluster client for cluster-mode-enabled groups.
//!
//! Under Redis Cluster (and ElastiCache Serverless, which behaves like one) every
//! multi-key command and script must keep its keys in one hash slot: callers build such
//! keys with [`Redis::tagged_key`].

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::config::Config;
use crate::store::tls;

// Short timeouts: a Redis outage must turn into a fast 503 or a fallback,
// never into a request that hangs until the Lambda times out.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// For the connections of blocking reads (`XREAD BLOCK`, at most a heartbeat long).
const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens further connections to the same server(s). One per container: its size does
/// not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Opener {
    Single(redis::Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
pub struct Redis {
    conn: RedisConnection,
    /// Opens the connections of their own that blocking reads need.
    opener: Opener,
    prefix: String,
}

/// A single-node (or serverless endpoint) connection, or a cluster connection; both
/// speak [`ConnectionLike`], so the code issuing commands does not care which.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A connection of its own, without a response timeout (blocking reads).
    Dedicated(MultiplexedConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Dedicated(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Dedicated(c) => c.get_db(),
        }
    }
}

impl Redis {
    /// Does not touch the network: the first command connects.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        tls::install_crypto_provider();
        let url = config.redis_url.expose();
        // A private CA for `rediss://` (REDIS_CA_FILE); without one, the web PKI roots
        // verify the server, as they do for ElastiCache.
        let certs = config
            .redis_ca_file
            .as_deref()
            .map(|path| -> anyhow::Result<TlsCertificates> {
                let pem = tls::read_ca_file(path, "REDIS_CA_FILE")?;
                tls::pem_certificates(&pem, "REDIS_CA_FILE")?;
                Ok(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            })
            .transpose()?;
        let bad_url = |e: redis::RedisError| anyhow::anyhow!("configuration error: REDIS_URL: {e}");
        let (conn, opener) = if config.redis_cluster {
            let mut builder = ClusterClient::builder(vec![url])
                .retries(1)
                .max_retry_wait(100);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(bad_url)?;
            let cfg = ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(RESPONSE_TIMEOUT);
            // Connects in the background: the first command waits for it, init does not.
            let conn = client.get_pending_async_connection_with_config(cfg);
            (RedisConnection::Cluster(conn), Opener::Cluster(client))
        } else {
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map_err(bad_url)?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(100));
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), cfg)?;
            (RedisConnection::Single(conn), Opener::Single(client))
        };
        Ok(Self {
            conn,
            opener,
            prefix: config.redis_key_prefix.clone(),
        })
    }

    pub fn conn(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// A connection of its own, without a response timeout, for blocking reads
    /// (`XREAD BLOCK`): on the shared connection one would stall every other command.
    pub async fn dedicated(&self) -> redis::RedisResult<RedisConnection> {
        match &self.opener {
            Opener::Single(client) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await?;
                Ok(RedisConnection::Dedicated(conn))
            }
            Opener::Cluster(client) => {
                // The cluster client insists on a response timeout: one well above any
                // blocking read's own timeout.
                let cfg = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(BLOCKING_RESPONSE_TIMEOUT);
                let conn = client.get_async_connection_with_config(cfg).await?;
                Ok(RedisConnection::Cluster(conn))
            }
        }
    }

    /// Namespaced key: `<prefix><parts joined by ':'>`.
    pub fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }

    /// A key whose hash slot depends on `tag` alone (`<prefix><scope>:{<tag>}:<name>`):
    /// keys sharing `scope` and `tag` may be used together in one command or script
    /// under Redis Cluster.
    pub fn tagged_key(&self, scope: &str, tag: &str, name: &str) -> String {
        tagged(&self.prefix, scope, tag, name)
    }
}

fn tagged(prefix: &str, scope: &str, tag: &str, name: &str) -> String {
    format!("{prefix}{scope}:{{{tag}}}:{name}")
}

#[cfg(test)]
mod tests {
    use super::tagged;

    /// The hash slot of `key` under Redis Cluster (CRC16 of the hash tag, or of the whole key).
    pub(crate) fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let hashed = match key.find('{') {
            Some(open) => match key[open + 1..].find('}') {
                Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
                _ => bytes,
            },
            None => bytes,
        };
        crc16_xmodem(hashed) % 16384
    }

    fn crc16_xmodem(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &byte in data {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn tagged_keys_share_a_slot() {
        let gap = tagged("env:", "throttle", "otp:a@b.c", "gap");
        let window = tagged("env:", "throttle", "otp:a@b.c", "window");
        assert_eq!(gap, "env:throttle:{otp:a@b.c}:gap");
        assert_eq!(slot(&gap), slot(&window));
        assert_ne!(
            slot(&gap),
            slot(&tagged("env:", "throttle", "otp:x@b.c", "gap"))
        );
    }

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }
}
