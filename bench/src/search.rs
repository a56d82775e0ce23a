//! Search latency (`GET /search`) as one user's messages grow: a rare word (in 10 of
//! them, found through the GIN index) and a common one (in 1 in 10, ranked among its
//! newest matches), p50 and p99 over HTTP. Growth must stay far below linear.

use std::time::Duration;

use crate::harness::{Settings, chatroom, pro_user, wrk};
use crate::report::Report;

/// One user's `n` messages over 100 chatrooms: every tenth says `kangaroo`, exactly ten
/// say `needle`, the rest is varied text.
async fn seed(db: &tokio_postgres::Client, user: uuid::Uuid, n: i64) -> anyhow::Result<()> {
    let mut rooms = Vec::new();
    for i in 0..100 {
        rooms.push(chatroom(db, user, &format!("search {i}")).await?);
    }
    db.execute(
        "INSERT INTO messages (id, chatroom_id, user_id, role, content, status) \
         SELECT gen_random_uuid(), ($1::uuid[])[1 + g % 100], $2, 'user', \
             'message ' || g || ' about ' || \
             (ARRAY['oslo','bergen','python','rust','kangaroo','weather','travel','music', \
                    'cooking','football'])[1 + g % 10] || \
             CASE WHEN g % ($3::bigint / 10) = 0 THEN ' needle' ELSE '' END || \
             ' topic' || (g % 1000) || ' tag' || g, 'answered' \
         FROM generate_series(1, $3::bigint) g",
        &[&rooms, &user, &n],
    )
    .await?;
    db.batch_execute("ANALYZE messages").await?;
    Ok(())
}

pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let sizes: &[i64] = if s.quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 1_000_000]
    };
    for &n in sizes {
        let user = pro_user(db, "search").await?;
        seed(db, user, n).await?;
        let token = s.token(user, Duration::from_secs(3600))?;
        for (label, word) in [
            ("rare word (10 matches)", "needle"),
            ("common word (1 in 10)", "kangaroo"),
        ] {
            let (_, p50, p99) = wrk(
                &format!("{}/search?q={word}", s.base),
                &token,
                1,
                if s.quick { 2 } else { 5 },
                None,
            )?;
            let figure = format!("GET /search, {label}, {n} messages");
            report.add(8, "search", &format!("{figure}: p50"), "ms", vec![p50]);
            report.add(8, "search", &format!("{figure}: p99"), "ms", vec![p99]);
        }
    }
    Ok(())
}
