//! Logging set-up: JSON lines on Lambda (CloudWatch), readable text elsewhere.

pub mod metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info,aws_config=warn"))
}

pub fn init() {
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let json = on_lambda || std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let _ = if json {
        tracing::subscriber::set_global_default(json_subscriber(None, std::io::stdout))
            .map_err(|e| e.to_string())
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_target(false)
            .try_init()
            .map_err(|e| e.to_string())
    };
}

/// The JSON lines a function writes on Lambda: `level`, `target`, `fields.*` and the
/// `spans` list (Lambda adds the time). docs/operations.md's Logs Insights queries are
/// written on these names, and a test renders real log lines through this very builder.
/// `directives` overrides `RUST_LOG` (tests).
pub fn json_subscriber<W>(
    directives: Option<&str>,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(directives.map_or_else(filter, EnvFilter::new))
        .json()
        .with_current_span(false)
        .without_time()
        .with_writer(writer)
        .finish()
}
