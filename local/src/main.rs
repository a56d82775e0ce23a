//! Serves every route group on one local port (the same routers the Lambdas run), with
//! an in-process queue consumed by the same worker code the reply-worker Lambda runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use shared::chat::model::{OfflineModel, ReplyModel};
use shared::chat::worker::Worker;
use shared::clients::queue::ReplyJob;
use shared::clients::queue::memory::MemoryQueue;
use tokio::sync::mpsc::UnboundedReceiver;

// One process serves every route and the worker on all cores: glibc's allocator showed
// as 7-10 % of the machine's samples under the bench's load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state =
        shared::bootstrap::state_from_env("local-server", shared::state::Adapters::all()).await;
    let applied = shared::store::postgres::migrate(
        state.config.database_url.expose(),
        state.config.database_ca_file.as_deref(),
    )
    .await
    .context("applying migrations")?;
    for m in &applied {
        tracing::info!(migration = %m, "applied migration");
    }

    let (queue, jobs) = MemoryQueue::new();
    // One process serves every client at once, so concurrent reads can share statements
    // (a Lambda container serves one request at a time: no batching).
    let state = state.with(|s| {
        s.queue = Some(Arc::new(queue));
        s.batched = Some(shared::state::Batches::default());
    });
    let model: Arc<dyn ReplyModel> = match &state.config.gemini.api_key {
        Some(_) => Arc::new(shared::clients::gemini::GeminiClient::new(
            &state.config.gemini,
        )?),
        None => {
            tracing::warn!(
                "GOOGLE_API_KEY is not set: replies come from the OFFLINE provider and say so; \
                 set GOOGLE_API_KEY to talk to Gemini"
            );
            Arc::new(OfflineModel)
        }
    };
    if state.billing.is_none() {
        tracing::warn!("Stripe is not configured: billing routes answer 503 billing_unavailable");
    }
    let worker = Worker {
        state: state.clone(),
        model,
    };
    tokio::spawn(run_sweeper(worker.clone()));
    tokio::spawn(run_worker(worker, jobs));

    let web_dir = web_dir();
    tracing::info!(web_dir = %web_dir.display(), "serving the web client at /");
    let app = local_server::with_cors(
        local_server::app_with_web(state.clone(), &web_dir),
        &std::env::var("CORS_ALLOWED_ORIGINS").unwrap_or_default(),
    )?;

    let addr: SocketAddr = std::env::var("LOCAL_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
        .context("configuration error: LOCAL_ADDR")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?
        // Live replies go out as written, not held back by Nagle's algorithm behind a
        // segment the client has not acknowledged yet.
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
        });
    tracing::info!(%addr, otp_delivery = ?state.config.otp_delivery, "local API listening");
    // The peer address feeds the per-IP throttles (API Gateway's sourceIp in AWS).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// Plays the part of the EventBridge schedule locally: the same sweep, every
/// `LOCAL_SWEEP_INTERVAL_SECONDS` (default 60).
async fn run_sweeper(worker: Worker) {
    let every = std::env::var("LOCAL_SWEEP_INTERVAL_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // The first sweep after one interval, not at start: it would compete with the first
    // requests (and a fresh start has little to sweep that cannot wait a minute).
    let every = Duration::from_secs(every.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        if let Err(e) = shared::maintenance::sweep(&worker).await {
            tracing::warn!(reason = %e.0, "local sweep failed; the next one retries");
        }
    }
}

/// The web client's folder: `WEB_DIR`, else the repository's `web/` (found from the
/// source tree, so the binary serves it whatever its working directory).
fn web_dir() -> PathBuf {
    match std::env::var_os("WEB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../web"),
    }
}

/// Plays the part of SQS + Lambda locally: each job is retried with a growing delay
/// up to the configured receive count, as redeliveries would be.
async fn run_worker(worker: Worker, mut jobs: UnboundedReceiver<ReplyJob>) {
    while let Some(job) = jobs.recv().await {
        let worker = worker.clone();
        tokio::spawn(async move {
            let max = worker.state.config.max_receive_count;
            for receive in 1..=max {
                match worker.process(job, receive).await {
                    Ok(outcome) => {
                        tracing::info!(message_id = %job.message_id, ?outcome, "local worker done");
                        return;
                    }
                    Err(retry) if receive < max => {
                        tracing::warn!(message_id = %job.message_id, reason = %retry.0, "local worker will retry");
                        tokio::time::sleep(Duration::from_secs(2 * receive as u64)).await;
                    }
                    Err(retry) => {
                        tracing::error!(message_id = %job.message_id, reason = %retry.0, "local worker gave up (dead-lettered)");
                        // What the dead-letter queue's consumer does in AWS.
                        if let Err(e) = worker.dead_letter(job).await {
                            tracing::error!(message_id = %job.message_id, reason = %e.0, "could not fail the dead-lettered message");
                        }
                    }
                }
            }
        });
    }
}
