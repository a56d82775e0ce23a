//! Redis: one lazily connected, self-healing connection per container.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
}

impl Redis {
    /// Does not touch the network: the first command connects.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis_url.expose())
            .map_err(|e| anyhow::anyhow!("configuration error: REDIS_URL: {e}"))?;
        // Short timeouts: a Redis outage must turn into a fast 503 or a fallback,
        // never into a request that hangs until the Lambda times out.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), cfg)?;
        Ok(Self {
            client,
            conn,
            prefix: config.redis_key_prefix.clone(),
        })
    }

    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, without a response timeout, for blocking reads
    /// (`XREAD BLOCK`): on the shared connection one would stall every other command.
    pub async fn dedicated(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Namespaced key: `<prefix><parts joined by ':'>`.
    pub fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join(":"))
    }
}
