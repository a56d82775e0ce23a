//! PostgreSQL: a small pool per Lambda container, TLS, and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, DatabaseSettings, DbCredentials};
use crate::store::tls;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Connections unused for this long are pinged before reuse.
const VERIFY_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Builds the pool without connecting: the first request opens the first connection,
/// so cold starts pay no network round trip.
pub fn pool(config: &Config) -> anyhow::Result<Pool> {
    let mut pg = parse_url(config.database_url.expose())?;
    with_credentials(&mut pg, config.database_credentials.as_ref());
    pg.connect_timeout(Duration::from_secs(3));
    // `Fast` only checks that the connection task is alive; the hook below pings the
    // connections that sat idle, which is where a frozen Lambda container's dead sockets
    // hide. A busy container thus pays no extra round trip per checkout.
    let manager = Manager::from_config(
        pg,
        connector(config.database_ca_file.as_deref())?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .post_recycle(Hook::async_fn(|client, metrics| {
            Box::pin(async move {
                if metrics.last_used() >= VERIFY_AFTER_IDLE {
                    // A failure drops this connection; the pool then opens a fresh one.
                    client.simple_query("").await.map_err(HookError::Backend)?;
                }
                Ok(())
            })
        }))
        .max_size(config.db_pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()?)
}

/// Parses `DATABASE_URL`. Its `sslmode` (`disable`, `prefer` — the default — or `require`)
/// is honoured by tokio-postgres; with this crate's connector `require` also verifies the
/// certificate chain and the host name, which libpq calls `verify-full`.
fn parse_url(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url).map_err(|e| {
        anyhow::anyhow!(
            "configuration error: DATABASE_URL: {e} (sslmode must be disable, prefer or \
             require; require verifies the certificate and host name)"
        )
    })
}

/// User and password from their own secret replace the URL's (see [`DbCredentials`]).
fn with_credentials(pg: &mut tokio_postgres::Config, credentials: Option<&DbCredentials>) {
    if let Some(c) = credentials {
        pg.user(&c.username).password(c.password.expose());
    }
}

/// The TLS connector every PostgreSQL connection uses: web PKI roots, the Amazon RDS CA
/// bundle, and the PEM file `ca_file` (`DATABASE_CA_FILE`) for a private CA.
pub fn connector(ca_file: Option<&str>) -> anyhow::Result<MakeRustlsConnect> {
    let extra = ca_file
        .map(|path| tls::read_ca_file(path, "DATABASE_CA_FILE"))
        .transpose()?;
    let roots = tls::database_roots(extra.as_deref())?;
    Ok(MakeRustlsConnect::new(tls::client_config(roots)))
}

/// Applies every pending migration in `migrations/` to the database at `url`
/// (over TLS when its `sslmode` asks, trusting `ca_file` as well).
pub async fn migrate(url: &str, ca_file: Option<&str>) -> anyhow::Result<Vec<String>> {
    let db = DatabaseSettings {
        url: crate::config::Secret::new(url),
        credentials: None,
        ca_file: ca_file.map(str::to_string),
    };
    migrate_database(&db, Duration::ZERO).await
}

/// [`migrate`] with every database setting (the migrate function's custom resource);
/// connecting is retried for up to `connect_for` (a first deploy's RDS Proxy target may
/// still be registering), a failing migration is not.
pub async fn migrate_database(
    db: &DatabaseSettings,
    connect_for: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut pg = parse_url(db.url.expose())?;
    with_credentials(&mut pg, db.credentials.as_ref());
    pg.connect_timeout(Duration::from_secs(10));
    let tls = connector(db.ca_file.as_deref())?;
    let until = std::time::Instant::now() + connect_for;
    let (mut client, connection) = loop {
        match pg.connect(tls.clone()).await {
            Ok(connected) => break connected,
            Err(e) if std::time::Instant::now() < until => {
                tracing::warn!(error = %e, "database not reachable yet; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let conn = tokio::spawn(connection);
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await?;
    drop(client);
    let _ = conn.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// Changes whenever a migration is added or edited (tests key template databases on it).
pub fn migrations_fingerprint() -> String {
    let runner = embedded::migrations::runner();
    let sum = runner
        .get_migrations()
        .iter()
        .fold(0u64, |acc, m| acc.rotate_left(7) ^ m.checksum());
    format!("{:x}_{}", sum, runner.get_migrations().len())
}
