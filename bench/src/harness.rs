//! What the parts of the bench share: the settings bench/run.sh passes, the fixture user
//! and chatroom, rows seeded straight into PostgreSQL, load through `wrk`, and timing.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::AppState;
use shared::chat::worker::Worker;
use shared::clients::gemini::GeminiClient;
use shared::config::Config;
use uuid::Uuid;

/// The functions whose cold start is measured, as bench/run.sh lists them; the stream
/// function's package is only sized.
pub const FUNCTIONS: [&str; 6] = [
    "auth",
    "user",
    "chatroom",
    "subscription",
    "stripe-webhook",
    "reply-worker",
];

/// What bench/run.sh passes: the mode, the binaries, the local server and the services.
pub struct Settings {
    pub quick: bool,
    pub bin_dir: String,
    pub base: String,
    pub database_url: String,
    pub redis_url: String,
    pub jwt_secret: String,
    pub webhook_secret: String,
}

impl Settings {
    /// From the environment bench/run.sh sets.
    pub fn from_env(quick: bool) -> anyhow::Result<Self> {
        Ok(Self {
            quick,
            bin_dir: env("BENCH_BIN_DIR")?,
            base: env("BENCH_BASE")?,
            database_url: env("DATABASE_URL")?,
            redis_url: env("REDIS_URL")?,
            jwt_secret: env("JWT_SECRET_KEY")?,
            webhook_secret: env("STRIPE_WEBHOOK_SECRET")?,
        })
    }

    /// An access token for `user`, valid for `ttl`.
    pub fn token(&self, user: Uuid, ttl: Duration) -> anyhow::Result<String> {
        Ok(
            shared::auth::jwt::JwtKeys::new(self.jwt_secret.as_bytes(), ttl)
                .issue(user, 0)?
                .access_token,
        )
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is required (bench/run.sh sets it)"))
}

/// A reply worker of the bench's own (its own `AppState`), its model at `gemini_base`.
pub fn worker(s: &Settings, gemini_base: &str) -> anyhow::Result<Worker> {
    let state = AppState::new(config(s, gemini_base)?)?;
    let model = GeminiClient::new(&state.config.gemini)?;
    Ok(Worker {
        state,
        model: Arc::new(model),
    })
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

/// A Pro user with a token and one chatroom of 20 messages, made once per run.
pub struct Fixture {
    pub user: Uuid,
    pub token: String,
    pub chatroom: Uuid,
}

pub async fn fixture(s: &Settings, db: &tokio_postgres::Client) -> anyhow::Result<Fixture> {
    let user = Uuid::now_v7();
    db.execute(
        "INSERT INTO users (id, email, name, tier) VALUES ($1, $2, 'Bench', 'pro')",
        &[&user, &format!("bench-{}@example.com", user.simple())],
    )
    .await?;
    let room = chatroom(db, user, "bench").await?;
    seed_messages(db, user, room, 20).await?;
    Ok(Fixture {
        user,
        token: s.token(user, Duration::from_secs(86_400))?,
        chatroom: room,
    })
}

/// A new chatroom of `user`, with nothing in it.
pub async fn chatroom(db: &tokio_postgres::Client, user: Uuid, name: &str) -> anyhow::Result<Uuid> {
    let room = Uuid::now_v7();
    db.execute(
        "INSERT INTO chatrooms (id, user_id, name) VALUES ($1, $2, $3)",
        &[&room, &user, &name],
    )
    .await?;
    Ok(room)
}

/// A new Pro user with no chatrooms, its e-mail starting with `prefix`.
pub async fn pro_user(db: &tokio_postgres::Client, prefix: &str) -> anyhow::Result<Uuid> {
    let user = Uuid::now_v7();
    db.execute(
        "INSERT INTO users (id, email, tier) VALUES ($1, $2, 'pro')",
        &[&user, &format!("{prefix}-{}@example.com", user.simple())],
    )
    .await?;
    Ok(user)
}

/// `n` new chatrooms of `user`, with nothing in them.
pub async fn load_rooms(
    db: &tokio_postgres::Client,
    user: Uuid,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut rooms = Vec::with_capacity(n);
    for _ in 0..n {
        rooms.push(chatroom(db, user, "load").await?);
    }
    Ok(rooms)
}

/// `n` messages: answered user messages each followed by its reply, in one statement.
pub async fn seed_messages(
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

/// `n` user messages waiting for their replies, as a send leaves them for the worker.
pub async fn pending_messages(
    db: &tokio_postgres::Client,
    f: &Fixture,
    n: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        // Each in its own chatroom, as concurrent users would be.
        let room = chatroom(db, f.user, "w").await?;
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

/// A wrk script sending one message per request into a random one of `rooms`.
pub fn send_script(name: &str, rooms: &[Uuid]) -> anyhow::Result<std::path::PathBuf> {
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

/// A `wrk` script whose every request speaks for one of `tokens`, picked at random.
pub fn tokens_script(name: &str, tokens: &[String]) -> anyhow::Result<std::path::PathBuf> {
    let quoted: Vec<String> = tokens.iter().map(|t| format!("\"Bearer {t}\"")).collect();
    let script = std::env::temp_dir().join(name);
    std::fs::write(
        &script,
        format!(
            "local tokens = {{{}}}\n\
             request = function() return wrk.format(nil, nil, {{[\"Authorization\"] = tokens[math.random(#tokens)]}}) end\n",
            quoted.join(", ")
        ),
    )?;
    Ok(script)
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

/// `wrk` with `connections` connections for `seconds` s as the holder of `token`, with a
/// Lua `script` if given: (requests/s, p50 ms, p99 ms). Any non-2xx answer is an error.
pub fn wrk(
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

/// A duration in milliseconds, as the figures are.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
