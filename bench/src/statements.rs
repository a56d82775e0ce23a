//! PostgreSQL statements per request, counted by `pg_stat_statements` during one extra
//! run per warm route (kept out of the timed figures): how many requests each batched
//! statement answers under the bench's load, and what is still each request's own.

use std::time::Duration;

use tokio_postgres::Client;

/// What one counted run did.
pub struct Counts {
    pub requests: f64,
    /// Every statement the run caused (the server's and the worker's).
    pub statements: f64,
    /// The batched reads of callers' rows (`users … id = ANY`).
    pub caller_batches: f64,
    /// The batched reads of chatrooms' newest pages (two statements per batch).
    pub page_batches: f64,
}

pub struct Counter<'a>(&'a Client);

impl<'a> Counter<'a> {
    /// `None` when this PostgreSQL was not started with `pg_stat_statements` loaded.
    pub async fn new(db: &'a Client) -> anyhow::Result<Option<Self>> {
        let loaded = db
            .query_one("SELECT current_setting('shared_preload_libraries')", &[])
            .await?
            .get::<_, String>(0)
            .contains("pg_stat_statements");
        if !loaded {
            return Ok(None);
        }
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await?;
        let counter = Self(db);
        // Off outside the counted runs, so it costs the timed ones nothing.
        counter.track("none").await?;
        Ok(Some(counter))
    }

    /// Counts the statements `load` causes; `load` returns its requests per second over
    /// `seconds`.
    pub async fn count(
        &self,
        seconds: u64,
        load: impl FnOnce() -> anyhow::Result<f64>,
    ) -> anyhow::Result<Counts> {
        self.track("top").await?;
        self.0
            .query("SELECT pg_stat_statements_reset()", &[])
            .await?;
        let rps = load()?;
        let rows = self
            .0
            .query(
                "SELECT query, calls::float8 FROM pg_stat_statements \
                 WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_reload_conf%'",
                &[],
            )
            .await?;
        self.track("none").await?;
        let calls = |wanted: &dyn Fn(&str) -> bool| -> f64 {
            rows.iter()
                .filter(|r| wanted(r.get::<_, &str>(0)))
                .map(|r| r.get::<_, f64>(1))
                .sum()
        };
        Ok(Counts {
            requests: rps * seconds as f64,
            statements: calls(&|_| true),
            caller_batches: calls(&|q| q.contains("FROM users WHERE id = ANY")),
            page_batches: calls(&|q| q.contains("WITH ORDINALITY")) / 2.0,
        })
    }

    async fn track(&self, what: &str) -> anyhow::Result<()> {
        // The server's backends take a reload at their next statement; the pause lets
        // the ones already mid-statement finish it.
        // Two calls: ALTER SYSTEM refuses to run in a multi-statement string.
        self.0
            .batch_execute(&format!(
                "ALTER SYSTEM SET pg_stat_statements.track = '{what}'"
            ))
            .await?;
        self.0.query("SELECT pg_reload_conf()", &[]).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}
