//! Starts one Lambda bootstrap under the bench's Runtime API emulator, hands it the given
//! event files in order, and prints one JSON document: the init time, each response, and
//! every line the function wrote on stdout (logs and EMF metric lines). Used by
//! scripts/sam-check.sh on the binaries `sam build` produced.
//! Usage: invoke BOOTSTRAP EVENT.json [EVENT.json...]  (settings from the environment)

#[path = "../runtime_api.rs"]
#[allow(dead_code)] // the bench uses the parts this tool does not
mod runtime_api;

use std::process::Stdio;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .context("usage: invoke BOOTSTRAP EVENT.json...")?;
    let events = args
        .map(|f| std::fs::read_to_string(&f).with_context(|| format!("reading {f}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!events.is_empty(), "no event files given");
    // The function sees this process's settings, as Lambda passes the function's.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("AWS_LAMBDA_"))
        .collect();
    let log = tempfile_path(&binary);
    let stdout = std::fs::File::create(&log)?;
    let run = runtime_api::run_with_stdout(&binary, &env, events, Stdio::from(stdout)).await;
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let run = run.with_context(|| format!("stdout of {binary}:\n{lines}"))?;
    let responses: Vec<serde_json::Value> = run
        .responses
        .iter()
        .map(|r| serde_json::from_str(r).unwrap_or_else(|_| r.clone().into()))
        .collect();
    let out = serde_json::json!({
        "init_ms": run.init.as_secs_f64() * 1000.0,
        "first_response_ms": run.first_response.as_secs_f64() * 1000.0,
        "peak_rss_kb": run.peak_rss_kb,
        "responses": responses,
        "stdout": lines.lines().collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

fn tempfile_path(binary: &str) -> std::path::PathBuf {
    let name = binary.replace('/', "_");
    std::env::temp_dir().join(format!("invoke-{}-{name}.log", std::process::id()))
}
