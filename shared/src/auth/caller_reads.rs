//! Concurrent reads of callers' rows share one statement.
//!
//! Every authenticated request reads its caller's row, because that is where a
//! revocation or a downgrade takes effect at once. Under load, dozens of those reads
//! wait at the same moment, and each as its own statement costs a PostgreSQL round trip
//! and a backend wake-up: most of a light route's cost. Here a read joins a queue, and up
//! to [`FLUSHERS`] flushers each take everything queued and read it with one
//! `id = ANY($1)` statement.
//!
//! No read is answered by a statement issued before it was queued (a flusher takes the
//! queue, then queries), so each still sees every change committed before its request
//! arrived: batching weakens no guarantee. No timer either: a lone read goes out at once.
//! Only the local server batches; a Lambda container serves one request at a time and
//! reads its caller directly (`Services::callers` is `None` there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::users::{self, User};
use crate::error::{AppError, AppResult};

/// Statements in flight at once: enough that a batch forms while another is out, few
/// enough to leave the pool's other connections to the routes' own queries.
const FLUSHERS: usize = 2;
/// Reads per statement, so one statement's answer stays small.
const MAX_BATCH: usize = 256;

type Waiter = (Uuid, oneshot::Sender<AppResult<Option<User>>>);

#[derive(Clone, Default)]
pub struct CallerReads(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    flushers: usize,
}

impl CallerReads {
    /// The user's row as of a statement issued after this call began.
    pub async fn by_id(&self, pool: &Pool, id: Uuid) -> AppResult<Option<User>> {
        let (reply, answer) = oneshot::channel();
        let start_flusher = {
            let mut queue = self.lock();
            queue.waiting.push((id, reply));
            let start = queue.flushers < FLUSHERS;
            queue.flushers += usize::from(start);
            start
        };
        if start_flusher {
            // Spawned, so a client hanging up cannot drop a statement others wait on.
            tokio::spawn(self.clone().flush(pool.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(AppError::internal(anyhow::anyhow!(
                "a batched read of the caller was abandoned"
            )))
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock guards plain pushes and takes: a panic cannot leave it half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn flush(self, pool: Pool) {
        let mut running = Running(Some(self.clone()));
        loop {
            let batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    // Checked and given up under one lock, so no read is queued unseen.
                    queue.flushers -= 1;
                    running.0 = None;
                    return;
                }
                if queue.waiting.len() <= MAX_BATCH {
                    std::mem::take(&mut queue.waiting)
                } else {
                    queue.waiting.drain(..MAX_BATCH).collect()
                }
            };
            let mut ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            match read(&pool, &ids).await {
                Ok(rows) => {
                    let rows: HashMap<Uuid, User> = rows.into_iter().map(|u| (u.id, u)).collect();
                    for (id, reply) in batch {
                        // A waiter that has gone (its client hung up) needs no answer.
                        let _ = reply.send(Ok(rows.get(&id).cloned()));
                    }
                }
                Err(e) => {
                    for (_, reply) in batch {
                        let _ = reply.send(Err(same_failure(&e)));
                    }
                }
            }
        }
    }
}

async fn read(pool: &Pool, ids: &[Uuid]) -> AppResult<Vec<User>> {
    let db = pool.get().await?;
    users::by_ids(&db, ids).await
}

/// Each waiter gets the batch's failure as its own error, with the same status.
fn same_failure(e: &AppError) -> AppError {
    match e {
        AppError::DatabaseUnavailable => AppError::DatabaseUnavailable,
        other => AppError::internal(anyhow::anyhow!(crate::error::error_chain(other))),
    }
}

/// Gives the flusher's slot back if its task ends without doing so (its runtime shut
/// down mid-statement), so later reads still start one.
struct Running(Option<CallerReads>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(reads) = self.0.take() {
            reads.lock().flushers -= 1;
        }
    }
}
