//! Reads: messages from their segments, the activity index that `list_page` walks, and
//! per-session statistics.

use std::ops::{Bound, Range};
use std::sync::Arc;

use crate::backend::TimestampedMessage;
use crate::error::{Error, Result};
use crate::health::Swallowed;
use crate::layout;
use crate::listing::{self, ListQuery, Page, PAGE_LIMIT_DEFAULT};
use crate::location::MessageLoc;
use crate::message::ChatMessage;
use crate::projection::to_time;
use crate::projection::SessionView;
use crate::segment::SegmentFiles;

use super::activity::{ActivityIndex, Indexed};
use super::{Inner, LogStore, SessionStats, Slot};

impl LogStore {
    /// One page of the live sessions that `query` admits, most recent activity first (ties by
    /// key), with a cursor for the next page. The cost is that of the sessions returned and
    /// of those the filters skip on the way, not of every session: the store keeps its
    /// sessions ordered by activity. Pages are consistent as they go: a session whose
    /// activity changes between two pages moves to the front, so it may be seen twice or
    /// (if it moved past the cursor) not at all; a cursor never fails because of writes.
    /// [`Error::InvalidCursor`] for a cursor this store did not give.
    pub fn list_page(&self, query: &ListQuery) -> Result<Page> {
        let limit = if query.limit == 0 {
            PAGE_LIMIT_DEFAULT
        } else {
            query.limit
        };
        let cursor = (query.cursor.as_ref())
            .map(|cursor| {
                listing::decode_cursor(cursor).ok_or_else(|| Error::InvalidCursor {
                    cursor: cursor.clone(),
                })
            })
            .transpose()?;
        let start = match (&cursor, query.active_before) {
            (Some((at, key)), _) => Bound::Excluded((*at, key.as_str())),
            // Before `t`: from the most recent activity at `t` minus one microsecond.
            (None, Some(before)) => {
                Bound::Included((before.timestamp_micros().saturating_sub(1), ""))
            }
            (None, None) => Bound::Unbounded,
        };
        let since = query.active_since.map(|t| t.timestamp_micros());
        let before = query.active_before.map(|t| t.timestamp_micros());
        let activity = self.inner.activity_index()?;
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut last = None;
        let mut more = false;
        for (at, key, indexed) in activity.walk(start) {
            if since.is_some_and(|since| at < since) {
                break; // older than the window: so is everything after
            }
            if before.is_some_and(|before| at >= before) {
                continue;
            }
            let admitted = self.inner.indexed_view(&indexed, key, |view| {
                (view.is_live() && query.admits(view)).then(|| view.metadata())
            });
            let Some(Some(metadata)) = admitted else {
                continue;
            };
            if sessions.len() == limit {
                more = true;
                break;
            }
            sessions.push(metadata);
            last = Some((at, key.to_owned()));
        }
        let next = match (more, last) {
            (true, Some((at, key))) => Some(listing::encode_cursor(at, &key)),
            _ => None,
        };
        Ok(Page { sessions, next })
    }

    /// Every live session's size on disk, most recent activity first.
    pub fn stats(&self) -> Vec<SessionStats> {
        self.inner.live_views(|view| {
            Some(SessionStats {
                key: view.key.clone(),
                messages: view.message_count(),
                live_bytes: view.live_bytes,
                dead_bytes: view.dead_bytes(),
            })
        })
    }
}

/// A message read back with the time it was appended ([`Inner::read`]'s `make`).
pub(super) fn timestamped(
    loc: &MessageLoc,
    _: u64,
    role: &str,
    content: &str,
) -> TimestampedMessage {
    TimestampedMessage {
        message: ChatMessage::new(role, content),
        created_at: Some(to_time(loc.created_at)),
    }
}

/// A message read back ([`Inner::read`]'s `make`).
pub(super) fn message(_: &MessageLoc, _: u64, role: &str, content: &str) -> ChatMessage {
    ChatMessage::new(role, content)
}

impl Inner {
    /// The activity index, built from the live sessions if this is its first use.
    pub(super) fn activity_index(
        &self,
    ) -> Result<parking_lot::MappedMutexGuard<'_, ActivityIndex>> {
        let mut activity = self.activity.lock();
        if activity.as_ref().is_some_and(ActivityIndex::holds_cold)
            && !self.sessions.read().has_cold()
        {
            // Every session is warm: built again from the slots, so that the checkpoint's
            // entries it holds go.
            *activity = None;
        }
        Ok(parking_lot::MutexGuard::map(activity, |index| {
            // Built under the index's lock, so no write can move a session in between. A
            // cold session is in it by its entry, and stays cold.
            index.get_or_insert_with(|| {
                let sessions = self.sessions.read();
                let hot = sessions.slots().filter_map(|slot| {
                    let view = slot.view.read();
                    view.is_live()
                        .then(|| (view.last_activity, Arc::clone(slot)))
                });
                ActivityIndex::new(hot, sessions.cold_indices())
            })
        }))
    }

    /// `f` of the view of a session of the activity index: its slot's, or, for one indexed
    /// cold, its slot's if it was warmed since, or its entry's, read again for this call (or,
    /// if that fails, its slot's, warmed). `None` if it is gone, or cannot be warmed either
    /// (counted).
    pub(super) fn indexed_view<T>(
        &self,
        indexed: &Indexed<'_>,
        key: &str,
        f: impl FnOnce(&SessionView) -> T,
    ) -> Option<T> {
        let (cold, index) = match indexed {
            Indexed::Hot(slot) => return Some(f(&slot.view.read())),
            Indexed::Cold(cold, index) => (cold, *index),
        };
        let id = cold.entries.get(index)?.session_id;
        // The same session, warmed since or still cold; not another under its key since.
        let found = self.sessions.read().listed(key)?;
        match found {
            Ok(slot) => (slot.session_id == id).then(|| f(&slot.view.read())),
            Err((cold, e)) if e.session_id == id => match cold.session(&e) {
                Ok(session) => Some(f(&session.view)),
                // Warmed instead, from its files if need be (an erasure closed the file).
                Err(_) => match self.lookup(key) {
                    Ok(slot) => {
                        let slot = slot.filter(|slot| slot.session_id == id)?;
                        let view = slot.view.read();
                        view.is_live().then(|| f(&view))
                    }
                    Err(err) => {
                        let what = "listing a session from the checkpoint";
                        self.monitor
                            .swallowed(Swallowed::Read, what, Some(key), &err);
                        None
                    }
                },
            },
            Err(_) => None,
        }
    }

    /// Moves a session in the activity index from `before` to `after` (its last activity
    /// while live; `None` while not live).
    pub(super) fn reindex(&self, slot: &Arc<Slot>, before: Option<i64>, after: Option<i64>) {
        if let Some(activity) = self.activity.lock().as_mut() {
            activity.relist(slot, before, after);
        }
        // Not built yet: it will be built from the projections.
    }

    /// Opens the segments of `slot` that `locs` point into, with the session's data key in
    /// an encrypted store.
    pub(super) fn segment_files(&self, slot: &Slot, locs: &[MessageLoc]) -> Result<SegmentFiles> {
        let key = self.data_key(slot.session_id)?;
        SegmentFiles::open(&*self.fs, &self.dir, slot.session_id, locs, key)
    }

    /// The message at `loc` of a session whose writer lock the caller holds.
    pub(super) fn read_one(&self, slot: &Slot, loc: Option<MessageLoc>) -> Result<ChatMessage> {
        let loc = loc.ok_or_else(|| Error::Corrupt {
            path: self.dir.clone(),
            offset: 0,
            reason: "no last message to replace".into(),
        })?;
        let files = self.segment_files(slot, &[loc])?;
        let mut read = files.read_messages(&[loc])?;
        read.pop().map(|m| m.message).ok_or_else(|| Error::Corrupt {
            path: layout::segment_path(&self.dir, slot.session_id, loc.segment),
            offset: loc.offset(),
            reason: "message not found".into(),
        })
    }

    /// Reads the messages in `range(len)` of a live session, each as `make(loc, seq, role,
    /// content)` makes it from the bytes read.
    pub(super) fn read<T>(
        &self,
        key: &str,
        range: impl Fn(usize) -> Range<usize>,
        mut make: impl FnMut(&MessageLoc, u64, &str, &str) -> T,
    ) -> Result<Vec<T>> {
        let Some(slot) = self.slot(key)? else {
            return Ok(Vec::new());
        };
        self.reading(&slot, || {
            let (locs, files) = {
                let view = slot.view.read();
                if !view.is_live() {
                    return Ok(Vec::new());
                }
                let locs = view
                    .messages
                    .get(range(view.messages.len()))
                    .unwrap_or_default()
                    .to_vec();
                // Opened under the lock, so a compaction cannot remove the files first.
                let files = self.segment_files(&slot, &locs)?;
                (locs, files)
            };
            files.read_each(&locs, &mut make)
        })
    }
}
