//! `make bench`: cold start, warm latency and throughput, worker batches, memory, package
//! sizes and cost growth, each as min / median / max over repeated runs. Started by
//! bench/run.sh, which provides the services, the release binaries and the local server.

mod live;
mod runtime_api;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use shared::AppState;
use shared::chat::worker::Worker;
use shared::clients::gemini::GeminiClient;
use shared::config::Config;
use uuid::Uuid;

use runtime_api::RuntimeApi;

struct Settings {
    quick: bool,
    bin_dir: String,
    base: String,
    database_url: String,
    redis_url: String,
    jwt_secret: String,
    webhook_secret: String,
}

/// One figure: its name, unit, and the value of each run.
struct Figure {
    name: String,
    unit: String,
    values: Vec<f64>,
}

#[derive(Default)]
struct Report {
    /// (display order, section) -> figures
    rows: BTreeMap<(usize, String), Vec<Figure>>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, order: usize, section: &str, figure: &str, unit: &str, values: Vec<f64>) {
        self.rows
            .entry((order, section.to_string()))
            .or_default()
            .push(Figure {
                name: figure.to_string(),
                unit: unit.to_string(),
                values,
            });
    }
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is required (bench/run.sh sets it)"))
}

fn config(s: &Settings, gemini_base: &str) -> anyhow::Result<Config> {
    let mut vars = BTreeMap::from([
        ("DATABASE_URL", s.database_url.clone()),
        ("REDIS_URL", s.redis_url.clone()),
        ("JWT_SECRET_KEY", s.jwt_secret.clone()),
        ("DB_POOL_SIZE", "16".to_string()),
        ("GOOGLE_API_KEY", "bench-key".to_string()),
        ("GEMINI_BASE_URL", gemini_base.to_string()),
        ("GEMINI_MODEL", "bench".to_string()),
    ]);
    vars.insert("REDIS_KEY_PREFIX", "bench:".into());
    Ok(Config::from_lookup(|k| vars.get(k).cloned())?)
}

fn http_event(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: Value,
    body: Option<String>,
) -> String {
    let mut h = json!({ "content-type": "application/json", "host": "bench" });
    if let Some(t) = token {
        h["authorization"] = json!(format!("Bearer {t}"));
    }
    if let Value::Object(extra) = headers {
        for (k, v) in extra {
            h[k] = v;
        }
    }
    json!({
        "version": "2.0", "routeKey": format!("{method} {path}"), "rawPath": path, "rawQueryString": "",
        "headers": h,
        "requestContext": { "accountId": "1", "apiId": "bench", "domainName": "bench", "domainPrefix": "bench",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench" },
            "requestId": "r", "routeKey": format!("{method} {path}"), "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0 },
        "body": body, "isBase64Encoded": false
    })
    .to_string()
}

struct Fixture {
    user: Uuid,
    token: String,
    chatroom: Uuid,
}

async fn fixture(s: &Settings, db: &tokio_postgres::Client) -> anyhow::Result<Fixture> {
    let user = Uuid::now_v7();
    db.execute(
        "INSERT INTO users (id, email, name, tier) VALUES ($1, $2, 'Bench', 'pro')",
        &[&user, &format!("bench-{}@example.com", user.simple())],
    )
    .await?;
    let chatroom = Uuid::now_v7();
    db.execute(
        "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'bench')",
        &[&chatroom, &user],
    )
    .await?;
    seed_messages(db, user, chatroom, 20).await?;
    let keys =
        shared::auth::jwt::JwtKeys::new(s.jwt_secret.as_bytes(), Duration::from_secs(86_400));
    Ok(Fixture {
        user,
        token: keys.issue(user, 0)?.access_token,
        chatroom,
    })
}

/// `n` messages: answered user messages each followed by its reply, in one statement.
async fn seed_messages(
    db: &tokio_postgres::Client,
    user: Uuid,
    chatroom: Uuid,
    n: i64,
) -> anyhow::Result<()> {
    // Each user message followed by its reply, as the worker's history expects.
    db.execute(
        "WITH ids AS (SELECT g, gen_random_uuid() AS uid FROM generate_series(1, ($3::bigint + 1) / 2) g) \
         INSERT INTO messages (id, chatroom_id, user_id, role, content, status, reply_to) \
         SELECT id, $1, $2, role, content, status, reply_to FROM ( \
             SELECT uid AS id, g, 0 AS k, 'user' AS role, 'seeded message ' || g AS content, \
                 'answered' AS status, NULL::uuid AS reply_to FROM ids \
             UNION ALL \
             SELECT gen_random_uuid(), g, 1, 'model', 'seeded reply ' || g, 'complete', uid FROM ids) x \
         ORDER BY g, k LIMIT $3",
        &[&chatroom, &user, &n],
    )
    .await?;
    Ok(())
}

async fn cold_start(s: &Settings, f: &Fixture, report: &mut Report) -> anyhow::Result<()> {
    let api = RuntimeApi::default();
    let addr = api.start().await;
    let runs = if s.quick { 3 } else { 10 };
    let invocations = if s.quick { 20 } else { 300 };
    let base_env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), s.database_url.clone()),
        ("REDIS_URL".into(), s.redis_url.clone()),
        ("REDIS_KEY_PREFIX".into(), "bench:".into()),
        ("JWT_SECRET_KEY".into(), s.jwt_secret.clone()),
        ("STRIPE_WEBHOOK_SECRET".into(), s.webhook_secret.clone()),
        ("GOOGLE_API_KEY".into(), "bench-key".into()),
        ("GEMINI_BASE_URL".into(), "http://127.0.0.1:9".into()),
    ];
    let token = f.token.clone();
    let secret = s.webhook_secret.clone();
    let event_for = move |function: &str| -> String {
        match function {
            "hello" => http_event("GET", "/", None, json!({}), None),
            "auth" => http_event("POST", "/auth/send-otp", None, json!({}),
                Some(json!({ "email": format!("cold-{}@example.com", Uuid::new_v4().simple()) }).to_string())),
            "user" => http_event("GET", "/user/me", Some(&token), json!({}), None),
            "chatroom" => http_event("GET", "/chatroom", Some(&token), json!({}), None),
            "subscription" => http_event("GET", "/subscription/status", Some(&token), json!({}), None),
            "stripe-webhook" => {
                let now = chrono::Utc::now().timestamp();
                let body = json!({ "id": format!("evt_{}", Uuid::new_v4().simple()), "type": "bench.ignored", "created": now,
                    "data": { "object": {} } }).to_string();
                let sig = shared::billing::webhook::sign(body.as_bytes(), &secret, now);
                http_event("POST", "/webhook/stripe", None, json!({ "stripe-signature": sig }), Some(body))
            }
            "reply-worker" => json!({ "Records": [{ "messageId": "m1", "receiptHandle": "r", "eventSource": "aws:sqs",
                "body": json!({ "message_id": Uuid::new_v4() }).to_string(), "attributes": { "ApproximateReceiveCount": "1" },
                "messageAttributes": {} }] }).to_string(),
            other => panic!("unknown function {other}"),
        }
    };
    let mut hello_init = Vec::new();
    for function in [
        "hello",
        "auth",
        "user",
        "chatroom",
        "subscription",
        "stripe-webhook",
        "reply-worker",
    ] {
        let binary = format!("{}/{function}", s.bin_dir);
        let (mut init, mut first) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let run = api
                .run(&addr, &binary, &base_env, vec![event_for(function)])
                .await?;
            let answer = &run.responses[0];
            anyhow::ensure!(!answer.starts_with("ERROR"), "{function} failed: {answer}");
            if function != "hello" && function != "reply-worker" {
                let status = serde_json::from_str::<Value>(answer)?["statusCode"]
                    .as_u64()
                    .unwrap_or(0);
                anyhow::ensure!(
                    (200..300).contains(&status),
                    "{function} answered {status}: {answer}"
                );
            }
            init.push(run.init.as_secs_f64() * 1000.0);
            first.push(run.first_response.as_secs_f64() * 1000.0);
        }
        if function == "hello" {
            hello_init = init.clone();
        } else {
            let ratio: Vec<f64> = init.iter().zip(&hello_init).map(|(a, b)| a / b).collect();
            report.add(
                1,
                "cold start",
                &format!("{function}: init / hello-world init"),
                "×",
                ratio,
            );
        }
        report.add(
            1,
            "cold start",
            &format!("{function}: init (start → first poll)"),
            "ms",
            init,
        );
        report.add(
            1,
            "cold start",
            &format!("{function}: first response"),
            "ms",
            first,
        );

        // Peak memory over many sequential invocations (one container serves one at a time).
        let events = (0..invocations).map(|_| event_for(function)).collect();
        let run = api.run(&addr, &binary, &base_env, events).await?;
        report.add(
            4,
            "memory",
            &format!("{function}: peak RSS after {invocations} invocations"),
            "MB",
            vec![run.peak_rss_kb as f64 / 1024.0],
        );
    }
    Ok(())
}

/// Parses wrk's `--latency` output: (requests/s, p50 ms, p99 ms).
fn parse_wrk(out: &str) -> Option<(f64, f64, f64)> {
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => return None,
        })
    };
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let pct = |p: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| ms(l.split_whitespace().nth(1)?))
    };
    Some((rps, pct("50%")?, pct("99%")?))
}

fn wrk(
    url: &str,
    token: &str,
    connections: u32,
    seconds: u64,
    script: Option<&str>,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut cmd = Command::new("wrk");
    let threads = connections.min(2);
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ])
    .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(s) = script {
        cmd.args(["-s", s]);
    }
    let out = cmd.arg(url).output().context("wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        !text.contains("Non-2xx"),
        "non-2xx answers under load for {url}:\n{text}"
    );
    parse_wrk(&text).with_context(|| format!("unreadable wrk output:\n{text}"))
}

async fn warm(
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

/// `n` new chatrooms of `user`, with nothing in them.
async fn load_rooms(
    db: &tokio_postgres::Client,
    user: Uuid,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut rooms = Vec::with_capacity(n);
    for _ in 0..n {
        let room = Uuid::now_v7();
        db.execute(
            "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'load')",
            &[&room, &user],
        )
        .await?;
        rooms.push(room);
    }
    Ok(rooms)
}

/// A wrk script sending one message per request into a random one of `rooms`.
fn send_script(name: &str, rooms: &[Uuid]) -> anyhow::Result<std::path::PathBuf> {
    let paths: Vec<String> = rooms
        .iter()
        .map(|r| format!("\"/chatroom/{r}/message\""))
        .collect();
    let script = std::env::temp_dir().join(name);
    std::fs::write(
        &script,
        format!(
            "local rooms = {{{}}}\nwrk.method = \"POST\"\nwrk.body = '{{\"content\": \"How far is the moon?\"}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             request = function() return wrk.format(nil, rooms[math.random(#rooms)]) end\n",
            paths.join(", ")
        ),
    )?;
    Ok(script)
}

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

/// Sending without pause for minutes, worker answering every message, no vacuum but
/// autovacuum's: throughput per slice must hold, and the tables must not bloat.
async fn sustained(
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
        let user = Uuid::now_v7();
        db.execute(
            "INSERT INTO users (id, email, tier) VALUES ($1, $2, 'pro')",
            &[&user, &format!("sustained-{}@example.com", user.simple())],
        )
        .await?;
        let token =
            shared::auth::jwt::JwtKeys::new(s.jwt_secret.as_bytes(), Duration::from_secs(86_400))
                .issue(user, 0)?
                .access_token;
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

/// A fake Gemini answering every request after `delay`.
async fn fake_gemini(delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        axum::Json(json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": "A bench reply." }] }, "finishReason": "STOP" }] }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn pending_messages(
    db: &tokio_postgres::Client,
    f: &Fixture,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        // Each in its own chatroom, as concurrent users would be.
        let room = Uuid::now_v7();
        db.execute(
            "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'w')",
            &[&room, &f.user],
        )
        .await?;
        let id = Uuid::now_v7();
        db.execute(
            "WITH m AS (INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
             VALUES ($1, $2, $3, 'user', $4, 'pending') RETURNING id) \
             INSERT INTO pending_messages (message_id) SELECT id FROM m",
            &[&id, &room, &f.user, &format!("question {i}")],
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

fn sqs_event(ids: &[Uuid]) -> aws_lambda_events::event::sqs::SqsEvent {
    let records: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({ "messageId": id.to_string(), "body": json!({ "message_id": id }).to_string(),
            "attributes": { "ApproximateReceiveCount": "1" }, "messageAttributes": {} })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

async fn worker(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let gemini = fake_gemini(Duration::from_millis(300)).await;
    let state = AppState::new(config(s, &gemini)?)?;
    let model = GeminiClient::new(&state.config.gemini)?;
    let worker = Worker {
        state,
        model: Arc::new(model),
    };
    let mut batch = Vec::new();
    for _ in 0..(if s.quick { 3 } else { 10 }) {
        let ids = pending_messages(db, f, 10).await?;
        let started = Instant::now();
        let response = reply_worker_fn::handle_batch(&worker, sqs_event(&ids)).await;
        batch.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "batch had failures"
        );
    }
    report.add(
        3,
        "worker",
        "batch of 10 records, Gemini at 300 ms",
        "ms",
        batch,
    );

    let total = if s.quick { 100 } else { 1000 };
    let ids = pending_messages(db, f, total).await?;
    let started = Instant::now();
    // Ten concurrent batches of ten, as the event source's maximum concurrency allows.
    let mut set = tokio::task::JoinSet::new();
    for chunk in ids.chunks(10) {
        let (worker, chunk) = (worker.clone(), chunk.to_vec());
        set.spawn(async move { reply_worker_fn::handle_batch(&worker, sqs_event(&chunk)).await });
        if set.len() >= 10 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let answered: i64 = db
        .query_one(
            "SELECT count(*) FROM messages WHERE id = ANY($1) AND status = 'answered'",
            &[&ids],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        answered as usize == total,
        "only {answered} of {total} answered"
    );
    report.add(
        3,
        "worker",
        &format!("drain {total} queued messages"),
        "replies/s",
        vec![total as f64 / secs],
    );
    Ok(())
}

async fn growth(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let sizes: &[i64] = if s.quick {
        &[10, 1_000, 10_000]
    } else {
        &[10, 1_000, 100_000]
    };
    let state = AppState::new(config(s, "http://127.0.0.1:9")?)?;
    let model = GeminiClient::new(&state.config.gemini)?;
    let worker = Worker {
        state,
        model: Arc::new(model),
    };
    for &n in sizes {
        let room = Uuid::now_v7();
        db.execute(
            "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'growth')",
            &[&room, &f.user],
        )
        .await?;
        seed_messages(db, f.user, room, n).await?;
        db.batch_execute("ANALYZE messages").await?;
        let (_, p50, _) = wrk(
            &format!("{}/chatroom/{room}", s.base),
            &f.token,
            1,
            if s.quick { 1 } else { 3 },
            None,
        )?;
        report.add(
            5,
            "cost growth",
            &format!("GET /chatroom/{{id}} with {n} messages: p50"),
            "ms",
            vec![p50],
        );
        let latest = shared::chat::messages::page(&worker.state.db().await?, room, None, 1)
            .await?
            .0;
        let mut build = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let turns = worker
                .conversation(&latest[0])
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            build.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                turns.len() > 2 && turns.len() <= 21,
                "{} turns",
                turns.len()
            );
        }
        report.add(
            5,
            "cost growth",
            &format!("worker request building with {n} messages"),
            "ms",
            build,
        );
    }
    // One user with 1,000 chatrooms.
    let user = Uuid::now_v7();
    db.execute(
        "INSERT INTO users (id, email, tier) VALUES ($1, $2, 'pro')",
        &[&user, &format!("many-{}@example.com", user.simple())],
    )
    .await?;
    db.execute(
        "INSERT INTO chatrooms (id, user_id, name) SELECT gen_random_uuid(), $1, 'room ' || g FROM generate_series(1, 1000) g",
        &[&user],
    )
    .await?;
    let token = shared::auth::jwt::JwtKeys::new(s.jwt_secret.as_bytes(), Duration::from_secs(3600))
        .issue(user, 0)?
        .access_token;
    let (_, p50, _) = wrk(
        &format!("{}/chatroom", s.base),
        &token,
        1,
        if s.quick { 1 } else { 3 },
        None,
    )?;
    report.add(
        5,
        "cost growth",
        "GET /chatroom with 1000 chatrooms (cached): p50",
        "ms",
        vec![p50],
    );
    // A cache miss pays the list query: each chatroom's latest activity is one probe of
    // its newest message. Two messages in each, so that every probe finds one.
    db.execute(
        "INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
         SELECT gen_random_uuid(), c.id, $1, 'user', 'hello', 'failed' \
         FROM chatrooms c, generate_series(1, 2) WHERE c.user_id = $1",
        &[&user],
    )
    .await?;
    db.batch_execute("ANALYZE chatrooms; ANALYZE messages")
        .await?;
    let mut query = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let rooms = shared::chat::chatrooms::list(&worker.state.db().await?, user).await?;
        query.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(rooms.len() == 1000);
    }
    report.add(
        5,
        "cost growth",
        "list query (a cache miss) with 1000 chatrooms",
        "ms",
        query,
    );
    Ok(())
}

/// `DELETE /chatroom/{id}` of a chatroom holding `messages` messages, each with its
/// idempotency key, among `keys` keys in the table: the cascade to `idempotency_keys`
/// must find each message's key by index, not by scanning the table once per message.
async fn deletion(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (messages, keys): (i64, i64) = if s.quick {
        (1_000, 20_000)
    } else {
        (10_000, 1_000_000)
    };
    // Messages with a key each, in one statement.
    const SEED: &str = "WITH m AS ( \
        INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
        SELECT gen_random_uuid(), $1, $2, 'user', 'seeded message ' || g, 'answered' \
        FROM generate_series(1, $3::bigint) g RETURNING id, user_id) \
        INSERT INTO idempotency_keys (user_id, key, request_hash, message_id, response) \
        SELECT user_id, id::text, 'bench', id, '{\"message\": {}}' FROM m";
    let filler = Uuid::now_v7();
    db.execute(
        "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'filler')",
        &[&filler, &f.user],
    )
    .await?;
    db.execute(SEED, &[&filler, &f.user, &(keys - messages)])
        .await?;
    let mut times = Vec::new();
    for _ in 0..(if s.quick { 1 } else { 3 }) {
        let room = Uuid::now_v7();
        db.execute(
            "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, 'doomed')",
            &[&room, &f.user],
        )
        .await?;
        db.execute(SEED, &[&room, &f.user, &messages]).await?;
        db.batch_execute("ANALYZE messages; ANALYZE idempotency_keys")
            .await?;
        let in_table: i64 = db
            .query_one("SELECT count(*) FROM idempotency_keys", &[])
            .await?
            .get(0);
        anyhow::ensure!(in_table >= keys, "only {in_table} keys seeded");
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
            .args(["-X", "DELETE", "--max-time", "600"])
            .args(["-H", &format!("Authorization: Bearer {}", f.token)])
            .arg(format!("{}/chatroom/{room}", s.base))
            .output()
            .context("curl")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (status, secs) = text.split_once(' ').context("unreadable curl output")?;
        anyhow::ensure!(status == "204", "DELETE answered {status}");
        times.push(secs.trim().parse::<f64>()? * 1000.0);
    }
    report.add(
        5,
        "cost growth",
        &format!("DELETE /chatroom/{{id}} with {messages} messages, {keys} idempotency keys"),
        "ms",
        times,
    );
    db.execute("DELETE FROM chatrooms WHERE id = $1", &[&filler])
        .await?;
    Ok(())
}

/// Each function's package for both architectures, as `make package` builds them: the
/// zip Lambda stores and the bootstrap in it (unzipped by bench/run.sh). An architecture
/// not packaged in this run has no rows.
fn sizes(report: &mut Report) {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bin_dir = std::env::var("BENCH_BIN_DIR").unwrap_or_default();
    // BENCH_ARCHES=x86_64 did not build arm64: an arm64 zip left by an earlier build
    // would be reported as this run's.
    let arm64 = std::env::var("BENCH_ARCHES").as_deref() != Ok("x86_64");
    for function in [
        "auth",
        "user",
        "chatroom",
        "subscription",
        "stripe-webhook",
        "reply-worker",
        "stream",
    ] {
        for (arch, lambda_dir, unzipped) in [
            ("x86_64", "lambda", "pkg"),
            ("arm64", "lambda-arm64", "arm64"),
        ] {
            if arch == "arm64" && !arm64 {
                continue;
            }
            for (path, what) in [
                (
                    format!("{target}/{lambda_dir}/{function}/bootstrap.zip"),
                    "bootstrap.zip",
                ),
                (
                    format!("{bin_dir}/{function}.{unzipped}/bootstrap"),
                    "bootstrap",
                ),
            ] {
                if let Ok(meta) = std::fs::metadata(&path) {
                    let mb = meta.len() as f64 / 1048576.0;
                    report.add(
                        6,
                        "package size",
                        &format!("{function} ({arch}): {what}"),
                        "MB",
                        vec![mb],
                    );
                }
            }
        }
    }
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

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{} cores, {:.0} GiB, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem as f64 / 1048576.0
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let s = Settings {
        quick,
        bin_dir: env("BENCH_BIN_DIR")?,
        base: env("BENCH_BASE")?,
        database_url: env("DATABASE_URL")?,
        redis_url: env("REDIS_URL")?,
        jwt_secret: env("JWT_SECRET_KEY")?,
        webhook_secret: env("STRIPE_WEBHOOK_SECRET")?,
    };
    let (db, conn) = tokio_postgres::connect(&s.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let f = fixture(&s, &db).await?;
    let mut report = Report::default();
    // BENCH_ONLY=deletion,... runs just those parts (cold, warm, sustained, worker, live, growth, deletion,
    // sizes); a partial full run updates only its own figures in latest.json.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    if run("cold") {
        eprintln!("bench: cold start and memory");
        cold_start(&s, &f, &mut report).await?;
    }
    if run("warm") {
        eprintln!("bench: warm API");
        warm(&s, &db, &f, &mut report).await?;
    }
    if run("sustained") {
        eprintln!("bench: sustained send");
        sustained(&s, &db, &mut report).await?;
    }
    if run("worker") {
        eprintln!("bench: worker");
        worker(&s, &db, &f, &mut report).await?;
    }
    if run("live") {
        eprintln!("bench: live replies");
        live::run(&s, &db, &f, &mut report).await?;
    }
    if run("growth") {
        eprintln!("bench: cost growth");
        growth(&s, &db, &f, &mut report).await?;
    }
    if run("deletion") {
        eprintln!("bench: deletion");
        deletion(&s, &db, &f, &mut report).await?;
    }
    if run("sizes") {
        sizes(&mut report);
    }
    if !quick && std::env::var("BENCH_PROFILE").as_deref() == Ok("debug") {
        report.notes.push(format!(
            "BENCH_PROFILE=debug: the {} figures come from a debug build of the local server",
            if only.is_empty() {
                "full"
            } else {
                only.as_str()
            }
        ));
    }
    if quick {
        report.notes.push(
            "quick mode: debug build, short runs; proves the suite works, not a speed measurement"
                .into(),
        );
    }

    let machine = machine();
    println!(
        "\nchatroom-lambda benchmark ({}) on {machine}",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:<66} {:>10} {:>10} {:>10}  unit",
        "figure", "min", "median", "max"
    );
    let mut json_rows = Vec::new();
    for ((_, section), figures) in &report.rows {
        println!("-- {section}");
        for Figure {
            name: figure,
            unit,
            values,
        } in figures
        {
            let (min, med, max) = stats(values);
            println!("{figure:<66} {min:>10.2} {med:>10.2} {max:>10.2}  {unit}");
            json_rows.push(json!({ "section": section, "figure": figure, "unit": unit, "min": min, "median": med, "max": max, "runs": values.len(), "values": values }));
        }
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    // Quick runs (debug build) go beside, never over, the committed full-run figures.
    let path = if quick {
        "bench/results/quick.json"
    } else {
        "bench/results/latest.json"
    };
    let mut out = json!({ "date": chrono::Utc::now().to_rfc3339(), "mode": if quick { "quick" } else { "full" }, "machine": machine, "figures": json_rows, "notes": report.notes });
    if !only.is_empty()
        && let Ok(text) = std::fs::read_to_string(path)
        && let Ok(mut previous) = serde_json::from_str::<Value>(&text)
    {
        // A partial run replaces its own figures and keeps the others, saying so.
        let fresh: Vec<Value> = out["figures"].as_array().cloned().unwrap_or_default();
        let names: Vec<&Value> = fresh.iter().map(|f| &f["figure"]).collect();
        let mut figures: Vec<Value> = previous["figures"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !names.contains(&&f["figure"]))
            .collect();
        figures.extend(fresh.iter().cloned());
        previous["figures"] = Value::Array(figures);
        let mut notes: Vec<Value> = previous["notes"].as_array().cloned().unwrap_or_default();
        notes.push(Value::String(format!(
            "{}: BENCH_ONLY={only} run on {machine}; its figures replaced their earlier values",
            chrono::Utc::now().to_rfc3339()
        )));
        notes.extend(out["notes"].as_array().cloned().unwrap_or_default());
        previous["notes"] = Value::Array(notes);
        out = previous;
    }
    std::fs::create_dir_all("bench/results")?;
    std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    println!("results written to {path}");
    Ok(())
}
