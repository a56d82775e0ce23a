//! Warm API: throughput and latency of the main routes under `wrk`, 50 connections.

use crate::harness::{Fixture, Settings, load_rooms, send_script, wrk};
use crate::report::Report;

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
    let scenarios = [
        (
            "GET /chatroom (cache hit)",
            format!("{}/chatroom", s.base),
            None,
        ),
        (
            "GET /chatroom/{id}",
            format!("{}/chatroom/{}", s.base, f.chatroom),
            None,
        ),
        (
            "POST /chatroom/{id}/message (Pro, 50 chatrooms)",
            s.base.clone(),
            Some(script.to_str().unwrap()),
        ),
        ("GET /user/me", format!("{}/user/me", s.base), None),
    ];
    for (name, url, script) in scenarios {
        let (mut rps, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            let (r, a, b) = wrk(&url, &f.token, 50, seconds, script)?;
            rps.push(r);
            p50.push(a);
            p99.push(b);
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
    }
    Ok(())
}
