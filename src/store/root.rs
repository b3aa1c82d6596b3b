//! The store's root hash: anchors of where each session had reached (`anchor/`), appended
//! at every clean close and by [`LogStore::root_hash`], and the check, at open and by
//! `verify`, that no session ends before its anchored point.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::anchor::{self, Anchors, Point};
use crate::checkpoint::{Cold, ColdEntry};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, OpenMode};
use crate::history::Problem;
use crate::keyring::Keyring;
use crate::layout::FullAnchor;
use crate::layout::{parse_segment_name, segment_path, SEGMENT_SUFFIX};
use crate::record::{header_seq, Hash, HASH_LEN, SEQ_OFFSET};
use crate::report::Finding;
use crate::torn_tail::side_name;

use super::{Inner, LogStore, Slot};

/// Each session's point (its last record's number and hash), by id, of the sessions among
/// `slots` that have a record, and of the cold sessions the checkpoint holds, if any.
pub(super) struct Points<'a> {
    slots: HashMap<u64, (&'a Arc<Slot>, Point)>,
    cold: Option<&'a Cold>,
    /// The indices of `cold`'s entries still cold (ascending), if not every one is.
    still: Option<&'a [u32]>,
}

impl<'a> Points<'a> {
    /// Session `id`'s point, with whose it is; `anchored`: its point in the anchors, if it
    /// has one (a cold session's chain head is kept only where it differs from it).
    fn get(&self, id: u64, anchored: Option<&Point>) -> Option<(Owner<'a>, Point)> {
        if let Some(&(slot, point)) = self.slots.get(&id) {
            return Some((Owner::Slot(slot), point));
        }
        let cold = self.cold?;
        let (index, e) = cold.find(id)?;
        if let Some(still) = self.still {
            still.binary_search(&u32::try_from(index).ok()?).ok()?;
        }
        let head = (cold.head(index))
            .or(anchored.map(|p| p.head))
            .unwrap_or([0; HASH_LEN]);
        let point = Point {
            last_seq: e.last_seq,
            head,
        };
        Some((Owner::Cold(cold, index, e), point))
    }

    /// Adds those of the sessions `cold` holds (each has a record).
    pub(super) fn add_cold(&mut self, cold: &'a Cold) {
        self.cold = Some(cold);
    }

    /// Adds those of the sessions `cold` holds whose entries are `still` cold (their indices,
    /// ascending): their points are as the entries record them, for [`behind`].
    fn add_still_cold(&mut self, cold: &'a Cold, still: &'a [u32]) {
        self.cold = Some(cold);
        self.still = Some(still);
    }
}

/// The session a point is of: its slot, or its entry in the checkpoint while it is cold
/// (`session_map.rs`).
pub(super) enum Owner<'a> {
    Slot(&'a Arc<Slot>),
    Cold(&'a Cold, usize, &'a ColdEntry),
}

impl Owner<'_> {
    fn key(&self) -> String {
        match self {
            Owner::Slot(slot) => slot.key.clone(),
            Owner::Cold(cold, index, _) => cold.key(*index).unwrap_or_default().to_owned(),
        }
    }

    /// Its newest segment and that segment's length.
    fn newest(&self) -> (u32, u64) {
        match self {
            Owner::Slot(slot) => {
                let w = slot.writer.lock();
                (w.newest, w.newest_len)
            }
            // Read again (only for a session behind its anchor).
            Owner::Cold(cold, _, e) => cold.session(e).map_or((0, 0), |s| (s.newest, s.newest_len)),
        }
    }
}

/// The [`Points`] of `slots`.
pub(super) fn points<'a>(slots: impl IntoIterator<Item = &'a Arc<Slot>>) -> Points<'a> {
    let slots = slots.into_iter();
    let mut points = Points {
        slots: HashMap::with_capacity(slots.size_hint().0),
        cold: None,
        still: None,
    };
    for slot in slots {
        // The writer's lock first, as every writer takes them.
        let w = slot.writer.lock();
        let view = slot.view.read();
        if w.newest != 0 && view.exists {
            let point = Point {
                last_seq: view.last_seq,
                head: w.head,
            };
            points.slots.insert(slot.session_id, (slot, point));
        }
    }
    points
}

/// The session id a segment's path names (its file name's prefix).
fn session_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    parse_segment_name(name, SEGMENT_SUFFIX).map(|(id, _)| id)
}

/// The sessions whose end `findings` already explain, so that it needs no rollback report:
/// one that lost records to damage (kept in `quarantine/`), a fork cut short, and one whose
/// anchored last record was cut off as a torn tail (a bit flipped at rest in it looks the
/// same): reported once, as what they are. A torn tail explains the session's end only when
/// the torn bytes begin with a record header carrying the anchored record's number; bytes that
/// cannot say so (a copy of the files taken mid-write, say, which may lack records before
/// them too) do not. Torn bytes are in their side file after a writable open, still at the
/// segment's end after a read-only one (reported as unfinished).
fn explained(findings: &[Finding], anchors: &Anchors, fs: &dyn FileSystem) -> HashSet<u64> {
    let mut ids = HashSet::new();
    let anchored = |path: &Path| {
        let id = session_of(path)?;
        Some((id, anchors.points.get(&id)?.last_seq))
    };
    for finding in findings {
        match finding {
            Finding::Damaged {
                path, quarantined, ..
            } => ids.extend(
                std::iter::once(path)
                    .chain(quarantined)
                    .filter_map(|p| session_of(p)),
            ),
            Finding::TornTail {
                path,
                offset,
                saved_to,
                ..
            } if *offset > 0 => {
                if let Some((id, seq)) = anchored(path) {
                    if torn_seq(fs, saved_to, 0) == Some(seq) {
                        ids.insert(id);
                    }
                }
            }
            Finding::Unfinished { path, offset, .. } => match anchored(path) {
                // A read-only open's torn tail, left in place.
                Some((id, seq)) if *offset > 0 => {
                    if torn_seq(fs, path, *offset) == Some(seq) {
                        ids.insert(id);
                    }
                }
                Some(_) => {}
                // A fork cut short was never anchored.
                None => ids.extend(session_of(path)),
            },
            _ => {}
        }
    }
    ids
}

/// The check against the anchors that open makes of every session, and a session's replay at
/// its first touch of it: the sessions among `points` whose end `findings` or an earlier
/// open's side file explain (reported once, as what they are), and a [`Finding::RolledBack`]
/// for each other session (of `points`, or anchored and gone) not `skipped` that ends before
/// its anchored point.
pub(super) fn check_anchored(
    anchors: &Anchors,
    points: &Points<'_>,
    findings: &[Finding],
    dir: &Path,
    fs: &dyn FileSystem,
    skipped: impl Fn(u64) -> bool,
) -> (HashSet<u64>, Vec<Finding>) {
    let mut explained = explained(findings, anchors, fs);
    let mut found = Vec::new();
    // One pass over the sessions behind their anchor: an earlier open's side file explains
    // a session's loss, or it is a rollback.
    for (id, anchored, now) in behind(anchors, points, |id| explained.contains(&id)) {
        if side_file_explains(points, dir, fs, id, anchored) {
            explained.insert(id);
        } else if !skipped(id) {
            found.push(rollback(points, id, anchored, now));
        }
    }
    (explained, found)
}

/// What the record header at `offset` in `path` says its number is.
fn torn_seq(fs: &dyn FileSystem, path: &Path, offset: u64) -> Option<u64> {
    let mut head = [0u8; SEQ_OFFSET + 8];
    let file = fs.open(path, OpenMode::Read).ok()?;
    file.read_at(&mut head, offset).ok()?;
    header_seq(&head)
}

/// True when the loss of session `id` of `points`, behind its `anchored` point, is an earlier
/// open's torn tail: the side file it saved at the newest segment's present end begins with the
/// anchored record (that open's report went, and the anchor recording the new end was never
/// written: the process ended first).
fn side_file_explains(
    points: &Points<'_>,
    dir: &Path,
    fs: &dyn FileSystem,
    id: u64,
    anchored: Point,
) -> bool {
    let Some((owner, _)) = points.get(id, Some(&anchored)) else {
        return false;
    };
    let (newest, len) = owner.newest();
    let segment = segment_path(dir, id, newest);
    let side = dir.join(side_name(&segment, len));
    torn_seq(fs, &side, 0) == Some(anchored.last_seq)
}

/// The sessions whose erasure an encrypted store began (`keys/{id}.erasing`): gone, and no
/// rollback. A read-only open leaves their files in place.
pub(super) fn erasing(keys: Option<&Keyring>) -> Result<HashSet<u64>> {
    Ok(match keys {
        Some(keys) => keys.erasing()?.into_iter().collect(),
        None => HashSet::new(),
    })
}

/// The sessions among `points` (or anchored and gone) not `skipped` that end before their
/// anchored point: (session id, anchored point, point now).
fn behind(
    anchors: &Anchors,
    points: &Points<'_>,
    skipped: impl Fn(u64) -> bool,
) -> Vec<(u64, Point, Option<Point>)> {
    anchors.behind(
        |id, anchored| points.get(id, Some(anchored)).map(|(_, p)| p),
        skipped,
    )
}

/// A [`Finding::RolledBack`] for each session of `points` (or anchored and gone, and not
/// `skipped`: erased, or reported as damaged) that ends before its anchored point.
fn rolled_back(
    anchors: &Anchors,
    points: &Points<'_>,
    skipped: impl Fn(u64) -> bool,
) -> Vec<Finding> {
    behind(anchors, points, skipped)
        .into_iter()
        .map(|(session_id, anchored, found)| rollback(points, session_id, anchored, found))
        .collect()
}

/// The [`Finding::RolledBack`] of session `session_id`, anchored at `anchored` and now at
/// `found` (`None`: gone).
fn rollback(
    points: &Points<'_>,
    session_id: u64,
    anchored: Point,
    found: Option<Point>,
) -> Finding {
    Finding::RolledBack {
        key: points.get(session_id, None).map(|(owner, _)| owner.key()),
        session_id,
        anchored_seq: anchored.last_seq,
        found_seq: found.map_or(0, |p| p.last_seq),
    }
}

/// What [`Inner::anchor`] works from, under one lock.
#[derive(Debug, Default)]
pub(super) struct Anchoring {
    /// Where the anchors known durable end: an anchor whose write or sync failed is no link
    /// of the chain, and the next one replaces it. A read-only store's stays where open
    /// found the anchors end: all it may check its sessions against.
    pub durable_end: u64,
    /// This store has made the anchor log and its folder durable once (after that, what it
    /// reads of the log up to `durable_end` is on disk).
    pub synced: bool,
    /// The full anchor the anchor log is read from: the one open found named in `LOCK`, or
    /// the last this store wrote (kept here, not read from `LOCK` again: were its naming
    /// there to fail, the next anchor still starts from it, and is no full one).
    pub full: Option<FullAnchor>,
}

impl Inner {
    /// Every slot: live sessions and restorable deleted ones (a session deleted meanwhile
    /// may be in both lists).
    pub(super) fn all_slots(&self) -> Result<Vec<Arc<Slot>>> {
        let mut slots = self.every_slot()?;
        slots.extend(self.tombstones.lock().slots().cloned());
        Ok(slots)
    }

    /// Appends an anchor of the sessions whose point rose since the last one, once what it
    /// stands for is durable; returns the new root.
    pub(super) fn anchor(&self) -> Result<Hash> {
        let mut state = self.anchoring.lock();
        // Not past the anchors known durable: after a failed sync the file may show an
        // anchor the disk does not hold (write-back failed and the pages were marked clean),
        // and a root chained over it would name a history no copy of the folder has. (Only
        // this call appends to them, under the lock held.)
        // From the full anchor open found named in `LOCK` or this store wrote since.
        let mut anchors = Anchors::read_from(&*self.fs, &self.dir, state.durable_end, state.full)?;
        let full = anchors.full();
        // A cold session is where open found it, which the anchors hold (a clean close
        // anchors every session before its checkpoint): it stays cold and is left out. One
        // the anchors do not hold there (an anchor log removed, say) is warmed for its head.
        self.warm_unanchored(&anchors)?;
        let (mut slots, cold) = self.sessions.read().snapshot();
        slots.extend(self.tombstones.lock().slots().cloned());
        let mut points = points(&slots);
        if let Some((cold, still)) = &cold {
            points.add_still_cold(cold, still);
        }
        let next_seq = self.feed.next_seq();
        // The records the points name must be on disk before an anchor vouches for them:
        // this process's, and those a replaying open read from a killed one.
        self.flush()?;
        self.sync_replayed(None)?;
        // The loss open reported as damage or a torn tail is not reported again as a rollback
        // once an anchor records where those sessions now end (after the caller had open's
        // report); once it has, they are no longer behind.
        let explained = self.explained.lock().clone();
        let lowered: HashSet<u64> = behind(&anchors, &points, |id| {
            !explained.contains(&id) || self.erasure_log.lock().holds(id)
        })
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
        // (The cold sessions' points are anchored already: none rose.)
        let points = (points.slots.into_iter()).map(|(id, (_, point))| (id, point));
        // The first anchor since open makes the log durable even if it writes nothing: what
        // an earlier process wrote may still be only in the page cache (it may have failed to
        // sync, or been killed first), and the root handed out must be on disk.
        let root = anchors.append(
            &*self.fs,
            &self.dir,
            next_seq,
            points,
            &lowered,
            !state.synced,
        )?;
        state.synced = true;
        state.durable_end = anchors.end();
        state.full = anchors.full();
        if let Some(written) = anchors.full().filter(|&f| Some(f) != full) {
            // Durable already: the next read of the log may start there. (Advisory: if it
            // is lost, the next read reads the whole log.)
            let named = written.write(&*self.fs, &self.dir);
            let what = "naming the full anchor";
            (self.monitor).note(crate::health::Swallowed::Background, what, None, named);
        }
        Ok(root)
    }
}

impl Inner {
    /// Warms each cold session whose point is not in `anchors` at its last number (never
    /// anchored, or not that far): an anchor must record its head, which only its entry holds.
    fn warm_unanchored(&self, anchors: &Anchors) -> Result<()> {
        let keys: Vec<String> = {
            let sessions = self.sessions.read();
            let Some((cold, still)) = sessions.cold_indices() else {
                return Ok(());
            };
            (still.filter_map(|at| Some((at, cold.entries.get(at)?))))
                .filter(|(_, e)| {
                    (anchors.points.get(&e.session_id)).is_none_or(|p| p.last_seq != e.last_seq)
                })
                .filter_map(|(at, _)| cold.key(at).map(str::to_owned))
                .collect()
        };
        for key in keys {
            self.lookup(&key)?;
        }
        Ok(())
    }

    /// A [`Finding::RolledBack`] if the session of `slot`, just replayed at its first touch
    /// (its files changed while the store was closed), now ends before its anchored point and
    /// `findings` (the replay's) do not explain it; a loss they explain is recorded as such,
    /// so that the next anchor records where the session now ends.
    pub(super) fn rolled_back_alone(
        &self,
        slot: &Arc<Slot>,
        findings: &[Finding],
        anchors: &Anchors,
    ) -> Vec<Finding> {
        let id = slot.session_id;
        let slots = [Arc::clone(slot)];
        let points = points(&slots);
        let (explained, mut found) =
            check_anchored(anchors, &points, findings, &self.dir, &*self.fs, |other| {
                other != id || self.erasure_log.lock().holds(other)
            });
        if explained.contains(&id) {
            self.explained.lock().insert(id);
        }
        for finding in &mut found {
            if let Finding::RolledBack {
                key: key @ None, ..
            } = finding
            {
                // Gone from the map (nothing of it was sound), but its key is known.
                *key = Some(slot.key.clone());
            }
        }
        found
    }
}

impl LogStore {
    /// The store's root hash (64 hex digits): the hash of its latest anchor, which records
    /// where every session had reached and chains every anchor before it. A writable store
    /// first syncs what it holds and appends an anchor of what changed since the last one (a
    /// clean close does the same). Keep the root somewhere the store's disk cannot reach;
    /// [`LogStore::holds_root`] (or `sessionlog verify --root HASH`) later says whether the
    /// store's history still holds it, which a folder rolled back to an older copy does not.
    ///
    /// A read-only store returns the root as of the last anchor; one that has none yet fails
    /// with [`Error::ReadOnly`] (it cannot write the first).
    pub fn root_hash(&self) -> Result<String> {
        if self.inner.read_only {
            let anchors = Anchors::read_latest(&*self.inner.fs, &self.inner.dir, u64::MAX)?;
            return anchors
                .root()
                .map(|r| anchor::hex(&r))
                .ok_or(Error::ReadOnly);
        }
        self.inner.check_writable()?;
        self.inner.anchor().map(|r| anchor::hex(&r))
    }

    /// True when `root` (as [`LogStore::root_hash`] returned it, in hex, either case) is the
    /// root of one of the store's anchors: the store's history has passed through it. False for
    /// a root this folder never held (another store's, or one anchored after the copy this
    /// folder was restored from).
    pub fn holds_root(&self, root: &str) -> Result<bool> {
        // A writer's as far as they are known durable: an anchor whose sync failed holds none.
        let limit = if self.inner.read_only {
            u64::MAX
        } else {
            self.inner.anchoring.lock().durable_end
        };
        let anchors = Anchors::read_until(&*self.inner.fs, &self.inner.dir, limit)?;
        let root = root.trim().to_ascii_lowercase();
        Ok(anchors.roots.iter().any(|r| anchor::hex(r) == root))
    }

    /// [`Problem`]s for the sessions that end before their anchored point, for `verify`,
    /// leaving out those with a problem among `known` (damage, already reported).
    pub(super) fn anchor_problems(&self, known: &[Problem]) -> Result<Vec<Problem>> {
        let inner = &self.inner;
        // A reader's sessions are as open found them (a writer beside it may have anchored
        // more since); a writer's, as far as its anchors are durable.
        let limit = inner.anchoring.lock().durable_end;
        let anchors = Anchors::read_until(&*inner.fs, &inner.dir, limit)?;
        // Damage verify found, or what open found and reported (a torn tail it cut), is said
        // once, as what it is.
        let mut exempt = inner.explained.lock().clone();
        exempt.extend(erasing(inner.keys.as_ref())?);
        exempt.extend(known.iter().filter_map(|p| session_of(&p.path)));
        // The erasure log is locked only once every session's point is read (a reclaim
        // holds a session's writer while it logs).
        let skipped = |id| exempt.contains(&id) || inner.erasure_log.lock().holds(id);
        let slots = inner.all_slots()?;
        let found = rolled_back(&anchors, &points(&slots), skipped);
        // Damage in the log itself (which open, reading from the last full anchor on, may
        // not have seen).
        let damaged = anchors.damaged.iter().map(|&offset| Problem {
            session: None,
            path: anchor::anchors_path(&inner.dir),
            offset,
            reason: "bytes that are no anchor of the chain, with sound anchors after them: \
                     the points of the anchors lost are not checked"
                .to_owned(),
        });
        Ok(damaged
            .chain(found.into_iter().filter_map(|finding| match finding {
                Finding::RolledBack {
                    key,
                    session_id,
                    anchored_seq,
                    found_seq,
                } => Some(Problem {
                    session: key,
                    path: anchor::anchors_path(&inner.dir),
                    offset: 0,
                    reason: format!(
                        "session #{session_id:x} ends at event {found_seq}, before event \
                         {anchored_seq} that its anchor records: its files were rolled back, \
                         removed or damaged (if on purpose, remove ANCHORS)"
                    ),
                }),
                _ => None,
            }))
            .collect())
    }
}
