//! Cost growth: reading a chatroom and building the model's request as its history grows,
//! and listing chatrooms for a user with a thousand of them.

use std::time::{Duration, Instant};

use crate::harness::{Fixture, Settings, chatroom, ms, pro_user, seed_messages, worker, wrk};
use crate::report::Report;

/// Chatrooms of growing history, then one user with 1,000 chatrooms.
pub async fn run(
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
    let worker = worker(s, "http://127.0.0.1:9")?;
    for &n in sizes {
        let room = chatroom(db, f.user, "growth").await?;
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
                .map_err(|e| anyhow::anyhow!(e))?
                .turns;
            build.push(ms(started.elapsed()));
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
    let user = pro_user(db, "many").await?;
    db.execute(
        "INSERT INTO chatrooms (id, user_id, name) SELECT gen_random_uuid(), $1, 'room ' || g FROM generate_series(1, 1000) g",
        &[&user],
    )
    .await?;
    let token = s.token(user, Duration::from_secs(3600))?;
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
        let db = worker.state.db().await?;
        let (rooms, more) = shared::chat::chatrooms::list(&db, user, None, 1000).await?;
        query.push(ms(started.elapsed()));
        anyhow::ensure!(rooms.len() == 1000 && !more);
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
