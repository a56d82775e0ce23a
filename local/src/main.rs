//! Serves every route group on one local port: the same routers the Lambdas run.

use std::net::SocketAddr;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state = shared::bootstrap::state_from_env("local-server");
    let applied = shared::db::migrate(state.config.database_url.expose())
        .await
        .context("applying migrations")?;
    for m in &applied {
        tracing::info!(migration = %m, "applied migration");
    }

    let routes = axum::Router::new()
        .merge(auth_fn::routes(state.clone()))
        .merge(user_fn::routes(state.clone()));
    let app = shared::http::app(routes);

    let addr: SocketAddr = std::env::var("LOCAL_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .context("configuration error: LOCAL_ADDR")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, otp_delivery = ?state.config.otp_delivery, "local API listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
