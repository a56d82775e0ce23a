//! `make soak`: many users sending, reading and upgrading at once against a running local
//! server (with its in-process worker), then the invariants, printed with their counts.
//!
//! Env: SOAK_BASE (http://127.0.0.1:PORT), DATABASE_URL (the server's database),
//! STRIPE_WEBHOOK_SECRET (the server's), SOAK_USERS (40), SOAK_SECONDS (120).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_postgres::NoTls;

struct Counters {
    requests: AtomicU64,
    accepted: AtomicU64,
    limited: AtomicU64,
    server_errors: AtomicU64,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (599, Value::Null),
    }
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> u16 {
    match http.get(url).bearer_auth(token).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 599,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = env("SOAK_BASE", "http://127.0.0.1:55094");
    let users: usize = env("SOAK_USERS", "40").parse()?;
    let seconds: u64 = env("SOAK_SECONDS", "120").parse()?;
    let secret = env("STRIPE_WEBHOOK_SECRET", "whsec_soak");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let counters = Arc::new(Counters {
        requests: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        limited: AtomicU64::new(0),
        server_errors: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    println!("soak: {users} users for {seconds} s against {base}");

    let mut tasks = Vec::new();
    for i in 0..users {
        let (http, base, counters, secret) =
            (http.clone(), base.clone(), counters.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let email = format!("soak-{i}-{}@example.com", uuid::Uuid::new_v4().simple());
            let (_, signed) = post(&http, format!("{base}/auth/signup"), None, json!({ "email": email })).await;
            let user_id = signed["user"]["id"].as_str().unwrap_or_default().to_string();
            let (_, sent) = post(&http, format!("{base}/auth/send-otp"), None, json!({ "email": email })).await;
            let otp = sent["otp"].as_str().unwrap_or_default().to_string();
            let (_, tok) = post(&http, format!("{base}/auth/verify-otp"), None, json!({ "email": email, "otp": otp })).await;
            let token = tok["access_token"].as_str().unwrap_or_default().to_string();
            let (_, room) = post(&http, format!("{base}/chatroom"), Some(&token), json!({ "name": "soak" })).await;
            let room = room["chatroom"]["id"].as_str().unwrap_or_default().to_string();
            // Every fourth user upgrades part-way through, through a signed webhook.
            let upgrades = i % 4 == 0;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                if upgrades && n == 4 {
                    let now = chrono::Utc::now().timestamp();
                    let body = json!({ "id": format!("evt_soak_{i}"), "type": "customer.subscription.created", "created": now,
                        "data": { "object": { "id": format!("sub_soak_{i}"), "customer": format!("cus_soak_{i}"),
                            "status": "active", "metadata": { "user_id": user_id } } } })
                    .to_string();
                    let sig = shared::billing::webhook::sign(body.as_bytes(), &secret, now);
                    let status = http
                        .post(format!("{base}/webhook/stripe"))
                        .header("stripe-signature", sig)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(599);
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    if status >= 500 {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let (status, _) = post(&http, format!("{base}/chatroom/{room}/message"), Some(&token), json!({ "content": format!("message {n}") })).await;
                let reads = [get(&http, format!("{base}/chatroom"), &token).await, get(&http, format!("{base}/chatroom/{room}"), &token).await];
                counters.requests.fetch_add(3, Ordering::Relaxed);
                match status {
                    202 => counters.accepted.fetch_add(1, Ordering::Relaxed),
                    429 => counters.limited.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                let errors = std::iter::once(status).chain(reads).filter(|s| *s >= 500).count() as u64;
                counters.server_errors.fetch_add(errors, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }

    // Let the worker drain, then check the invariants in the database.
    let (db, conn) = tokio_postgres::connect(&env("DATABASE_URL", ""), NoTls).await?;
    tokio::spawn(conn);
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let pending = loop {
        let pending: i64 = db
            .query_one(
                "SELECT count(*) FROM messages WHERE status = 'pending'",
                &[],
            )
            .await?
            .get(0);
        if pending == 0 || Instant::now() > drain_deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)) }
    };
    let without_outcome = count(
        "SELECT count(*) FROM messages m WHERE m.role = 'user' AND NOT (
            (m.status IN ('answered', 'blocked') AND (SELECT count(*) FROM messages r WHERE r.reply_to = m.id) = 1)
            OR (m.status = 'failed' AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.reply_to = m.id)))",
    )
    .await?;
    let duplicate_replies = count(
        "SELECT count(*) FROM (SELECT reply_to FROM messages WHERE reply_to IS NOT NULL GROUP BY reply_to HAVING count(*) > 1) d",
    )
    .await?;
    let over_cap = count(
        "SELECT count(*) FROM (SELECT u.id FROM users u JOIN messages m ON m.user_id = u.id AND m.role = 'user'
            WHERE u.tier = 'basic' GROUP BY u.id HAVING count(*) > 5) o",
    )
    .await?;
    let pro_users = count("SELECT count(*) FROM users WHERE tier = 'pro'").await?;
    let c = &counters;
    println!("requests sent: {}", c.requests.load(Ordering::Relaxed));
    println!(
        "messages accepted (202): {}",
        c.accepted.load(Ordering::Relaxed)
    );
    println!(
        "sends refused by the daily cap (429): {}",
        c.limited.load(Ordering::Relaxed)
    );
    println!("users upgraded to Pro: {pro_users}");
    let violations = [
        ("messages still pending after the drain", pending),
        (
            "202 messages without exactly one reply or a terminal status",
            without_outcome,
        ),
        ("user messages with more than one reply", duplicate_replies),
        ("Basic users over their daily cap", over_cap),
        (
            "5xx responses",
            c.server_errors.load(Ordering::Relaxed) as i64,
        ),
    ];
    let mut total = 0;
    for (what, n) in violations {
        println!("invariant: {what}: {n}");
        total += n;
    }
    println!("violations: {total}");
    anyhow::ensure!(total == 0, "{total} invariant violations");
    Ok(())
}
