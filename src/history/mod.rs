//! Reading the log back as events, for audit: [`crate::LogStore::events`] streams every event
//! in commit order, and [`crate::LogStore::load_at`] rebuilds a session as it was right after
//! a given event.
//!
//! A session's history is its segments in the folder plus, with `Options::keep_history`, the
//! ones compaction moved to `archive/`. Each session is read by a [`Cursor`] that
//! folds its records through the same [`SessionView::apply`] the store uses, so an event can
//! say what it replaced (the old message of an `update_last`) and `load_at` agrees with the
//! live store by construction. A cursor keeps no file open between reads and holds one read
//! buffer, so memory depends on the number of sessions and their live messages (24 bytes
//! each), never on the size of the log.

mod cursor;
mod events;
mod verify;

use std::path::Path;
use std::sync::Arc;

use crate::backend::{SessionMetadata, SessionState, TimestampedMessage};
use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::keyring::{self, Keyring};

use cursor::{history_key, readable_histories, Cursor};
pub use events::Events;

pub(crate) use verify::verify;
pub use verify::{Problem, VerifyReport};

/// A session as it was right after one event, from [`crate::LogStore::load_at`].
#[derive(Debug, Clone)]
pub struct SessionAt {
    /// The session's metadata then.
    pub metadata: SessionMetadata,
    /// Its state then.
    pub state: SessionState,
    /// Its messages then, with the times they were appended.
    pub messages: Vec<TimestampedMessage>,
}

/// The session `key` as it was right after event `seq`: `None` if it did not exist then.
pub(crate) fn load_at(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    key: &str,
    seq: u64,
    keys: Option<&Keyring>,
) -> Result<Option<SessionAt>> {
    let mut unavailable = None;
    for (id, segments) in readable_histories(&*fs, dir, keys)? {
        let data_key = keyring::data_key(keys, id).ok().flatten();
        if history_key(&*fs, &segments, data_key.as_deref()).as_deref() != Some(key) {
            continue;
        }
        let mut cursor = Cursor::new(Arc::clone(&fs), id, data_key, segments)?;
        let mut applied_any = false;
        while cursor.next_event(seq)?.is_some() {
            applied_any = true;
        }
        if cursor.restating || seq < cursor.available_from {
            // The session's state at `seq` was compacted away: find from where it is known.
            while cursor.restating && cursor.next_event(u64::MAX)?.is_some() {}
            unavailable = Some(cursor.available_from);
            continue;
        }
        if applied_any && cursor.view.is_live() {
            return Ok(Some(SessionAt {
                metadata: cursor.view.metadata(),
                state: cursor.view.session_state(),
                messages: cursor.messages()?,
            }));
        }
    }
    match unavailable {
        Some(available_from) => Err(Error::HistoryCompacted {
            key: key.to_owned(),
            available_from,
        }),
        None => Ok(None),
    }
}
