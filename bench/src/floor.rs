//! This machine's floors, measured in the same run as the figures they judge (its speed
//! varies between runs by up to 2.5×): the HTTP floor, a hello-world axum route under
//! the same `wrk` load as the list and detail routes; and the database floor, the
//! statements a send and its reply execute, driven by `pgbench` on the bench's
//! PostgreSQL. Each route's throughput is then printed as a fraction of its floor.
//! Beside the HTTP floor, the same server answers after the round trips a route cannot
//! do without (the list: the caller's row and the cached page; the detail: the caller's
//! row and the page's query), each a trivial query: what a route of that shape can reach
//! on this machine if each request makes its own round trips. And two bounds per route,
//! both answering the route's own body as the fixture user gets it: its ceiling, after
//! one Redis read (a route checks its caller against a shared store on every request,
//! so that is the least a request making its own round trip can do), and the body from
//! memory (no round trip at all: what requests sharing their round trips tend to).

use std::process::Command;

use anyhow::Context;

use crate::harness::{Fixture, Settings, chatroom, pro_user, wrk};
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
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    store_bodies(s, f).await?;
    // As the warm figures: three runs (min / median / max), for this machine varies.
    let (seconds, repeats) = if s.quick { (2, 1) } else { (10, 3) };
    // A user of its own: its sends stay out of the other parts' accounts.
    let user = pro_user(db, "floor").await?;
    let server = FloorServer::start(s, user)?;
    for (path, figure) in [
        ("/hello", HTTP_FLOOR),
        ("/redis", REDIS_SHAPE),
        ("/pg", PG_SHAPE),
        ("/pg-redis", LIST_SHAPE),
        ("/pg-pg", DETAIL_SHAPE),
        ("/list-body", LIST_CEILING),
        ("/detail-body", DETAIL_CEILING),
        ("/list-memory", LIST_BOUND),
        ("/detail-memory", DETAIL_BOUND),
    ] {
        let url = format!("http://{}{path}", server.addr);
        let mut rps = Vec::new();
        for _ in 0..repeats {
            rps.push(wrk(&url, "floor", 50, seconds, None)?.0);
        }
        report.add(ORDER, SECTION, figure, "req/s", rps);
    }
    server.stop()?;

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
const REDIS_SHAPE: &str = "HTTP + 1 Redis read (any route with one round trip)";
const PG_SHAPE: &str = "HTTP + 1 PostgreSQL read (GET /user/me's round trips)";
const LIST_SHAPE: &str = "HTTP + 1 PostgreSQL read + 1 Redis read (the list's round trips)";
const DETAIL_SHAPE: &str = "HTTP + 2 PostgreSQL reads (the detail's round trips)";
const LIST_CEILING: &str = "HTTP + 1 Redis read answering GET /chatroom's body";
const DETAIL_CEILING: &str = "HTTP + 1 Redis read answering GET /chatroom/{id}'s body";
const LIST_BOUND: &str = "HTTP answering GET /chatroom's body from memory";
const DETAIL_BOUND: &str = "HTTP answering GET /chatroom/{id}'s body from memory";
const LIST_BODY_KEY: &str = "bench:floor-list-body";
const DETAIL_BODY_KEY: &str = "bench:floor-detail-body";
const DB_FLOOR: &str = "PostgreSQL: a send and its reply's statements, pgbench -c 8";

/// Stores in Redis the bodies the list and the detail answer the fixture user (after the
/// warm part, its fifty chatrooms and its twenty messages), for the ceilings.
async fn store_bodies(s: &Settings, f: &Fixture) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut redis = redis::Client::open(s.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    for (key, path) in [
        (LIST_BODY_KEY, "/chatroom".to_string()),
        (DETAIL_BODY_KEY, format!("/chatroom/{}", f.chatroom)),
    ] {
        let body = http
            .get(format!("{}{path}", s.base))
            .bearer_auth(&f.token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        redis::cmd("SET")
            .arg(key)
            .arg(body)
            .query_async::<()>(&mut redis)
            .await?;
    }
    Ok(())
}

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

/// A hello-world axum server on its own two-worker runtime (the local server's shape),
/// started once for every floor: `/hello` answers at once, `/list-memory` and
/// `/detail-memory` with that route's body held in memory, `/redis` after reading a Redis
/// key (`/list-body` and `/detail-body`: the one holding that route's body); `/pg`,
/// `/pg-pg` and `/pg-redis` first read the floor user's row (a
/// prepared primary-key read, over eight connections as the server's pool) and, for
/// the last two, a second row or a Redis key. A failed read answers 500, which `wrk`
/// refuses, so a broken store can never pass for a fast one.
struct FloorServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

struct Stores {
    pg: Vec<(tokio_postgres::Client, tokio_postgres::Statement)>,
    next: std::sync::atomic::AtomicUsize,
    redis: redis::aio::MultiplexedConnection,
    user: uuid::Uuid,
    /// The list's and the detail's bodies, read once: the no-round-trip bounds.
    bodies: (axum::body::Bytes, axum::body::Bytes),
}

type Answer = Result<String, axum::http::StatusCode>;

impl Stores {
    async fn connect(
        database_url: &str,
        redis_url: &str,
        user: uuid::Uuid,
    ) -> anyhow::Result<Self> {
        let mut pg = Vec::new();
        for _ in 0..8 {
            let (client, conn) =
                tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let statement = client
                .prepare("SELECT email FROM users WHERE id = $1")
                .await?;
            pg.push((client, statement));
        }
        let mut redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let bodies = (
            body_of(&mut redis, LIST_BODY_KEY).await?,
            body_of(&mut redis, DETAIL_BODY_KEY).await?,
        );
        Ok(Self {
            pg,
            next: Default::default(),
            redis,
            user,
            bodies,
        })
    }

    async fn read_user(&self) -> Answer {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (client, statement) = &self.pg[turn % self.pg.len()];
        match client.query_opt(statement, &[&self.user]).await {
            Ok(Some(row)) => Ok(row.get(0)),
            _ => Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    async fn read_redis(&self) -> Answer {
        self.read_key("bench:floor").await
    }

    async fn read_key(&self, key: &str) -> Answer {
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut self.redis.clone())
            .await
            .map(Option::unwrap_or_default)
            .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A route's body, as `store_bodies` left it in Redis.
async fn body_of(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> anyhow::Result<axum::body::Bytes> {
    let body: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(redis).await?;
    Ok(body.context("the route's body is not in Redis")?.into())
}

impl FloorServer {
    fn start(s: &Settings, user: uuid::Uuid) -> anyhow::Result<Self> {
        use axum::routing::get;
        use std::sync::Arc;

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (database_url, redis_url) = (s.database_url.clone(), s.redis_url.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let stores = match Stores::connect(&database_url, &redis_url, user).await {
                    Ok(stores) => Arc::new(stores),
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = ready.send(Ok(()));
                let (a, b, c, d) = (
                    stores.clone(),
                    stores.clone(),
                    stores.clone(),
                    stores.clone(),
                );
                let (e, g) = (stores.clone(), stores.clone());
                let (list_body, detail_body) = stores.bodies.clone();
                let app = axum::Router::new()
                    .route("/hello", get(|| async { "hello" }))
                    .route(
                        "/list-body",
                        get(move || async move { e.read_key(LIST_BODY_KEY).await }),
                    )
                    .route("/list-memory", get(move || async move { list_body }))
                    .route("/detail-memory", get(move || async move { detail_body }))
                    .route(
                        "/detail-body",
                        get(move || async move { g.read_key(DETAIL_BODY_KEY).await }),
                    )
                    .route("/redis", get(move || async move { d.read_redis().await }))
                    .route("/pg", get(move || async move { a.read_user().await }))
                    .route(
                        "/pg-pg",
                        get(move || async move {
                            Ok::<_, axum::http::StatusCode>(
                                b.read_user().await? + &b.read_user().await?,
                            )
                        }),
                    )
                    .route(
                        "/pg-redis",
                        get(move || async move {
                            Ok::<_, axum::http::StatusCode>(
                                c.read_user().await? + &c.read_redis().await?,
                            )
                        }),
                    );
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await?;
                Ok(())
            })
        });
        let server = Self { addr, stop, thread };
        match is_ready.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                server.stop()?;
                Err(e.context("the floor server could not reach the stores"))
            }
            Err(_) => {
                server.stop()?;
                anyhow::bail!("the floor server stopped before it was ready")
            }
        }
    }

    fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the floor server panicked"))?
    }
}

/// Each route's throughput against its floor, from the figures of this run.
pub fn fractions(report: &mut Report) {
    let Some(http) = report.median(HTTP_FLOOR) else {
        return;
    };
    for (route, ceiling, bound) in [
        ("GET /chatroom (cache hit)", LIST_CEILING, LIST_BOUND),
        ("GET /chatroom/{id}", DETAIL_CEILING, DETAIL_BOUND),
    ] {
        let rps = report.median(&format!("{route}: throughput"));
        for (figure, name) in [
            (ceiling, "ceiling (1 Redis read + its body)"),
            (bound, "body from memory"),
        ] {
            let Some(floor) = report.median(figure) else {
                continue;
            };
            report.add(
                ORDER,
                SECTION,
                &format!("{route}'s {name} / HTTP floor"),
                "×",
                vec![floor / http],
            );
            if let Some(rps) = rps {
                report.add(
                    ORDER,
                    SECTION,
                    &format!("{route} / its {name}"),
                    "×",
                    vec![rps / floor],
                );
            }
        }
    }
    for (route, shape, shape_name) in [
        (
            "GET /chatroom (cache hit)",
            LIST_SHAPE,
            "HTTP + PostgreSQL + Redis",
        ),
        ("GET /chatroom/{id}", DETAIL_SHAPE, "HTTP + 2 PostgreSQL"),
        ("GET /user/me", PG_SHAPE, "HTTP + PostgreSQL"),
        ("GET /user/me (50 users)", PG_SHAPE, "HTTP + PostgreSQL"),
    ] {
        let Some(rps) = report.median(&format!("{route}: throughput")) else {
            continue;
        };
        report.add(
            ORDER,
            SECTION,
            &format!("{route} / HTTP floor"),
            "×",
            vec![rps / http],
        );
        if let Some(floor) = report.median(shape) {
            report.add(
                ORDER,
                SECTION,
                &format!("{route} / {shape_name} floor"),
                "×",
                vec![rps / floor],
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
