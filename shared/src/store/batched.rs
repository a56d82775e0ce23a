//! Concurrent reads of one kind share one statement.
//!
//! Under load, dozens of requests wait for the same kind of read at the same moment, and
//! each as its own statement costs a PostgreSQL round trip and a backend wake-up: most of
//! a light route's cost. Here a read joins a queue, and up to [`BatchRead::FLUSHERS`]
//! flushers each take everything queued and answer it with one statement ([`BatchRead::read`]).
//!
//! No read is answered by a statement issued before it was queued (a flusher takes the
//! queue, then queries), so each still sees every change committed before its request
//! arrived: batching weakens no guarantee. No timer either: a lone read goes out at once.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use crate::error::{AppError, AppResult};

/// Where a row answers in its batch: the 0-based position of the key it was read for,
/// from the statement's `unnest(…) WITH ORDINALITY AS r(…, i)` column `i` (1-based).
pub fn position(row: &tokio_postgres::Row) -> usize {
    usize::try_from(row.get::<_, i64>("i") - 1).expect("ordinality starts at 1")
}

/// One kind of read that many requests can share a statement for.
pub trait BatchRead: Send + Sync + 'static {
    type Key: Send + Sync + 'static;
    type Value: Send + 'static;
    /// Reads per statement, so one statement's answer stays bounded.
    const MAX_BATCH: usize;
    /// Statements of this kind in flight at once. A batch forms while they are out; each
    /// more makes batches smaller, and costs PostgreSQL a statement's fixed cost again.
    const FLUSHERS: usize;
    /// What the reads of `keys` find, one answer per key and in their order.
    fn read(
        db: &deadpool_postgres::Client,
        keys: &[Self::Key],
    ) -> impl Future<Output = AppResult<Vec<Self::Value>>> + Send;
}

type Waiter<R> = oneshot::Sender<AppResult<<R as BatchRead>::Value>>;

pub struct Batched<R: BatchRead>(Arc<Mutex<Queue<R>>>);

struct Queue<R: BatchRead> {
    waiting: Vec<(R::Key, Waiter<R>)>,
    flushers: usize,
}

impl<R: BatchRead> Default for Batched<R> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Queue {
            waiting: Vec::new(),
            flushers: 0,
        })))
    }
}

impl<R: BatchRead> Clone for Batched<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: BatchRead> Batched<R> {
    /// What `key` reads, as of a statement issued after this call began.
    pub async fn read(&self, pool: &Pool, key: R::Key) -> AppResult<R::Value> {
        let (reply, answer) = oneshot::channel();
        let start_flusher = {
            let mut queue = self.lock();
            queue.waiting.push((key, reply));
            let start = queue.flushers < R::FLUSHERS;
            queue.flushers += usize::from(start);
            start
        };
        if start_flusher {
            // The slot's guard exists before the task does, so a task dropped unpolled
            // (its runtime shutting down) still gives the slot back.
            let running = Running(Some(self.clone()));
            // Spawned, so a client hanging up cannot drop a statement others wait on.
            tokio::spawn(self.clone().flush(pool.clone(), running));
        }
        answer.await.unwrap_or_else(|_| {
            Err(AppError::internal(anyhow::anyhow!(
                "a batched read was abandoned"
            )))
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue<R>> {
        // The lock guards plain pushes and takes: a panic cannot leave it half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn flush(self, pool: Pool, mut running: Running<R>) {
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    // Checked and given up under one lock, so no read is queued unseen.
                    queue.flushers -= 1;
                    running.0 = None;
                    return;
                }
                if queue.waiting.len() <= R::MAX_BATCH {
                    std::mem::take(&mut queue.waiting)
                } else {
                    queue.waiting.drain(..R::MAX_BATCH).collect()
                }
            };
            let (keys, replies): (Vec<R::Key>, Vec<Waiter<R>>) = batch.into_iter().unzip();
            match read::<R>(&pool, &keys).await {
                Ok(values) => {
                    for (reply, value) in replies.into_iter().zip(values) {
                        // A waiter that has gone (its client hung up) needs no answer.
                        let _ = reply.send(Ok(value));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(same_failure(&e)));
                    }
                }
            }
        }
    }
}

async fn read<R: BatchRead>(pool: &Pool, keys: &[R::Key]) -> AppResult<Vec<R::Value>> {
    let db = pool.get().await?;
    let values = R::read(&db, keys).await?;
    if values.len() != keys.len() {
        // A bug in `R::read`: fail every waiter rather than answer one with another's.
        return Err(AppError::internal(anyhow::anyhow!(
            "a batched read answered {} of {} keys",
            values.len(),
            keys.len()
        )));
    }
    Ok(values)
}

/// Each waiter gets the batch's failure as its own error, with the same status.
fn same_failure(e: &AppError) -> AppError {
    match e {
        AppError::DatabaseUnavailable => AppError::DatabaseUnavailable,
        other => AppError::internal(anyhow::anyhow!(crate::error::error_chain(other))),
    }
}

/// Gives the flusher's slot back if its task ends without doing so (dropped by a runtime
/// shutting down, or a panic), so later reads still start one. The last flusher to go
/// that way fails what is queued: no flusher would come for it.
struct Running<R: BatchRead>(Option<Batched<R>>);

impl<R: BatchRead> Drop for Running<R> {
    fn drop(&mut self) {
        if let Some(reads) = self.0.take() {
            let mut queue = reads.lock();
            queue.flushers -= 1;
            if queue.flushers == 0 {
                for (_, reply) in queue.waiting.drain(..) {
                    let _ = reply.send(Err(AppError::internal(anyhow::anyhow!(
                        "the flusher of a batched read stopped"
                    ))));
                }
            }
        }
    }
}
