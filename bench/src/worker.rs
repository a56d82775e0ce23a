//! The reply worker: a batch of ten records against a fake Gemini at 300 ms, and the rate
//! at which it drains a queue of messages.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Fixture, Settings, ms, pending_messages, worker};
use crate::report::Report;

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

/// An SQS event carrying one record per message, as the event source mapping sends it.
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

/// Batches of ten through the reply function's own handler, then a queue drained by ten
/// batches at a time.
pub async fn run(
    s: &Settings,
    db: &tokio_postgres::Client,
    f: &Fixture,
    report: &mut Report,
) -> anyhow::Result<()> {
    let gemini = fake_gemini(Duration::from_millis(300)).await;
    let worker = worker(s, &gemini)?;
    let mut batch = Vec::new();
    for _ in 0..(if s.quick { 3 } else { 10 }) {
        let ids = pending_messages(db, f, 10).await?;
        let started = Instant::now();
        let response = reply_worker_fn::handle_batch(&worker, sqs_event(&ids)).await;
        batch.push(ms(started.elapsed()));
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
