//! A minimal Lambda Runtime API: hands a function binary the events we choose and records
//! when it first asks for work (init done) and when it answers.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    events: VecDeque<String>,
    first_poll: Option<Instant>,
    responses: Vec<(Instant, String)>,
}

#[derive(Clone, Default)]
struct RuntimeApi {
    inner: Arc<Mutex<Inner>>,
    answered: Arc<Notify>,
}

/// Hands out the next event; once they are all out, the poll stays open until the run ends.
async fn next(State(api): State<RuntimeApi>) -> impl IntoResponse {
    {
        let mut inner = api.inner.lock().unwrap();
        inner.first_poll.get_or_insert_with(Instant::now);
        if let Some(event) = inner.events.pop_front() {
            let mut headers = HeaderMap::new();
            headers.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap(),
            );
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:eu-west-1:123456789012:function:bench"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
            );
            return (StatusCode::OK, headers, event);
        }
    }
    std::future::pending().await
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path(_id): Path<String>,
    body: String,
) -> StatusCode {
    api.inner
        .lock()
        .unwrap()
        .responses
        .push((Instant::now(), body));
    api.answered.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(State(api): State<RuntimeApi>, body: String) -> StatusCode {
    api.inner
        .lock()
        .unwrap()
        .responses
        .push((Instant::now(), format!("ERROR {body}")));
    api.answered.notify_waiters();
    StatusCode::ACCEPTED
}

pub struct Run {
    pub init: Duration,
    pub first_response: Duration,
    pub responses: Vec<String>,
    pub peak_rss_kb: u64,
}

impl RuntimeApi {
    /// Serves the API on a free loopback port; returns its `host:port` and the server's task.
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, server)
    }
}

/// Starts `binary` fresh, feeds it `events` one by one, and measures.
pub async fn run(
    binary: &str,
    env: &[(String, String)],
    events: Vec<String>,
) -> anyhow::Result<Run> {
    run_with_stdout(binary, env, events, Stdio::null()).await
}

/// Like `run`, with the function's stdout (its logs and EMF metric lines) sent to `stdout`.
/// Each run gets its own Runtime API: a killed predecessor's last `next` poll may still be
/// pending in a shared one, and would take (and lose) the new run's first event.
pub async fn run_with_stdout(
    binary: &str,
    env: &[(String, String)],
    events: Vec<String>,
    stdout: Stdio,
) -> anyhow::Result<Run> {
    let api = RuntimeApi::default();
    let (addr, server) = api.start().await;
    let count = events.len();
    api.inner.lock().unwrap().events = events.into();
    // Kept so that a function which fails or hangs says why.
    let stderr_path = std::env::temp_dir().join(format!(
        "runtime-api-{}-{}.stderr",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let stderr = std::fs::File::create(&stderr_path)?;
    let started = Instant::now();
    let mut child: Child = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("RUST_LOG", "error")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()?;
    let outcome = wait_for(&api, &mut child, count).await;
    let _ = child.kill();
    let status = child.wait().ok();
    server.abort();
    let errors = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    let peak_rss_kb = match outcome {
        Ok(kb) => kb,
        Err(e) => {
            let tail: Vec<&str> = errors.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "{binary}: {e} (exit: {status:?}); its stderr's last lines:\n{}",
                tail.join("\n")
            );
        }
    };
    let inner = api.inner.lock().unwrap();
    let first_poll = inner
        .first_poll
        .ok_or_else(|| anyhow::anyhow!("{binary} never polled"))?;
    Ok(Run {
        init: first_poll - started,
        first_response: inner.responses[0].0 - started,
        responses: inner.responses.iter().map(|(_, b)| b.clone()).collect(),
        peak_rss_kb,
    })
}

/// Waits until `count` answers came back (or the child died, or 60 s passed); returns the
/// child's peak RSS, read while it still lives.
async fn wait_for(api: &RuntimeApi, child: &mut Child, count: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answered = api.answered.notified();
        if api.inner.lock().unwrap().responses.len() >= count {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "exited ({status}) after {} of {count} answers",
                api.inner.lock().unwrap().responses.len()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!("did not answer {count} events in 60 s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), answered).await;
    }
    Ok(
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0),
    )
}
