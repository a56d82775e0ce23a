//! Applies pending migrations to `DATABASE_URL` (local or deployed database; over TLS
//! when its `sslmode` asks, trusting `DATABASE_CA_FILE` beside the web PKI and RDS roots).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("DATABASE_URL").context("configuration error: DATABASE_URL is required")?;
    shared::store::tls::install_crypto_provider();
    let ca_file = std::env::var("DATABASE_CA_FILE")
        .ok()
        .filter(|v| !v.is_empty());
    let applied = shared::store::postgres::migrate(&url, ca_file.as_deref())
        .await
        .context("applying migrations")?;
    if applied.is_empty() {
        println!("database is up to date");
    }
    for m in applied {
        println!("applied {m}");
    }
    Ok(())
}
