//! The newest page of a chatroom, read in batches: what `GET /chatroom/{id}` answers
//! without a cursor, the detail's common case. Concurrent reads share one pair of
//! statements (the chatrooms, their pages) instead of a pair each; see `store::batched`
//! for why that keeps every read as fresh as its own statements would be.

use uuid::Uuid;

use super::chatrooms::{self, Chatroom};
use super::messages::{self, Message};
use crate::error::AppResult;
use crate::store::batched::{BatchRead, Batched};

/// Concurrent reads of chatrooms' newest pages.
pub type PageReads = Batched<NewestPages>;

pub struct NewestPages;

/// The newest `limit` messages of `chatroom`, if `user` owns it.
#[derive(Debug, Clone, Copy)]
pub struct PageKey {
    pub user: Uuid,
    pub chatroom: Uuid,
    pub limit: i64,
}

/// The chatroom, its messages oldest first, and whether older ones remain; `None` when
/// the user owns no such chatroom.
pub type NewestPage = Option<(Chatroom, Vec<Message>, bool)>;

impl BatchRead for NewestPages {
    type Key = PageKey;
    type Value = NewestPage;
    /// A page holds up to 100 messages of up to 4,000 characters.
    const MAX_BATCH: usize = 32;
    /// Two: a batch of up to 32 pages takes a while, and one statement in flight would
    /// cap the pages read per second at 32 per statement's time.
    const FLUSHERS: usize = 2;

    async fn read(db: &deadpool_postgres::Client, keys: &[PageKey]) -> AppResult<Vec<NewestPage>> {
        let owned: Vec<(Uuid, Uuid)> = keys.iter().map(|k| (k.chatroom, k.user)).collect();
        let wanted: Vec<(Uuid, i64)> = keys.iter().map(|k| (k.chatroom, k.limit)).collect();
        // Pipelined on the one connection: one round trip for both. A page read for a
        // chatroom the user does not own is dropped unseen, as in the unbatched route.
        let (rooms, pages) = tokio::try_join!(
            chatrooms::owned_each(db, &owned),
            messages::newest_pages(db, &wanted),
        )?;
        Ok(rooms
            .into_iter()
            .zip(pages)
            .map(|(room, (messages, more))| room.map(|room| (room, messages, more)))
            .collect())
    }
}
