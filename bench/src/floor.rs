//! This machine's floors, measured in the same run as the figures they judge (its speed
//! varies between runs by up to 2.5×): the HTTP floor, a hello-world axum route under
//! the same `wrk` load as the list and detail routes; and the database floor, the
//! statements a send and its reply execute, driven by `pgbench` on the bench's
//! PostgreSQL. Each route's throughput is then printed as a fraction of its floor.

use std::process::Command;

use anyhow::Context;

use crate::harness::{Settings, chatroom, pro_user, wrk};
use crate::report::Report;

const ORDER: usize = 0;
const SECTION: &str = "floors of this machine (same run)";

/// One send and its reply, as the code runs them (messages.rs, worker.rs): the user
/// read, the message with its pending entry, the claim, the history and the chatroom's
/// settings, the reply with the flip. One pgbench transaction per send.
const SEND_AND_REPLY: &str = r#"
SELECT id, email, name, password_hash, token_version, tier, email_verified_at, created_at FROM users WHERE id = :user_id::uuid;
WITH m AS (INSERT INTO messages (id, chatroom_id, user_id, role, content, status) SELECT gen_random_uuid(), c.id, c.user_id, 'user', 'floor message', 'pending' FROM chatrooms c WHERE c.id = :room_id::uuid AND c.user_id = :user_id::uuid RETURNING id, seq), listed AS (INSERT INTO pending_messages (message_id) SELECT id FROM m) SELECT id AS mid, seq AS mseq FROM m \gset
UPDATE messages SET attempts = attempts + 1, updated_at = now(), lease_owner = gen_random_uuid(), lease_until = now() + interval '5 minutes' WHERE id = :mid::uuid AND role = 'user' AND status = 'pending' AND (lease_until IS NULL OR lease_until < now()) RETURNING id;
WITH recent AS (SELECT id, seq, content, role, status FROM messages WHERE chatroom_id = :room_id::uuid AND seq < :mseq ORDER BY seq DESC LIMIT 40) SELECT u.content, r.content FROM recent u JOIN messages r ON r.reply_to = u.id WHERE u.role = 'user' AND u.status = 'answered' ORDER BY u.seq DESC LIMIT 10;
SELECT c.instructions, c.model, u.tier FROM chatrooms c JOIN users u ON u.id = c.user_id WHERE c.id = :room_id::uuid;
WITH flipped AS (UPDATE messages SET status = 'answered', updated_at = now() WHERE id = :mid::uuid AND status = 'pending' RETURNING id, cancel_requested_at), reply AS (INSERT INTO messages (id, chatroom_id, user_id, role, content, status, reply_to, finish_reason) SELECT gen_random_uuid(), :room_id::uuid, :user_id::uuid, 'model', 'floor reply', 'complete', flipped.id, 'STOP' FROM flipped ON CONFLICT (reply_to) WHERE reply_to IS NOT NULL DO NOTHING RETURNING id), unlisted AS (DELETE FROM pending_messages WHERE message_id IN (SELECT id FROM flipped)) SELECT EXISTS (SELECT 1 FROM reply);
"#;

pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    // As the warm figures: three runs (min / median / max), for this machine varies.
    let (seconds, repeats) = if s.quick { (2, 1) } else { (10, 3) };
    let mut http = Vec::new();
    for _ in 0..repeats {
        http.push(hello_floor(seconds)?);
    }
    report.add(ORDER, SECTION, HTTP_FLOOR, "req/s", http);

    // A user of its own: its sends stay out of the other parts' accounts.
    let user = pro_user(db, "floor").await?;
    let room = chatroom(db, user, "floor").await?;
    let script = std::env::temp_dir().join(format!("bench-floor-{}.sql", std::process::id()));
    std::fs::write(&script, SEND_AND_REPLY)?;
    let mut tps = Vec::new();
    for _ in 0..repeats {
        tps.push(pgbench(s, user, room, &script, seconds));
    }
    let _ = std::fs::remove_file(&script);
    let tps = tps.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    report.add(ORDER, SECTION, DB_FLOOR, "tx/s", tps);
    Ok(())
}

const HTTP_FLOOR: &str = "HTTP: hello-world axum route, wrk -c50: throughput";
const DB_FLOOR: &str = "PostgreSQL: a send and its reply's statements, pgbench -c 8";

/// Transactions per second of one pgbench run of the send-and-reply script.
fn pgbench(
    s: &Settings,
    user: uuid::Uuid,
    room: uuid::Uuid,
    script: &std::path::Path,
    seconds: u64,
) -> anyhow::Result<f64> {
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", "8", "-j", "2"])
        .args(["-T", &seconds.to_string()])
        .args(["-D", &format!("user_id={user}")])
        .args(["-D", &format!("room_id={room}")])
        .arg("-f")
        .arg(script)
        .arg(&s.database_url)
        .output()
        .context("pgbench (Debian: postgresql)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable pgbench output:\n{text}"))
}

/// req/s of a hello-world axum route on its own two-worker runtime (the local server's
/// shape), under the warm figures' load.
fn hello_floor(seconds: u64) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        })
    });
    let measured = wrk(&format!("http://{addr}/hello"), "floor", 50, seconds, None);
    let _ = stop.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the hello-world server panicked"))??;
    Ok(measured?.0)
}

/// Each route's throughput against its floor, from the figures of this run.
pub fn fractions(report: &mut Report) {
    let Some(http) = report.median(HTTP_FLOOR) else {
        return;
    };
    for route in ["GET /chatroom (cache hit)", "GET /chatroom/{id}"] {
        if let Some(rps) = report.median(&format!("{route}: throughput")) {
            report.add(
                ORDER,
                SECTION,
                &format!("{route} / HTTP floor"),
                "×",
                vec![rps / http],
            );
        }
    }
    let db = report.median(DB_FLOOR);
    let send = report.median("POST /chatroom/{id}/message (Pro, 50 chatrooms): throughput");
    if let (Some(db), Some(send)) = (db, send) {
        report.add(
            ORDER,
            SECTION,
            "POST /chatroom/{id}/message (Pro, 50 chatrooms) / database floor",
            "×",
            vec![send / db],
        );
    }
}
