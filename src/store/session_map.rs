//! The store's sessions by key. After an open from a checkpoint written at a clean close, a
//! live session stays cold until it is first asked for: its key and where its entry is in the
//! checkpoint's bytes, which open read and checked whole (`checkpoint::Cold`). Its first
//! lookup decodes it into a slot (warms it), with the claim the checkpoint made of its files,
//! which that first touch then checks (`first_touch.rs`). So open builds no slot, and a
//! listing reads the cold sessions' metadata from the bytes without building one either.
//!
//! Everything that walks every session's slot (an anchor, a checkpoint, a compaction's
//! planning, the search index's catch-up, replication) warms them all first
//! ([`Inner::every_slot`]): from then on the store is as an open that built every slot.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::backend::SessionMetadata;
use crate::checkpoint::{Claims, Cold, ColdEntry, ColdRead};
use crate::claim::Claim;
use crate::error::{Error, Result};
use crate::health::Swallowed;
use crate::projection::SessionView;
use crate::recovery::ReplayedSession;
use crate::segment;

use super::appender::Writer;
use super::{Inner, Slot};

/// A session as [`SessionMap::listed`] finds it: its slot, or, while it is cold, the
/// checkpoint it is in and where its entry is.
pub(super) type Listed = std::result::Result<Arc<Slot>, (Arc<Cold>, ColdEntry)>;

/// A session of the map: its slot, or the index of its entry among the cold ones.
enum Held {
    Hot(Arc<Slot>),
    Cold(usize),
}

/// The cold sessions' entries and what the checkpoint claims of their files.
struct ColdSessions {
    cold: Arc<Cold>,
    claims: Claims,
    /// Which of `cold`'s entries are still cold, in the checkpoint's order (newest first).
    still: Vec<bool>,
    /// How many are.
    left: usize,
}

/// The sessions by key (see the module's comment).
pub(super) struct SessionMap {
    held: HashMap<String, Held>,
    cold: Option<ColdSessions>,
}

/// What the map holds under a key, without warming it.
pub(super) enum Found<'a> {
    Missing,
    Hot(&'a Arc<Slot>),
    Cold,
}

impl SessionMap {
    /// The map of `hot` sessions, and of the sessions `cold` holds (with what `claims` claims
    /// of their files). A key both hold is the hot one's (a session replayed at open).
    pub(super) fn new(hot: HashMap<String, Arc<Slot>>, cold: Option<(Cold, Claims)>) -> Self {
        let extra = cold.as_ref().map_or(0, |(c, _)| c.entries.len());
        let mut held = HashMap::with_capacity(hot.len() + extra);
        held.extend(hot.into_iter().map(|(key, slot)| (key, Held::Hot(slot))));
        let cold = cold.map(|(mut cold, claims)| {
            let mut still = vec![false; cold.entries.len()];
            for (i, key) in cold.take_keys().into_iter().enumerate() {
                if let std::collections::hash_map::Entry::Vacant(v) = held.entry(key) {
                    v.insert(Held::Cold(i));
                    still[i] = true;
                }
            }
            ColdSessions {
                cold: Arc::new(cold),
                claims,
                left: still.iter().filter(|&&s| s).count(),
                still,
            }
        });
        SessionMap { held, cold }
    }

    /// How many sessions it holds, cold ones included.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// How many sessions are cold.
    pub(super) fn cold_count(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.left)
    }

    /// True while some session is cold.
    pub(super) fn has_cold(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| c.left > 0)
    }

    /// What it holds under `key`.
    pub(super) fn find(&self, key: &str) -> Found<'_> {
        match self.held.get(key) {
            None => Found::Missing,
            Some(Held::Hot(slot)) => Found::Hot(slot),
            Some(Held::Cold(_)) => Found::Cold,
        }
    }

    /// The slot under `key`, warmed if it was cold.
    pub(super) fn warm(&mut self, key: &str) -> Result<Option<Arc<Slot>>> {
        let at = match self.held.get(key) {
            None => return Ok(None),
            Some(Held::Hot(slot)) => return Ok(Some(Arc::clone(slot))),
            Some(Held::Cold(at)) => *at,
        };
        let slot = Arc::new(self.decode(at)?);
        self.held
            .insert(key.to_owned(), Held::Hot(Arc::clone(&slot)));
        self.one_less_cold(at);
        Ok(Some(slot))
    }

    /// Counts the cold session at `at` warmed or replaced: the checkpoint's bytes (and its
    /// file) go with the last one.
    fn one_less_cold(&mut self, at: usize) {
        if let Some(cold) = &mut self.cold {
            if let Some(still) = cold.still.get_mut(at) {
                *still = false;
            }
            cold.left = cold.left.saturating_sub(1);
            if cold.left == 0 {
                self.cold = None;
            }
        }
    }

    /// Decodes the cold session at `at` into a slot, with its claim.
    fn decode(&mut self, at: usize) -> Result<Slot> {
        let cold = self.cold.as_mut().ok_or_else(never_cold)?;
        let e = cold.cold.entries.get(at).copied().ok_or_else(never_cold)?;
        let session = cold.cold.session(&e)?;
        let claim = cold.claims.take(session.session_id);
        Ok(slot_from(session, claim))
    }

    /// Warms every cold session.
    pub(super) fn warm_all(&mut self) -> Result<()> {
        if !self.has_cold() {
            return Ok(());
        }
        let cold: Vec<(String, usize)> = self
            .held
            .iter()
            .filter_map(|(key, held)| match held {
                Held::Cold(at) => Some((key.clone(), *at)),
                Held::Hot(_) => None,
            })
            .collect();
        for (key, _) in cold {
            self.warm(&key)?;
        }
        Ok(())
    }

    /// The hot sessions' slots (every session's once [`SessionMap::warm_all`] ran).
    pub(super) fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.held.values().filter_map(|held| match held {
            Held::Hot(slot) => Some(slot),
            Held::Cold(_) => None,
        })
    }

    /// The entries of the sessions still cold, in the checkpoint's order (most recent
    /// activity first, as it was written).
    pub(super) fn cold_entries(&self) -> impl Iterator<Item = &ColdEntry> + '_ {
        self.cold.iter().flat_map(|c| {
            (c.cold.entries.iter().zip(&c.still)).filter_map(|(e, &still)| still.then_some(e))
        })
    }

    /// Each cold session's key and last activity.
    pub(super) fn cold_listed(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.held
            .iter()
            .filter_map(|(key, held)| match (held, &self.cold) {
                (Held::Cold(at), Some(c)) => {
                    Some((key.as_str(), c.cold.entries.get(*at)?.last_activity))
                }
                _ => None,
            })
    }

    /// The session under `key`: its slot, or, while it is cold, where its entry is.
    pub(super) fn listed(&self, key: &str) -> Option<Listed> {
        match (self.held.get(key)?, &self.cold) {
            (Held::Hot(slot), _) => Some(Ok(Arc::clone(slot))),
            (Held::Cold(at), Some(c)) => {
                Some(Err((Arc::clone(&c.cold), *c.cold.entries.get(*at)?)))
            }
            (Held::Cold(_), None) => None,
        }
    }

    /// The checkpoint's bytes the cold sessions are in, shared (a call may read them after
    /// letting go of the map: a session warmed meanwhile is read as it was at open).
    pub(super) fn cold(&self) -> Option<Arc<Cold>> {
        self.cold.as_ref().map(|c| Arc::clone(&c.cold))
    }

    /// The slot under `key`, warmed, or a new one from `make` if there is none.
    pub(super) fn get_or_insert(
        &mut self,
        key: &str,
        make: impl FnOnce() -> Slot,
    ) -> Result<Arc<Slot>> {
        if let Some(slot) = self.warm(key)? {
            return Ok(slot);
        }
        let slot = Arc::new(make());
        self.held
            .insert(key.to_owned(), Held::Hot(Arc::clone(&slot)));
        Ok(slot)
    }

    /// Puts `slot` under its key, in place of what was there.
    pub(super) fn insert(&mut self, slot: Arc<Slot>) {
        if let Some(Held::Cold(at)) = self.held.insert(slot.key.clone(), Held::Hot(slot)) {
            self.one_less_cold(at);
        }
    }

    /// Takes `slot` out if it is still the one its key names.
    pub(super) fn remove_if_same(&mut self, slot: &Arc<Slot>) {
        if matches!(self.held.get(&slot.key), Some(Held::Hot(s)) if Arc::ptr_eq(s, slot)) {
            self.held.remove(&slot.key);
        }
    }

    /// Every session's id, cold ones included.
    pub(super) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        let hot = self.slots().map(|slot| slot.session_id);
        hot.chain(self.cold_entries().map(|e| e.session_id))
    }
}

/// The slot of a session as open found it; `claim`: what the checkpoint claims of its files,
/// checked at its first read or write.
pub(super) fn slot_from(session: ReplayedSession, claim: Option<Claim>) -> Slot {
    Slot {
        session_id: session.session_id,
        key: session.view.key.clone(),
        claim: Mutex::new(claim.map(Box::new)),
        writer: Mutex::new(writer_from(&session)),
        view: RwLock::new(session.view),
        pins: AtomicUsize::new(0),
    }
}

/// The writer of a session as a replay (or the checkpoint) left it.
pub(super) fn writer_from(session: &ReplayedSession) -> Writer {
    let sealed = segment::is_sealed(session.newest_version);
    Writer {
        oldest: session.oldest,
        newest: session.newest,
        newest_len: session.newest_len,
        header_len: segment::header_len(&session.view.key, sealed),
        file: None,
        retired: false,
        listed: None,
        head: session.head,
        reclaimed: false,
        sealed: false,
        links_checked: false,
        newest_version: session.newest_version,
    }
}

/// The error of a cold session the map does not hold: a fault of the store's own code,
/// reported rather than served.
fn never_cold() -> Error {
    Error::Corrupt {
        path: crate::layout::CHECKPOINT_FILE.into(),
        offset: 0,
        reason: "a session the map holds as cold has no entry".into(),
    }
}

impl Inner {
    /// The session under `key`, as the projection holds it, its files unchecked (warmed if it
    /// was cold).
    pub(super) fn lookup(&self, key: &str) -> Result<Option<Arc<Slot>>> {
        {
            let sessions = self.sessions.read();
            match sessions.find(key) {
                Found::Missing => return Ok(None),
                Found::Hot(slot) => return Ok(Some(Arc::clone(slot))),
                Found::Cold => {}
            }
        }
        self.sessions.write().warm(key)
    }

    /// Every session's slot, the cold ones warmed first.
    pub(super) fn every_slot(&self) -> Result<Vec<Arc<Slot>>> {
        {
            let sessions = self.sessions.read();
            if !sessions.has_cold() {
                return Ok(sessions.slots().cloned().collect());
            }
        }
        let mut sessions = self.sessions.write();
        sessions.warm_all()?;
        Ok(sessions.slots().cloned().collect())
    }

    /// The slot under `key`, made (with the next session id) if there is none.
    pub(super) fn slot_or_new(&self, key: &str) -> Result<Arc<Slot>> {
        use std::sync::atomic::Ordering;
        self.sessions.write().get_or_insert(key, || Slot {
            session_id: self.next_id.fetch_add(1, Ordering::SeqCst),
            key: key.to_owned(),
            claim: Mutex::new(None),
            writer: Mutex::new(Writer::empty(key)),
            view: RwLock::new(SessionView::with_window(
                key,
                self.options.idempotency_window,
            )),
            pins: AtomicUsize::new(0),
        })
    }

    /// Every live session's view passed to `f`, most recent activity first, ties broken by
    /// key; a cold session's is decoded for the call alone, one at a time, and it stays cold.
    pub(super) fn live_views<T>(&self, mut f: impl FnMut(&SessionView) -> Option<T>) -> Vec<T> {
        self.live_rows(|seen| match seen {
            Seen::Hot(view) => f(view),
            Seen::Cold(read) => f(&read.session()?.view),
        })
    }

    /// The metadata of every live session not archived, in `live_views` order; a cold
    /// session's is read from its entry, and it stays cold.
    pub(super) fn live_metadata(&self) -> Vec<SessionMetadata> {
        self.live_rows(|seen| match seen {
            Seen::Hot(view) => (!view.archived).then(|| view.metadata()),
            Seen::Cold(read) => read.metadata(),
        })
    }

    /// `f` of every live session, most recent activity first, ties broken by key (`f` may be
    /// called in another order). The cold sessions are read again from the checkpoint in its
    /// order, in long reads; one that cannot be is left out, and counted in `health()`.
    fn live_rows<T>(&self, mut f: impl FnMut(Seen<'_>) -> Option<T>) -> Vec<T> {
        enum Row {
            Hot(Arc<Slot>),
            Cold(usize),
        }
        let (rows, cold) = {
            let sessions = self.sessions.read();
            let cold = sessions.cold();
            let mut rows: Vec<(i64, &str, Row)> = Vec::with_capacity(sessions.len());
            for (key, held) in &sessions.held {
                match held {
                    Held::Hot(slot) => {
                        let view = slot.view.read();
                        if view.is_live() {
                            rows.push((view.last_activity, key, Row::Hot(Arc::clone(slot))));
                        }
                    }
                    Held::Cold(at) => {
                        let e = cold.as_ref().and_then(|c| c.entries.get(*at));
                        if let Some(e) = e {
                            rows.push((e.last_activity, key, Row::Cold(*at)));
                        }
                    }
                }
            }
            rows.sort_unstable_by(|(a, ka, _), (b, kb, _)| b.cmp(a).then_with(|| ka.cmp(kb)));
            let rows: Vec<Row> = rows.into_iter().map(|(_, _, row)| row).collect();
            (rows, cold)
        };
        // Each row's answer, in place: the hot ones', then the cold ones' in the checkpoint's
        // order (long reads of it).
        let mut answers: Vec<Option<T>> = (rows.iter())
            .map(|r| match r {
                Row::Hot(slot) => {
                    let view = slot.view.read();
                    view.is_live().then(|| f(Seen::Hot(&view))).flatten()
                }
                Row::Cold(_) => None,
            })
            .collect();
        if let Some(cold) = &cold {
            let mut wanted: Vec<(usize, usize)> = (rows.iter().enumerate())
                .filter_map(|(row, r)| match r {
                    Row::Cold(at) => Some((*at, row)),
                    Row::Hot(_) => None,
                })
                .collect();
            wanted.sort_unstable();
            let order: Vec<usize> = wanted.iter().map(|(at, _)| *at).collect();
            let mut next = wanted.iter().map(|(_, row)| *row);
            cold.each(&order, |_, read| {
                let row = next.next();
                match read {
                    Ok(read) => {
                        if let Some(slot) = row.and_then(|row| answers.get_mut(row)) {
                            *slot = f(Seen::Cold(&read));
                        }
                    }
                    Err(e) => {
                        let what = "listing a session from the checkpoint";
                        self.monitor.swallowed(Swallowed::Read, what, None, &e);
                    }
                }
            });
        }
        // Collected in place (`filter_map` is, `flatten` is not): no second list of answers.
        #[allow(clippy::filter_map_identity)]
        answers.into_iter().filter_map(|answer| answer).collect()
    }
}

/// A live session as a listing sees it: its view, or its entry while it is cold.
enum Seen<'a> {
    Hot(&'a SessionView),
    Cold(&'a ColdRead<'a>),
}
