//! The store's sessions by key. After an open from a checkpoint written at a clean close, a
//! live session stays cold until it is first asked for: its key and where its entry is in the
//! checkpoint's bytes, which open read and checked whole (`checkpoint::Cold`). Its first
//! lookup decodes it into a slot (warms it), with the claim the checkpoint made of its files,
//! which that first touch then checks (`first_touch.rs`). So open builds no slot, and a
//! listing reads the cold sessions' metadata from the bytes without building one either. A
//! session whose entry cannot be read again is warmed from its files instead, if they are as
//! the checkpoint claims them ([`Inner::replay_cold`]).
//!
//! What must walk every session's slot (`verify`, an erasure) warms them all first
//! ([`Inner::every_slot`], [`Inner::warm_every`]): from then on the store is as an open that
//! built every slot. The rest read a cold session's entry and leave it cold: a checkpoint
//! records it from its entry, decoded for it alone ([`Inner::cold_to_record`]); the anchor,
//! the search index's catch-up and replication's capture take what they need of it there.

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

/// How many cold sessions [`Inner::warm_every`] warms under one hold of the map's lock.
const WARM_BATCH: usize = 1024;

/// Cold sessions: their checkpoint's entries and the indices of some among them.
pub(super) type ColdIndices = (Arc<Cold>, Vec<u32>);

/// The cold sessions' entries and what the checkpoint claims of their files.
struct ColdSessions {
    /// Their entries, keys and index by key.
    cold: Arc<Cold>,
    claims: Claims,
    /// Which of `cold`'s entries are still cold, in the checkpoint's order (newest first).
    still: Vec<bool>,
    /// How many are.
    left: usize,
}

impl ColdSessions {
    /// True while the session at `at` is cold.
    fn is_cold(&self, at: usize) -> bool {
        self.still.get(at).copied().unwrap_or(false)
    }
}

/// The sessions by key (see the module's comment): the hot ones in a map of their own, the
/// cold ones in their checkpoint's index by key (a session warmed there stays in that index,
/// marked no longer cold).
pub(super) struct SessionMap {
    hot: HashMap<String, Arc<Slot>>,
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
        let cold = cold.map(|(mut cold, claims)| {
            cold.opened();
            let mut still = vec![true; cold.entries.len()];
            for key in hot.keys() {
                if let Some(i) = cold.find_key(key) {
                    still[i] = false;
                }
            }
            ColdSessions {
                cold: Arc::new(cold),
                claims,
                left: still.iter().filter(|&&s| s).count(),
                still,
            }
        });
        SessionMap { hot, cold }
    }

    /// How many sessions it holds, cold ones included.
    pub(super) fn len(&self) -> usize {
        self.hot.len() + self.cold_count()
    }

    /// How many sessions are cold.
    pub(super) fn cold_count(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.left)
    }

    /// True while some session is cold.
    pub(super) fn has_cold(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| c.left > 0)
    }

    /// The index of the entry of `key`'s session while it is cold.
    fn cold_index(&self, key: &str) -> Option<usize> {
        let c = self.cold.as_ref()?;
        (c.cold.find_key(key)).filter(|&i| c.is_cold(i))
    }

    /// What it holds under `key`.
    pub(super) fn find(&self, key: &str) -> Found<'_> {
        match self.hot.get(key) {
            Some(slot) => Found::Hot(slot),
            None if self.cold_index(key).is_some() => Found::Cold,
            None => Found::Missing,
        }
    }

    /// The slot under `key`, warmed if it was cold.
    pub(super) fn warm(&mut self, key: &str) -> Result<Option<Arc<Slot>>> {
        if let Some(slot) = self.hot.get(key) {
            return Ok(Some(Arc::clone(slot)));
        }
        match self.cold_index(key) {
            Some(at) => self.warm_at(at).map(Some),
            None => Ok(None),
        }
    }

    /// Warms the cold session at `at`.
    fn warm_at(&mut self, at: usize) -> Result<Arc<Slot>> {
        let cold = self.cold.as_ref().ok_or_else(never_cold)?;
        let e = cold.cold.entries.get(at).ok_or_else(never_cold)?;
        let session = cold.cold.session(e)?;
        self.warm_decoded(at, session)?.ok_or_else(never_cold)
    }

    /// Warms the cold session at `at` with `session`, its entry as read again (perhaps
    /// without the map's lock, from the checkpoint it was cold in then), with its claim;
    /// `None` if it is no longer cold. Fails if the entry holds another session than the one
    /// open read there.
    fn warm_decoded(&mut self, at: usize, session: ReplayedSession) -> Result<Option<Arc<Slot>>> {
        let Some(cold) = self.cold.as_mut().filter(|c| c.is_cold(at)) else {
            return Ok(None);
        };
        let e = *cold.cold.entries.get(at).ok_or_else(never_cold)?;
        let key = cold.cold.key(at).unwrap_or_default();
        if (session.session_id, session.view.key.as_str()) != (e.session_id, key) {
            return Err(cold.cold.changed(&e));
        }
        let claim = cold.claims.take(session.session_id);
        let slot = Arc::new(slot_from(session, claim));
        self.hot.insert(slot.key.clone(), Arc::clone(&slot));
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

    /// Puts `slot`, the session cold under its key replayed from its files, in the map in
    /// place of its entry, if it is still cold; returns the slot its key now names if that is
    /// the same session (warmed meanwhile, or `slot`).
    pub(super) fn warm_with(&mut self, slot: Slot) -> Option<Arc<Slot>> {
        match self.cold_index(&slot.key) {
            Some(at)
                if self
                    .cold_copy(at)
                    .is_some_and(|(e, _)| e.session_id == slot.session_id) =>
            {
                if let Some(c) = &mut self.cold {
                    c.claims.take(slot.session_id);
                }
                let slot = Arc::new(slot);
                self.hot.insert(slot.key.clone(), Arc::clone(&slot));
                self.one_less_cold(at);
                Some(slot)
            }
            _ => (self.hot.get(&slot.key))
                .filter(|s| s.session_id == slot.session_id)
                .cloned(),
        }
    }

    /// The hot sessions' slots (every session's once [`Inner::warm_every`] ran).
    pub(super) fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.hot.values()
    }

    /// The indices of the sessions still cold, in the checkpoint's order (newest first), and
    /// the checkpoint they are in.
    pub(super) fn cold_indices(&self) -> Option<(&Arc<Cold>, impl Iterator<Item = usize> + '_)> {
        let c = self.cold.as_ref()?;
        let still = (c.still.iter().enumerate()).filter_map(|(i, &still)| still.then_some(i));
        Some((&c.cold, still))
    }

    /// The hot sessions' slots and the indices of the cold ones, at one moment: each session
    /// is in one of the two.
    pub(super) fn snapshot(&self) -> (Vec<Arc<Slot>>, Option<ColdIndices>) {
        (self.hot.values().cloned().collect(), self.cold_snapshot())
    }

    /// The indices of the sessions still cold, and the checkpoint they are in.
    fn cold_snapshot(&self) -> Option<ColdIndices> {
        (self.cold_indices())
            .map(|(cold, still)| (Arc::clone(cold), still.map(|i| i as u32).collect()))
    }

    /// Moves the sessions still cold, if they are those of `from`, to the checkpoint in `file`
    /// ([`Cold::moved_to`]): only if `placed` holds each one's new entry. True if moved.
    pub(super) fn move_cold(
        &mut self,
        from: &Arc<Cold>,
        file: &Arc<crate::parked::BlockFile>,
        body_at: u64,
        section_len: u64,
        placed: &[(u32, ColdEntry)],
    ) -> bool {
        let Some(c) = &mut self.cold else {
            return false;
        };
        if !Arc::ptr_eq(&c.cold, from) {
            return false;
        }
        // (A checkpoint records each session once: no index is in `placed` twice.)
        let placed_cold = (placed.iter())
            .filter(|(i, _)| c.is_cold(*i as usize))
            .count();
        if placed_cold == 0 || placed_cold != c.left {
            return false;
        }
        let version = crate::checkpoint::VERSION_WRITTEN;
        c.cold = Arc::new(c.cold.moved_to(file, version, body_at, section_len, placed));
        true
    }

    /// The entry of the cold session under `key` and a copy of its claim, while it is cold.
    pub(super) fn cold_under(&self, key: &str) -> Option<(ColdEntry, Option<Claim>)> {
        self.cold_copy(self.cold_index(key)?)
    }

    /// The entry of the session at `at` and a copy of its claim, while it is cold.
    pub(super) fn cold_copy(&self, at: usize) -> Option<(ColdEntry, Option<Claim>)> {
        let c = self.cold.as_ref().filter(|c| c.is_cold(at))?;
        let e = *c.cold.entries.get(at)?;
        Some((e, c.claims.peek(e.session_id)))
    }

    /// The entries of the sessions still cold, in the checkpoint's order (newest first).
    pub(super) fn cold_entries(&self) -> impl Iterator<Item = &ColdEntry> + '_ {
        self.cold.iter().flat_map(|c| {
            (c.cold.entries.iter().zip(&c.still)).filter_map(|(e, &still)| still.then_some(e))
        })
    }

    /// The session under `key`: its slot, or, while it is cold, where its entry is.
    pub(super) fn listed(&self, key: &str) -> Option<Listed> {
        if let Some(slot) = self.hot.get(key) {
            return Some(Ok(Arc::clone(slot)));
        }
        let at = self.cold_index(key)?;
        let c = self.cold.as_ref()?;
        Some(Err((Arc::clone(&c.cold), *c.cold.entries.get(at)?)))
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
        self.hot.insert(key.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    /// Puts `slot` under its key, in place of what was there.
    pub(super) fn insert(&mut self, slot: Arc<Slot>) {
        let cold = self.cold_index(&slot.key);
        self.hot.insert(slot.key.clone(), slot);
        if let Some(at) = cold {
            self.one_less_cold(at);
        }
    }

    /// Takes `slot` out if it is still the one its key names.
    pub(super) fn remove_if_same(&mut self, slot: &Arc<Slot>) {
        if self
            .hot
            .get(&slot.key)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            self.hot.remove(&slot.key);
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
    let mut writer = writer_from(&session);
    if claim.is_some() {
        // As the checkpoint holds it (until its files are found changed, and it is replayed).
        writer.recorded = Some(writer.tail());
    }
    Slot {
        session_id: session.session_id,
        key: session.view.key.clone(),
        claim: Mutex::new(claim.map(Box::new)),
        writer: Mutex::new(writer),
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
        recorded: None,
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
        let warmed = self.sessions.write().warm(key);
        match warmed {
            Ok(found) => Ok(found),
            // Its entry cannot be read again: from its files, if they are as claimed.
            Err(failed) => self.replay_cold(key, failed),
        }
    }

    /// Every session's slot, the cold ones warmed first (from their files where their entry
    /// cannot be read again); fails if one cannot be warmed either way.
    pub(super) fn every_slot(&self) -> Result<Vec<Arc<Slot>>> {
        let (slots, failed) = self.warm_every();
        match failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(slots),
        }
    }

    /// The slots of every session that is or can be warmed (see [`Inner::every_slot`]), and
    /// the key of each one that cannot, with why: it stays cold.
    pub(super) fn warm_every(&self) -> (Vec<Arc<Slot>>, Vec<(String, Error)>) {
        {
            let sessions = self.sessions.read();
            if !sessions.has_cold() {
                return (sessions.slots().cloned().collect(), Vec::new());
            }
        }
        // Read again and decoded a batch at a time without the map's lock, then put in place
        // under it: a lookup meanwhile waits for one batch's inserts at most.
        let mut unread = Vec::new();
        let cold = self.sessions.read().cold_snapshot();
        if let Some((cold, indices)) = cold {
            for batch in indices.chunks(WARM_BATCH) {
                let decoded: Vec<(usize, Result<ReplayedSession>)> = (batch.iter())
                    .map(|&at| {
                        let e = cold.entries.get(at as usize).ok_or_else(never_cold);
                        (at as usize, e.and_then(|e| cold.session(e)))
                    })
                    .collect();
                let mut sessions = self.sessions.write();
                for (at, session) in decoded {
                    if let Err(e) = session.and_then(|s| sessions.warm_decoded(at, s)) {
                        unread.push((cold.key(at).unwrap_or_default().to_owned(), e));
                    }
                }
            }
        }
        // The replays of those whose entries cannot be read run without the map's lock too.
        let failed: Vec<(String, Error)> = (unread.into_iter())
            .filter_map(|(key, e)| self.replay_cold(&key, e).err().map(|e| (key, e)))
            .collect();
        let slots = self.sessions.read().slots().cloned().collect();
        // The activity index lets go of the checkpoint's entries too (it is built again from
        // the slots at the next page): an erasure, which warms every session first, then
        // closes the file they were read from.
        self.activity.lock().take();
        (slots, failed)
    }

    /// What a checkpoint records of the session at `at` of `cold`, cold when it began: a slot
    /// decoded from its entry for the checkpoint alone if it is still cold (`false`: it stays
    /// cold, and nothing else holds that slot), with a copy of its claim; its slot if it was
    /// warmed since (`true`); `None` if it went since.
    pub(super) fn cold_to_record(
        &self,
        cold: &Cold,
        at: usize,
    ) -> Result<Option<(Arc<Slot>, bool)>> {
        let copy = self.sessions.read().cold_copy(at);
        if let Some((e, claim)) = copy {
            // An entry that cannot be read again is warmed (from its files) below.
            if let Ok(session) = cold.session(&e) {
                return Ok(Some((Arc::new(slot_from(session, claim)), false)));
            }
        }
        Ok(self.warmed(cold, at)?.map(|slot| (slot, true)))
    }

    /// The slot of the session at `at` of `cold`, warmed if it is still cold; `None` if it
    /// went (another session may hold its key since).
    pub(super) fn warmed(&self, cold: &Cold, at: usize) -> Result<Option<Arc<Slot>>> {
        let (Some(key), Some(e)) = (cold.key(at), cold.entries.get(at)) else {
            return Ok(None);
        };
        let slot = self.lookup(key)?;
        Ok(slot.filter(|slot| slot.session_id == e.session_id))
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
    /// A session that cannot be read is left out, and counted in `health()`.
    pub(super) fn live_views<T>(&self, f: impl FnMut(&SessionView) -> Option<T>) -> Vec<T> {
        self.counted(self.each_live_view(f))
    }

    /// [`Inner::live_views`], and each session that could not be read (left out), with why.
    pub(super) fn each_live_view<T>(
        &self,
        mut f: impl FnMut(&SessionView) -> Option<T>,
    ) -> (Vec<T>, Vec<(String, Error)>) {
        self.live_rows(|seen| match seen {
            Seen::Hot(view) => f(view),
            Seen::Cold(read) => f(&read.session()?.view),
        })
    }

    /// The metadata of every live session not archived, in `live_views` order; a cold
    /// session's is read from its entry, and it stays cold. A session that cannot be read is
    /// left out, and counted in `health()`.
    pub(super) fn live_metadata(&self) -> Vec<SessionMetadata> {
        self.counted(self.live_rows(|seen| match seen {
            Seen::Hot(view) => (!view.archived).then(|| view.metadata()),
            Seen::Cold(read) => read.metadata(),
        }))
    }

    /// The rows of a listing, each session left out of it counted in `health()`.
    fn counted<T>(&self, (rows, unread): (Vec<T>, Vec<(String, Error)>)) -> Vec<T> {
        for (key, e) in unread {
            let what = "listing a session from the checkpoint";
            self.monitor
                .swallowed(Swallowed::Read, what, Some(&key), &e);
        }
        rows
    }

    /// `f` of every live session, most recent activity first, ties broken by key (`f` may be
    /// called in another order), and each session left out, with why. The cold sessions are
    /// read again from the checkpoint in its order, in long reads; one that cannot be is
    /// warmed (`Inner::lookup`), or, if that fails too, left out.
    fn live_rows<T>(
        &self,
        mut f: impl FnMut(Seen<'_>) -> Option<T>,
    ) -> (Vec<T>, Vec<(String, Error)>) {
        /// A row: the index of a hot session's slot in `hot`, or of a cold one's entry.
        #[derive(Clone, Copy)]
        enum Row {
            Hot(u32),
            Cold(u32),
        }
        // Each live session as (last activity, row), sorted: 16 bytes a session while the
        // listing runs, its key looked up only to break a tie.
        let (hot, rows, cold) = {
            let sessions = self.sessions.read();
            let cold = sessions.cold();
            let mut hot: Vec<Arc<Slot>> = Vec::new();
            let mut rows: Vec<(i64, Row)> = Vec::with_capacity(sessions.len());
            for slot in sessions.hot.values() {
                let view = slot.view.read();
                if view.is_live() {
                    rows.push((view.last_activity, Row::Hot(hot.len() as u32)));
                    hot.push(Arc::clone(slot));
                }
            }
            if let Some((cold, indices)) = sessions.cold_indices() {
                for at in indices {
                    if let Some(e) = cold.entries.get(at) {
                        rows.push((e.last_activity, Row::Cold(at as u32)));
                    }
                }
            }
            let key = |row: &Row| match *row {
                Row::Hot(i) => hot.get(i as usize).map_or("", |slot| slot.key.as_str()),
                Row::Cold(i) => (cold.as_deref())
                    .and_then(|c| c.key(i as usize))
                    .unwrap_or_default(),
            };
            rows.sort_unstable_by(|(a, ra), (b, rb)| b.cmp(a).then_with(|| key(ra).cmp(key(rb))));
            (hot, rows, cold)
        };
        // Each row's answer, in place: the hot ones', then the cold ones' in the checkpoint's
        // order (long reads of it).
        let mut answers: Vec<Option<T>> = (rows.iter())
            .map(|(_, row)| match *row {
                Row::Hot(i) => {
                    let view = hot.get(i as usize)?.view.read();
                    view.is_live().then(|| f(Seen::Hot(&view))).flatten()
                }
                Row::Cold(_) => None,
            })
            .collect();
        drop(hot);
        let mut unread = Vec::new();
        if let Some(cold) = &cold {
            // (entry, row) of each cold row, in the entries' order.
            let mut wanted: Vec<(u32, u32)> = (rows.iter().enumerate())
                .filter_map(|(row, (_, r))| match *r {
                    Row::Cold(at) => Some((at, row as u32)),
                    Row::Hot(_) => None,
                })
                .collect();
            drop(rows);
            wanted.sort_unstable();
            let mut next = wanted.iter().map(|&(_, row)| row as usize);
            cold.each(wanted.iter().map(|&(at, _)| at as usize), |at, read| {
                let Some(answer) = next.next().and_then(|row| answers.get_mut(row)) else {
                    return;
                };
                match read {
                    Ok(read) => *answer = f(Seen::Cold(&read)),
                    // Its entry cannot be read again (an erasure closed the file since, say):
                    // the session is warmed, from its files if need be, and listed as it is.
                    Err(_) => match self.warmed(cold, at) {
                        Ok(Some(slot)) => {
                            let view = slot.view.read();
                            *answer = view.is_live().then(|| f(Seen::Hot(&view))).flatten();
                        }
                        Ok(None) => {}
                        Err(e) => unread.push((cold.key(at).unwrap_or_default().to_owned(), e)),
                    },
                }
            });
        }
        // Collected in place (`filter_map` is, `flatten` is not): no second list of answers.
        #[allow(clippy::filter_map_identity)]
        let rows = answers.into_iter().filter_map(|answer| answer).collect();
        (rows, unread)
    }
}

/// A live session as a listing sees it: its view, or its entry while it is cold.
enum Seen<'a> {
    Hot(&'a SessionView),
    Cold(&'a ColdRead<'a>),
}
