//! Applies pending migrations to `DATABASE_URL` (local or deployed database).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("DATABASE_URL").context("configuration error: DATABASE_URL is required")?;
    let applied = shared::store::postgres::migrate(&url)
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
