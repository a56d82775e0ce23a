//! Sustained send: minutes of sends without pause, the worker answering every message;
//! throughput per slice, table sizes and what PostgreSQL did in the background.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Settings, load_rooms, pro_user, send_script, wrk};
use crate::report::Report;

/// Sizes (table with TOAST, and its indexes) and row counters of the two tables a send
/// writes to, as PostgreSQL reports them.
#[derive(Debug)]
struct TableStats {
    chatrooms_table: f64,
    chatrooms_indexes: f64,
    messages_table: f64,
    messages_indexes: f64,
    chatrooms: i64,
    messages: i64,
    /// Row updates so far (all, and the HOT ones), from the statistics collector.
    chatrooms_updates: i64,
    chatrooms_hot_updates: i64,
    messages_updates: i64,
    messages_hot_updates: i64,
}

async fn table_stats(db: &tokio_postgres::Client) -> anyhow::Result<TableStats> {
    // Row counters reach pg_stat_user_tables within a second of each transaction.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    db.batch_execute("SELECT pg_stat_clear_snapshot()").await?;
    let row = db
        .query_one(
            "SELECT pg_table_size('chatrooms')::float8, pg_indexes_size('chatrooms')::float8, \
                    pg_table_size('messages')::float8, pg_indexes_size('messages')::float8, \
                    (SELECT count(*) FROM chatrooms), (SELECT count(*) FROM messages), \
                    (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'chatrooms'), \
                    (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'chatrooms'), \
                    (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'messages'), \
                    (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'messages')",
            &[],
        )
        .await?;
    Ok(TableStats {
        chatrooms_table: row.get(0),
        chatrooms_indexes: row.get(1),
        messages_table: row.get(2),
        messages_indexes: row.get(3),
        chatrooms: row.get(4),
        messages: row.get(5),
        chatrooms_updates: row.get(6),
        chatrooms_hot_updates: row.get(7),
        messages_updates: row.get(8),
        messages_hot_updates: row.get(9),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// What a run of back-to-back send slices measured, one entry per slice.
struct Slices {
    rps: Vec<f64>,
    /// The 1-minute load average after the slice.
    load: Vec<String>,
    /// [`background_counters`] after the slice.
    background: Vec<String>,
}

/// `n` back-to-back `wrk` runs of `secs` seconds with the send script.
async fn send_slices(
    s: &Settings,
    db: &tokio_postgres::Client,
    token: &str,
    script: &std::path::Path,
    n: usize,
    secs: u64,
) -> anyhow::Result<Slices> {
    let mut out = Slices {
        rps: Vec::new(),
        load: Vec::new(),
        background: Vec::new(),
    };
    for _ in 0..n {
        let (r, _, _) = wrk(&s.base, token, 50, secs, script.to_str())?;
        out.rps.push(r);
        out.load.push(load_average());
        out.background.push(background_counters(s, db).await);
    }
    Ok(out)
}

/// Req/s per slice as `1873 → 1866 → 1718`.
fn arrows(rps: &[f64]) -> String {
    rps.iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Checkpoints so far, autovacuum runs on `messages`, buffers that backends had to write
/// out themselves (the buffer cache full of dirty pages), buffers allocated, and Redis's
/// memory (each reply's live stream is kept 60 s after its end). "n/a" where a source differs
/// (PostgreSQL 17 moved these counters to pg_stat_checkpointer and pg_stat_io).
async fn background_counters(s: &Settings, db: &tokio_postgres::Client) -> String {
    let row = db
        .query_one(
            "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), \
                    (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'messages'), \
                    (SELECT buffers_backend FROM pg_stat_bgwriter), \
                    (SELECT buffers_alloc FROM pg_stat_bgwriter)",
            &[],
        )
        .await;
    let postgres = match row {
        Ok(row) => format!(
            "{}/{}/{}/{}",
            row.get::<_, i64>(0),
            row.get::<_, Option<i64>>(1).unwrap_or(0),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3)
        ),
        Err(_) => "n/a".into(),
    };
    let redis = Command::new("redis-cli")
        .args(["-u", &s.redis_url, "INFO", "memory"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("used_memory_human:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "n/a".into());
    format!("{postgres}/{redis}")
}

/// Sending without pause for minutes, worker answering every message, no vacuum but
/// autovacuum's: throughput per slice must hold, and the tables must not bloat.
pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    // BENCH_SUSTAINED=<slices>x<seconds> overrides the length (e.g. full length in quick mode).
    let (slices, slice_secs) = std::env::var("BENCH_SUSTAINED")
        .ok()
        .and_then(|v| {
            let (n, secs) = v.split_once('x')?;
            Some((n.parse::<usize>().ok()?, secs.parse::<u64>().ok()?))
        })
        .unwrap_or(if s.quick { (3, 2) } else { (10, 30) });
    // Slices sent before the measured ones and left out of the ratio. On a fresh database
    // the first slices ran faster, most likely while PostgreSQL's buffer cache still had
    // free buffers (backends began writing dirty pages out when the rate fell); a database
    // that has run for a while is past that. The warm-up's slices are reported too.
    let warmup_slices: usize = std::env::var("BENCH_SUSTAINED_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if s.quick { 1 } else { 3 });
    // BENCH_SUSTAINED_ROOMS=50,1 runs the two cases in another order (the first one starts
    // on near-empty tables, the second on what the first wrote).
    let room_counts: Vec<usize> = std::env::var("BENCH_SUSTAINED_ROOMS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 50]);
    for n_rooms in room_counts {
        let user = pro_user(db, "sustained").await?;
        let token = s.token(user, Duration::from_secs(86_400))?;
        let rooms = load_rooms(db, user, n_rooms).await?;
        let script = send_script(&format!("bench-sustained-{n_rooms}.lua"), &rooms)?;
        let label = if n_rooms == 1 {
            "1 chatroom".to_string()
        } else {
            format!("{n_rooms} chatrooms")
        };
        let section = format!("sustained send into {label}, {} × {slice_secs} s", slices);
        eprintln!("bench: {section}");
        let run = |n| send_slices(s, db, &token, &script, n, slice_secs);
        let warmup = run(warmup_slices).await?;
        let before = table_stats(db).await?;
        let Slices {
            rps,
            load,
            background,
        } = run(slices).await?;
        // The worker answers in the background: wait until it has caught up, that is
        // until the pending count stops falling (bounded). What stays pending are sends
        // cut off between their insert and their queueing when wrk closed its connections.
        let mut pending = i64::MAX;
        for _ in 0..120 {
            let now: i64 = db
                .query_one(
                    "SELECT count(*) FROM messages WHERE user_id = $1 AND status = 'pending'",
                    &[&user],
                )
                .await?
                .get(0);
            if now == 0 || now == pending {
                pending = now;
                break;
            }
            pending = now;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let after = table_stats(db).await?;
        let ratio = rps.last().unwrap() / rps.first().unwrap() * 100.0;
        if !warmup.rps.is_empty() {
            report.notes.push(format!(
                "{section}: warm-up before the measured slices, req/s per slice {}; counters \
                 after each: {}",
                arrows(&warmup.rps),
                warmup.background.join(" · ")
            ));
        }
        report
            .notes
            .push(format!("{section}: req/s per slice {}", arrows(&rps)));
        // This suite's own load is about 4 to 5 (wrk's threads, the server's, PostgreSQL's
        // backends and autovacuum, Redis, on 2 cores); more means something else shared
        // the machine during that slice.
        report.notes.push(format!(
            "{section}: 1-minute load average after each slice {}",
            load.join(" / ")
        ));
        // What PostgreSQL did besides the requests, cumulative after each slice: the
        // suspects when the slices fall.
        let shared_buffers: String = db.query_one("SHOW shared_buffers", &[]).await?.get(0);
        report.notes.push(format!(
            "{section}: PostgreSQL shared_buffers {shared_buffers}; after each slice, \
             checkpoints / autovacuums of messages / buffers written by backends / buffers \
             allocated (cumulative) / Redis memory in use: {}",
            background.join(" · ")
        ));
        let mb = 1_048_576.0;
        // After the warm figures, before the worker's.
        let o = 3;
        report.add(
            o,
            &section,
            "send: req/s per slice (min / median / max)",
            "req/s",
            rps.clone(),
        );
        if !warmup.rps.is_empty() {
            report.add(
                o,
                &section,
                "warm-up before the measured slices (not in the ratio): req/s per slice",
                "req/s",
                warmup.rps,
            );
        }
        report.add(o, &section, "send: first slice", "req/s", vec![rps[0]]);
        report.add(
            o,
            &section,
            "send: last slice",
            "req/s",
            vec![*rps.last().unwrap()],
        );
        report.add(
            o,
            &section,
            "send: last slice / first slice",
            "%",
            vec![ratio],
        );
        report.add(
            o,
            &section,
            "messages left pending (sends cut off when wrk stopped)",
            "messages",
            vec![pending as f64],
        );
        for (what, b, a) in [
            (
                "chatrooms table",
                before.chatrooms_table,
                after.chatrooms_table,
            ),
            (
                "chatrooms indexes",
                before.chatrooms_indexes,
                after.chatrooms_indexes,
            ),
            (
                "messages table",
                before.messages_table,
                after.messages_table,
            ),
            (
                "messages indexes",
                before.messages_indexes,
                after.messages_indexes,
            ),
        ] {
            report.add(o, &section, &format!("{what}: before"), "MB", vec![b / mb]);
            report.add(o, &section, &format!("{what}: after"), "MB", vec![a / mb]);
        }
        report.add(
            o,
            &section,
            "chatrooms table + indexes per chatroom: after",
            "kB",
            vec![
                (after.chatrooms_table + after.chatrooms_indexes) / 1024.0 / after.chatrooms as f64,
            ],
        );
        report.add(
            o,
            &section,
            "messages table + indexes per message: after",
            "B",
            vec![(after.messages_table + after.messages_indexes) / after.messages as f64],
        );
        report.add(
            o,
            &section,
            "messages written during the run (sends and replies)",
            "messages",
            vec![(after.messages - before.messages) as f64],
        );
        report.add(
            o,
            &section,
            "chatrooms row updates during the run",
            "rows",
            vec![(after.chatrooms_updates - before.chatrooms_updates) as f64],
        );
        let (upd, hot) = (
            after.messages_updates - before.messages_updates,
            after.messages_hot_updates - before.messages_hot_updates,
        );
        report.add(
            o,
            &section,
            "messages row updates during the run",
            "rows",
            vec![upd as f64],
        );
        report.add(
            o,
            &section,
            "messages row updates that were HOT",
            "%",
            vec![hot as f64 * 100.0 / upd.max(1) as f64],
        );
        report.add(
            o,
            &section,
            "chatrooms HOT row updates during the run",
            "rows",
            vec![(after.chatrooms_hot_updates - before.chatrooms_hot_updates) as f64],
        );
    }
    Ok(())
}
