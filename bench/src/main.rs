//! `make bench`: cold start, warm latency and throughput, worker batches, memory, package
//! sizes and cost growth, each as min / median / max over repeated runs. Started by
//! bench/run.sh, which provides the services, the release binaries and the local server.
//! Each part is a module adding its own figures to the report; `harness` holds what they
//! share.

mod cold;
mod deletion;
mod floor;
mod growth;
mod harness;
mod live;
mod report;
mod runtime_api;
mod search;
mod sizes;
mod startup;
mod statements;
mod sustained;
mod warm;
mod worker;

use harness::Settings;
use report::Report;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let s = Settings::from_env(quick)?;
    let (db, conn) = tokio_postgres::connect(&s.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let f = harness::fixture(&s, &db).await?;
    let mut report = Report::default();
    // BENCH_ONLY=deletion,... runs just those parts (cold, startup, warm, sustained, worker, live, growth, deletion,
    // search, floor, sizes); a partial full run updates only its own figures in latest.json.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    if run("cold") {
        eprintln!("bench: cold start and memory");
        cold::run(&s, &f, &mut report).await?;
    }
    if run("startup") {
        eprintln!("bench: local server start-up");
        startup::run(&s, &f, &mut report).await?;
    }
    if run("warm") {
        eprintln!("bench: warm API");
        warm::run(&s, &db, &f, &mut report).await?;
    }
    if run("sustained") {
        eprintln!("bench: sustained send");
        sustained::run(&s, &db, &mut report).await?;
    }
    if run("worker") {
        eprintln!("bench: worker");
        worker::run(&s, &db, &f, &mut report).await?;
    }
    if run("live") {
        eprintln!("bench: live replies");
        live::run(&s, &db, &f, &mut report).await?;
    }
    if run("growth") {
        eprintln!("bench: cost growth");
        growth::run(&s, &db, &f, &mut report).await?;
    }
    if run("deletion") {
        eprintln!("bench: deletion");
        deletion::run(&s, &db, &f, &mut report).await?;
    }
    if run("search") {
        eprintln!("bench: search");
        search::run(&s, &db, &mut report).await?;
    }
    // Last: its hundred thousand sends would weigh on the figures measured after it.
    if run("floor") {
        eprintln!("bench: floors of this machine");
        floor::run(&s, &db, &f, &mut report).await?;
    }
    if run("sizes") {
        sizes::run(&mut report);
    }
    floor::fractions(&mut report);
    report.finish(quick, &only)
}
