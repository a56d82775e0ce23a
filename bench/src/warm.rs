//! Warm API: throughput and latency of the main routes under `wrk`, 50 connections.
//! With `BENCH_PERF_DIR` (`make profile`), each route gets one more run, recorded by
//! `perf` across the whole machine and kept out of the figures.

use crate::harness::{Fixture, Settings, load_rooms, pro_user, send_script, tokens_script, wrk};
use crate::report::Report;
use crate::statements;

const STATEMENTS: &str = "warm API: PostgreSQL statements, one more run per route";

/// Each route under `wrk` three times as the fixture user.
pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let seconds = if s.quick { 2 } else { 10 };
    let repeats = 3;
    // Fifty users' sends spread over fifty chatrooms, as real traffic would be: one shared
    // chatroom would measure its row lock, not the send path.
    let rooms = load_rooms(db, f.user, 50).await?;
    let script = send_script("bench-send.lua", &rooms)?;
    // Fifty users reading their own rows: the caller reads then batch distinct ids.
    let mut tokens = Vec::new();
    for _ in 0..50 {
        let user = pro_user(db, "bench-me").await?;
        tokens.push(s.token(user, std::time::Duration::from_secs(86_400))?);
    }
    let users_script = tokens_script("bench-me-users.lua", &tokens)?;
    let scenarios = [
        (
            "list",
            "GET /chatroom (cache hit)",
            format!("{}/chatroom", s.base),
            None,
        ),
        (
            "detail",
            "GET /chatroom/{id}",
            format!("{}/chatroom/{}", s.base, f.chatroom),
            None,
        ),
        (
            "send",
            "POST /chatroom/{id}/message (Pro, 50 chatrooms)",
            s.base.clone(),
            Some(script.to_str().unwrap()),
        ),
        ("me", "GET /user/me", format!("{}/user/me", s.base), None),
        (
            "me-users",
            "GET /user/me (50 users)",
            format!("{}/user/me", s.base),
            Some(users_script.to_str().unwrap()),
        ),
    ];
    let perf_dir = std::env::var_os("BENCH_PERF_DIR").map(std::path::PathBuf::from);
    let counter = statements::Counter::new(db).await?;
    for (slug, name, url, script) in scenarios {
        let (mut rps, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            let (r, a, b) = wrk(&url, &f.token, 50, seconds, script)?;
            rps.push(r);
            p50.push(a);
            p99.push(b);
        }
        if let Some(dir) = &perf_dir {
            profiled(&dir.join(format!("{slug}.data")), seconds, || {
                wrk(&url, &f.token, 50, seconds, script)
            })?;
        }
        report.add(
            2,
            "warm API, 50 connections",
            &format!("{name}: throughput"),
            "req/s",
            rps,
        );
        report.add(
            2,
            "warm API, 50 connections",
            &format!("{name}: p50"),
            "ms",
            p50,
        );
        report.add(
            2,
            "warm API, 50 connections",
            &format!("{name}: p99"),
            "ms",
            p99,
        );
        if let Some(counter) = &counter {
            let c = counter
                .count(seconds, || {
                    wrk(&url, &f.token, 50, seconds, script).map(|(rps, _, _)| rps)
                })
                .await?;
            let per = |figure: &str, value: f64| {
                (value.is_finite() && value > 0.0).then(|| (format!("{name}: {figure}"), value))
            };
            let figures = [
                per("statements per request", c.statements / c.requests),
                per(
                    "requests per caller-row statement",
                    c.requests / c.caller_batches,
                ),
                per(
                    "requests per newest-page batch",
                    c.requests / c.page_batches,
                ),
            ];
            for (figure, value) in figures.into_iter().flatten() {
                report.add(2, STATEMENTS, &figure, "×", vec![value]);
            }
        }
    }
    Ok(())
}

/// Runs `load` while `perf` samples every CPU (the server, PostgreSQL, Redis and `wrk`
/// share them) with DWARF call graphs into `out`, for bench/profile.sh's flame graphs.
fn profiled<T>(
    out: &std::path::Path,
    seconds: u64,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-q", "-a", "-e", "cpu-clock", "-F", "499"])
        .args(["--call-graph", "dwarf", "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .spawn()
        .context("perf (Debian: linux-perf)")?;
    let loaded = load();
    anyhow::ensure!(perf.wait()?.success(), "perf record failed");
    loaded.map(drop)
}
