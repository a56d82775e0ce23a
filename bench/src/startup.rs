//! Start-up of the local server: its binary started afresh, timed from the spawn to the
//! first 200 of a real route (`GET /user/me`: the token checked, the user read from
//! PostgreSQL), on a database that is already migrated, as on every start but the first.
//! The functions' own start (init) is in `cold`; the report prints both in one section.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::harness::{Fixture, Settings, ms};
use crate::report::Report;

pub async fn run(s: &Settings, f: &Fixture, report: &mut Report) -> anyhow::Result<()> {
    let runs = if s.quick { 3 } else { 10 };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut first_200 = Vec::new();
    for _ in 0..runs {
        let port = free_port()?;
        let started = Instant::now();
        let server = Server(spawn(s, port)?);
        let url = format!("http://127.0.0.1:{port}/user/me");
        loop {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "the local server gave no 200 within 20 s"
            );
            match client.get(&url).bearer_auth(&f.token).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => anyhow::bail!("GET /user/me answered {} at start-up", r.status()),
                // Not listening yet.
                Err(_) => tokio::time::sleep(Duration::from_micros(500)).await,
            }
        }
        first_200.push(ms(started.elapsed()));
        drop(server);
    }
    report.add(
        1,
        "cold start",
        "local server: start → first 200 (GET /user/me)",
        "ms",
        first_200,
    );
    Ok(())
}

/// The same binary and settings as the bench's own server (bench/run.sh), on `port`.
fn spawn(s: &Settings, port: u16) -> anyhow::Result<Child> {
    Command::new(format!("{}/local-server.run", s.bin_dir))
        .env("REDIS_KEY_PREFIX", "bench:")
        .env("OTP_DELIVERY", "log")
        .env("DB_POOL_SIZE", "8")
        .env("STREAMS_PER_USER", "0")
        .env("LOCAL_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the local server")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Stops the server it holds, whatever happened.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
