//! Deleting a large chatroom: the cascade to its messages' idempotency keys.

use std::process::Command;

use anyhow::Context;

use crate::harness::{Fixture, Settings, chatroom};
use crate::report::Report;

/// `DELETE /chatroom/{id}` of a chatroom holding `messages` messages, each with its
/// idempotency key, among `keys` keys in the table: the cascade to `idempotency_keys`
/// must find each message's key by index, not by scanning the table once per message.
pub async fn run(
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
    let filler = chatroom(db, f.user, "filler").await?;
    db.execute(SEED, &[&filler, &f.user, &(keys - messages)])
        .await?;
    let mut times = Vec::new();
    for _ in 0..(if s.quick { 1 } else { 3 }) {
        let room = chatroom(db, f.user, "doomed").await?;
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
