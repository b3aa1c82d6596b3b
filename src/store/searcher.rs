//! The searcher: the loaded search index and what it knows of the store's sessions (which
//! are searched, as of the last comparison), and its catch-up, which compares every session
//! with the index before a query and indexes what changed. A cold session the index covers as
//! it is stays cold (its entry read once, for whether it is archived); it is warmed only when
//! a query reads its messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::checkpoint::{Cold, ColdKeys};
use crate::error::Result;
use crate::health::Swallowed;
use crate::index::query::Collection;
use crate::index::SearchIndex;
use crate::projection::SessionView;

use super::{Inner, Slot};

/// The loaded index and what it knows of the store's sessions.
pub(super) struct Searcher {
    pub(super) index: SearchIndex,
    /// `Inner::changes` when every session was last compared with the index (`None`: never,
    /// or a session could not be read then).
    pub(super) scanned_at: Option<u64>,
    /// The sessions searched (live, not archived), as of that comparison.
    pub(super) searchable: HashMap<u64, Searchable>,
    /// The keys of the cold sessions among them, shared with the checkpoint open read: keys
    /// alone, which hold no file open. (Were the checkpoint kept here, its file would stay
    /// open after a checkpoint taken while the store runs replaced it, and after an erasure
    /// closed the files it knows of: the erased session's bytes would stay reachable.)
    cold_keys: Option<Arc<ColdKeys>>,
    /// What the comparisons read of each cold session's entry, by index: a session does not
    /// change while it is cold, so each is read once.
    cold_seen: Vec<Seen>,
    /// BM25's statistics over their messages, as of that comparison.
    pub(super) collection: Collection,
}

/// A searched session: its slot, or, while it is cold and the index covers it as it is, the
/// index of its entry (whose key is in the searcher's keys) and its last activity. A cold one
/// is warmed only when a query reads its messages. (It is a cold row until the next
/// comparison even if something warmed it meanwhile: warming changes no answer, and a write
/// to it brings the next comparison.)
pub(super) enum Searchable {
    Hot(Arc<Slot>),
    Cold { at: u32, activity: i64 },
}

/// What a catch-up read of a cold session's entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Unread,
    Archived,
    Searched,
}

impl Searcher {
    pub(super) fn new(index: SearchIndex) -> Searcher {
        Searcher {
            index,
            scanned_at: None,
            searchable: HashMap::new(),
            cold_keys: None,
            cold_seen: Vec::new(),
            collection: Collection {
                docs: 0,
                mean_length: 0.0,
            },
        }
    }

    /// Forgets which sessions are searched, and the cold ones' keys (an erasure's key among
    /// them): the next query compares every session again.
    pub(super) fn forget_scan(&mut self) {
        self.scanned_at = None;
        self.searchable = HashMap::new();
        self.cold_keys = None;
    }

    /// The key of searched session `id`.
    pub(super) fn key(&self, id: u64) -> Option<&str> {
        match self.searchable.get(&id)? {
            Searchable::Hot(slot) => Some(&slot.key),
            Searchable::Cold { at, .. } => self.cold_keys.as_deref()?.key(*at as usize),
        }
    }

    /// The last activity of searched session `id`, if it is still searched (live, not
    /// archived).
    pub(super) fn activity(&self, id: u64) -> Option<i64> {
        match self.searchable.get(&id)? {
            Searchable::Hot(slot) => {
                let view = slot.view.read();
                (view.is_live() && !view.archived).then_some(view.last_activity)
            }
            Searchable::Cold { activity, .. } => Some(*activity),
        }
    }
}

impl Inner {
    /// `f` of searched session `id`'s view: while it is cold, decoded from its entry in the
    /// store's checkpoint for this call alone; once warmed, or if its entry cannot be read
    /// again (an erasure closed the checkpoint's file), as the store holds it.
    pub(super) fn searched_view<T>(
        &self,
        searcher: &Searcher,
        id: u64,
        f: impl FnOnce(&SessionView) -> T,
    ) -> Option<T> {
        let key = match searcher.searchable.get(&id)? {
            Searchable::Hot(slot) => return Some(f(&slot.view.read())),
            Searchable::Cold { .. } => searcher.key(id)?,
        };
        let listed = self.sessions.read().listed(key);
        match listed? {
            // Warmed since: as its slot holds it (another session under the key: none).
            Ok(slot) => {
                let view = slot.view.read();
                (slot.session_id == id && view.is_live()).then(|| f(&view))
            }
            Err((cold, e)) => match cold.session(&e) {
                Ok(session) => (session.session_id == id).then(|| f(&session.view)),
                // Its entry cannot be read again: warmed (from its files, if need be).
                Err(_) => self.with_view(key, f),
            },
        }
    }

    /// Brings the index up to every session's last event: each session changed since it was
    /// indexed is indexed again, from the first message that changed.
    pub(super) fn catch_up(&self, searcher: &mut Searcher) -> Result<()> {
        self.catch_up_unless(searcher, || false)
    }

    /// [`Inner::catch_up`], giving up between two sessions once `stop` says so (the store is
    /// closing: the background's catch-up must not hold up a close); what was indexed stays,
    /// and the next catch-up compares every session again.
    pub(super) fn catch_up_unless(
        &self,
        searcher: &mut Searcher,
        stop: impl Fn() -> bool,
    ) -> Result<()> {
        let changes = self.changes.load(Ordering::SeqCst);
        if searcher.scanned_at == Some(changes) {
            return Ok(());
        }
        let seq = self.feed.next_seq().saturating_sub(1);
        let (mut slots, cold) = self.sessions.read().snapshot();
        let mut ids: HashSet<u64> = slots.iter().map(|s| s.session_id).collect();
        let mut complete = true;
        searcher.searchable.clear();
        searcher.cold_keys = None;
        if let Some((cold, indices)) = cold {
            // A cold session the index covers as it is stays cold; any other is warmed and
            // compared as a hot one below.
            let warm = self.scan_cold(searcher, &cold, &indices, &mut ids);
            for at in warm {
                match self.warmed(&cold, at) {
                    Ok(Some(slot)) => slots.push(slot),
                    Ok(None) => {}
                    Err(e) => {
                        let key = cold.key(at);
                        self.monitor.swallowed(Swallowed::Read, "indexing", key, &e);
                        complete = false;
                    }
                }
            }
        }
        for slot in slots {
            let (last_seq, live) = {
                let view = slot.view.read();
                if view.is_live() && !view.archived {
                    let searchable = Searchable::Hot(Arc::clone(&slot));
                    searcher.searchable.insert(slot.session_id, searchable);
                }
                (view.last_seq, view.is_live())
            };
            let index = &mut searcher.index;
            if index
                .coverage(slot.session_id)
                .is_some_and(|c| c.last_seq == last_seq)
            {
                continue;
            }
            if !live {
                index.touch(slot.session_id, last_seq);
                continue;
            }
            if stop() {
                complete = false;
                break;
            }
            let indexed = self.index_session(index, &slot);
            match self
                .monitor
                .note(Swallowed::Read, "indexing", Some(&slot.key), indexed)
            {
                Some(true) => self.monitor.indexed(),
                Some(false) => {}
                None => complete = false, // tried again at the next query
            }
            if !self.read_only && index.delta_full() {
                // What the index covers is made durable first: a crash must not take back a
                // location the saved index holds (a later write could reuse it). A failed
                // save leaves the index whole in memory; it is tried again later.
                let saved = self.flush().and_then(|()| index.save(&*self.fs));
                self.monitor.note(
                    Swallowed::Background,
                    "saving the search index",
                    None,
                    saved,
                );
            }
        }
        let index = &mut searcher.index;
        self.forget_gone(index, ids);
        index.set_covered_seq(seq);
        // BM25's statistics, over every message searched (a query's filters aside).
        let (mut docs, mut tokens) = (0u64, 0u64);
        for id in searcher.searchable.keys() {
            if let Some(cov) = index.coverage(*id) {
                docs += cov.positions.len() as u64;
                tokens += cov.tokens();
            }
        }
        searcher.collection = Collection {
            docs,
            mean_length: tokens as f32 / docs.max(1) as f32,
        };
        searcher.scanned_at = complete.then_some(changes);
        Ok(())
    }

    /// Puts the cold sessions `indices` of `cold` that the index covers as they are among the
    /// searched ones (unless archived: read from their entries the first time), and their ids
    /// in `ids`; returns the others, to be warmed and compared.
    fn scan_cold(
        &self,
        searcher: &mut Searcher,
        cold: &Arc<Cold>,
        indices: &[u32],
        ids: &mut HashSet<u64>,
    ) -> Vec<usize> {
        let seen = &mut searcher.cold_seen;
        seen.resize(cold.entries.len(), Seen::Unread);
        let unread = indices.iter().map(|&at| at as usize);
        let unread: Vec<usize> = unread.filter(|&at| seen[at] == Seen::Unread).collect();
        cold.each(unread, |at, read| {
            if let Ok(read) = read {
                seen[at] = match read.metadata() {
                    Some(_) => Seen::Searched,
                    None => Seen::Archived,
                };
            }
        });
        let mut warm = Vec::new();
        for &at in indices {
            let (at, Some(e)) = (at as usize, cold.entries.get(at as usize)) else {
                continue;
            };
            ids.insert(e.session_id);
            let covered =
                (searcher.index.coverage(e.session_id)).is_some_and(|c| c.last_seq == e.last_seq);
            match seen[at] {
                Seen::Searched if covered => {
                    let searchable = Searchable::Cold {
                        at: at as u32,
                        activity: e.last_activity,
                    };
                    searcher.searchable.insert(e.session_id, searchable);
                }
                Seen::Archived if covered => {}
                // Not covered as it is, or its entry unread (a warm read replays it).
                _ => warm.push(at),
            }
        }
        searcher.cold_keys = Some(Arc::clone(cold.keys()));
        warm
    }

    /// Forgets the sessions the index covers that are gone for good: neither among `ids` (the
    /// store's sessions) nor restorable. A deleted one that can still be restored is kept:
    /// were it forgotten, its next indexing would start its versions again, and its old docs
    /// (not yet merged away) would count as current.
    pub(super) fn forget_gone(&self, index: &mut SearchIndex, mut ids: HashSet<u64>) {
        ids.extend(self.tombstones.lock().slots().map(|s| s.session_id));
        for id in index.covered_sessions() {
            if !ids.contains(&id) {
                index.forget(id);
            }
        }
    }

    /// Indexes what changed of one session since the index last saw it; false when there was
    /// nothing to index (the session is gone or not live).
    fn index_session(&self, index: &mut SearchIndex, slot: &Arc<Slot>) -> Result<bool> {
        let Some(pinned) = self.slot(&slot.key)? else {
            return Ok(false);
        };
        if pinned.session_id != slot.session_id {
            return Ok(false); // replaced since the scan began: the next scan takes it
        }
        // What is read is copied under the view's lock, and read after it: a writer of the
        // session never waits for the index's reads. Records never change, so the copy is the
        // session as of `last_seq`.
        let copied = self.reading(&pinned, || {
            let view = pinned.view.read();
            if !view.is_live() {
                index.touch(slot.session_id, view.last_seq);
                return Ok(None);
            }
            let keep = index
                .coverage(slot.session_id)
                .map_or(0, |c| c.kept(&view.messages, view.last_seq));
            let locs = view.messages[keep..].to_vec();
            // Opened under the lock, so a compaction cannot remove the files first.
            let files = self.segment_files(&pinned, &locs)?;
            let tail = view.messages[view.messages.len().saturating_sub(2)..].to_vec();
            let name = view.name.clone().unwrap_or_default();
            Ok(Some((
                view.last_seq,
                keep,
                locs,
                view.messages.first().copied(),
                tail,
                name,
                files,
            )))
        })?;
        let Some((last_seq, keep, locs, first, tail, name, files)) = copied else {
            return Ok(false);
        };
        let meta = [slot.key.as_str(), name.as_str()];
        index.index_session(
            slot.session_id,
            last_seq,
            keep,
            &meta,
            (first, &tail),
            |add| {
                files.visit_messages(&locs, |_, _, _, content| {
                    add(content);
                    true
                })
            },
        )?;
        Ok(true)
    }
}
