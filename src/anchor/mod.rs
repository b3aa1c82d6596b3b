//! The anchor log, `ANCHORS`: where each session's history had reached when the store last
//! closed cleanly (or [`crate::LogStore::root_hash`] was called), kept outside the sessions' own
//! files, so that a session whose files were rolled back to an older copy is noticed at open
//! and by `verify`, and a hash chain over the anchors (the store's *root hash*) that an operator
//! can keep elsewhere to notice a rollback of the whole folder.
//!
//! ```text
//! // Format of one anchor: { magic: [u8; 4] = "SLAN" | count: u32 | next_seq: u64 |
//! //   prev_root: [u8; 32] | count × { session_id: u64 | last_seq: u64 | head: [u8; 32] } |
//! //   root: [u8; 32] | crc: u32 }
//! ```
//!
//! Little-endian. An anchor lists the sessions whose last sequence number rose since the anchor
//! before it (the first lists every session), sorted by id; `head` is the hash of the session's
//! last record. It also lists, at their new, lower, points (`last_seq` 0 and a zero `head`: no
//! record left), the sessions whose loss the store's open reported as damage or a torn tail,
//! so that the loss is reported once, not again as a rollback at every open. `root` is the
//! BLAKE3 hash of the anchor's bytes before it (`prev_root`, the root of the anchor before, or
//! 32 zero bytes, chains them); `crc` the CRC-32 of everything before it. Folding the anchors
//! in order (the latest entry of a session wins) gives each session's anchored point; it goes
//! down only by such an entry.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{append_durably, context, FileHandle, FileSystem, OpenMode};
use crate::layout::{FullAnchor, ANCHORS_FILE, NUMBER_LIMIT};
use crate::record::{Hash, HASH_LEN};
use crate::report::{Finding, RecoveryReport};
use crate::torn_tail::cut_log_tail;

mod anchored;

pub(crate) use anchored::Anchored;

const MAGIC: [u8; 4] = *b"SLAN";
/// Bytes of an anchor before its entries.
const HEAD_LEN: usize = 4 + 4 + 8 + HASH_LEN;
/// Bytes of one entry.
const ENTRY_LEN: usize = 8 + 8 + HASH_LEN;
/// Entries a read of the log holds before it folds them into the points, at the least (or
/// as many as the points, if more): small in the unit tests, so that their logs fold in steps.
#[cfg(not(test))]
const FOLD_MIN: usize = 1 << 16;
#[cfg(test)]
const FOLD_MIN: usize = 2;
/// Bytes of anchors after the last full one past which the next append is a full one, at
/// the least (or twice the points held, if more).
const FULL_AFTER: u64 = 64 << 10;
/// Bytes of an anchor after its entries.
const TAIL_LEN: usize = HASH_LEN + 4;
/// Most entries one anchor holds: an anchor is read whole, and this bounds what that takes
/// (48 MiB). A store with more sessions changed since its last anchor writes several.
const ENTRIES_MAX: usize = 1 << 20;
/// Bytes of the largest anchor.
const ANCHOR_MAX: u64 = anchor_len(ENTRIES_MAX as u32);

/// Bytes of an anchor of `count` entries.
const fn anchor_len(count: u32) -> u64 {
    (HEAD_LEN + TAIL_LEN) as u64 + count as u64 * ENTRY_LEN as u64
}

/// Where one session's history had reached at its latest anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub last_seq: u64,
    pub head: Hash,
}

impl Point {
    /// A session with no record left (all of it quarantined as damage): nothing vouched for.
    pub(crate) const NONE: Point = Point {
        last_seq: 0,
        head: [0; HASH_LEN],
    };
}

/// The anchor log as read: each session's anchored point, every root in the chain, where the
/// next anchor goes.
#[derive(Debug)]
pub(crate) struct Anchors {
    pub points: Anchored,
    /// The root of every anchor, oldest first.
    pub roots: Vec<Hash>,
    /// The end of the last sound anchor.
    end: u64,
    /// The file's length: longer than `end` when an append was cut short.
    file_len: u64,
    /// Where each run of bytes that is no anchor starts, of those with a sound anchor after
    /// them (damage, kept in place; the anchors after it are read).
    pub damaged: Vec<u64>,
    /// The latest full anchor (`layout::FullAnchor`) the read started at or the appends
    /// wrote; `roots` and `damaged` are of the log from there on.
    full: Option<FullAnchor>,
    /// Most entries an anchor appended holds ([`ENTRIES_MAX`]; fewer in unit tests).
    entries_max: usize,
}

impl Default for Anchors {
    fn default() -> Anchors {
        Anchors {
            points: Anchored::default(),
            roots: Vec::new(),
            end: 0,
            file_len: 0,
            damaged: Vec::new(),
            full: None,
            entries_max: ENTRIES_MAX,
        }
    }
}

/// The anchor log's path in the store's folder.
pub(crate) fn anchors_path(dir: &Path) -> PathBuf {
    dir.join(ANCHORS_FILE)
}

/// The hex form of a root, as [`crate::LogStore::root_hash`] returns it.
pub(crate) fn hex(root: &Hash) -> String {
    root.iter().map(|b| format!("{b:02x}")).collect()
}

impl Anchors {
    /// Reads the log's first `limit` bytes (`u64::MAX`: all of it; less: the anchors a reader
    /// found when it opened the store, a writer beside it may have appended more since, for
    /// records the reader has not seen): every sound anchor, in order, each the next link of
    /// the chain. Bytes that are no anchor with a sound anchor after them are damage: their
    /// offset goes to `damaged`, and the chain starts again at that anchor. Those at the end
    /// are an append a crash cut short (the tail that a writable open saves aside before the
    /// next anchor). Reads one anchor at a time.
    pub(crate) fn read_until(fs: &dyn FileSystem, dir: &Path, limit: u64) -> Result<Anchors> {
        Anchors::read_from(fs, dir, limit, None)
    }

    /// [`Anchors::read_until`], from the full anchor `LOCK` names if it is there (sound, with
    /// the root named), else from the start: the same points, and the roots and damage of the
    /// log from where it started. For open and the next anchor, which need the points; what
    /// needs every root (`holds_root`) or all damage (`verify`) reads the whole log.
    pub(crate) fn read_latest(fs: &dyn FileSystem, dir: &Path, limit: u64) -> Result<Anchors> {
        Anchors::read_from(fs, dir, limit, FullAnchor::read(fs, dir))
    }

    /// [`Anchors::read_until`], from the full anchor `full` if it is there whole (see
    /// [`Anchors::read_latest`]).
    pub(crate) fn read_from(
        fs: &dyn FileSystem,
        dir: &Path,
        limit: u64,
        full: Option<FullAnchor>,
    ) -> Result<Anchors> {
        let path = anchors_path(dir);
        let mut anchors = Anchors::default();
        if !fs.exists(&path) {
            return Ok(anchors);
        }
        let file = fs
            .open(&path, OpenMode::Read)
            .map_err(context("opening", &path))?;
        anchors.file_len = file.size().map_err(context("reading", &path))?.min(limit);
        let mut bytes = Vec::new();
        // The sound anchors' entries not yet folded into `anchors.points`, in the order
        // written: folded in whenever they outnumber the points held (and at the end), so
        // that a long log takes memory by the sessions it names, not by its length.
        let mut entries = Vec::new();
        // Right after damage, the next sound anchor starts the chain again.
        let mut linked = true;
        // What the scan past damage may read of candidate anchors: every magic in a hostile
        // file could claim the largest anchor, and reading each would take hours.
        let mut budget = anchors.file_len.saturating_add(2 * ANCHOR_MAX);
        if let Some(full) = full.filter(|f| f.at < anchors.file_len) {
            // The log from the full anchor on, if it is there: the anchors before it need
            // not be read for the points.
            match read_anchor(&*file, &path, full.at, anchors.file_len, &mut bytes)? {
                Some((anchor, root)) if root == full.root => {
                    entries.extend(anchor);
                    anchors.roots.push(root);
                    anchors.end = full.at + bytes.len() as u64;
                    anchors.full = Some(full);
                }
                _ => {}
            }
        }
        while anchors.end < anchors.file_len {
            let at = anchors.end;
            let sound = read_anchor(&*file, &path, at, anchors.file_len, &mut bytes)?;
            let prev = anchors.root().unwrap_or([0; HASH_LEN]);
            match sound {
                Some((anchor, root)) if !linked || prev_root(&bytes) == prev => {
                    entries.extend(anchor);
                    if entries.len() > FOLD_MIN.max(anchors.points.len()) {
                        anchors.points.take_in(std::mem::take(&mut entries));
                    }
                    anchors.roots.push(root);
                    anchors.end += bytes.len() as u64;
                    linked = true;
                }
                _ => match next_anchor(
                    &*file,
                    &path,
                    at + 1,
                    anchors.file_len,
                    &mut bytes,
                    &mut budget,
                )? {
                    // Bytes that are no anchor (or an anchor that is no link of this chain)
                    // with a sound anchor after them: damage, not an append a crash cut short.
                    Some(next) => {
                        anchors.damaged.push(at);
                        anchors.end = next;
                        linked = false;
                    }
                    None => break,
                },
            }
        }
        anchors.points.take_in(entries);
        if let Some(full) = anchors.full {
            // Every anchor of the full one must be there, sound and linked (a later one may be
            // damaged, or cut as a torn tail): else only a whole read has every point.
            let whole = anchors.end >= full.end && anchors.damaged.iter().all(|&d| d >= full.end);
            if !whole {
                return Anchors::read_from(fs, dir, limit, None);
            }
        }
        Ok(anchors)
    }

    /// The latest full anchor the read started at or the appends wrote.
    pub(crate) fn full(&self) -> Option<FullAnchor> {
        self.full
    }

    /// Where the last sound anchor ends.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// The root of the latest anchor.
    pub(crate) fn root(&self) -> Option<Hash> {
        self.roots.last().copied()
    }

    /// Reports the damage the read found (kept in place: the anchors after it are read).
    pub(crate) fn report_damage(&self, dir: &Path, report: &mut RecoveryReport) {
        for &offset in &self.damaged {
            report.findings.push(Finding::Damaged {
                key: None,
                path: anchors_path(dir),
                offset,
                reason: "bytes that are no anchor of the chain, with sound anchors after them; \
                         those are read, and the points of the anchors lost are not checked"
                    .to_owned(),
                quarantined: Vec::new(),
            });
        }
    }

    /// A writable open: saves what follows the last sound anchor (an append a crash cut
    /// short) to a side file and cuts it off, so that the next anchor follows the last one.
    pub(crate) fn repair(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        if self.file_len > self.end {
            cut_log_tail(fs, &anchors_path(dir), self.end, report)?;
            self.file_len = self.end;
        }
        Ok(())
    }

    /// Appends an anchor of the sessions in `now` (session id, point) whose point rose, or
    /// that have none yet, durably; returns the new root. With nothing risen and an anchor in
    /// place, writes nothing and returns its root.
    ///
    /// The sessions in `lowered` are written whatever their point: those whose loss an open
    /// reported as damage or a torn tail, so that later opens take where they now end (their
    /// point in `now`, or [`Point::NONE`] if they have no record left) as anchored and do not
    /// report the same loss again as a rollback.
    ///
    /// `first`: nothing in the log is known durable yet (the first anchor since open: an
    /// earlier process may have written anchors it never synced, or an earlier call may have
    /// created the log and failed before syncing its folder). The log and its folder are
    /// synced then, even when nothing is written.
    pub(crate) fn append(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        next_seq: u64,
        now: impl IntoIterator<Item = (u64, Point)>,
        lowered: &HashSet<u64>,
        first: bool,
    ) -> Result<Hash> {
        // The lowered sessions still present (only those are ever looked up).
        let mut present = HashSet::new();
        let mut entries: Vec<(u64, Point)> = now
            .into_iter()
            .filter(|(id, point)| {
                lowered.contains(id) && present.insert(*id)
                    || self
                        .points
                        .get(id)
                        .is_none_or(|old| point.last_seq > old.last_seq)
            })
            .collect();
        entries.extend(
            lowered
                .iter()
                .filter(|id| !present.contains(id))
                .map(|&id| (id, Point::NONE)),
        );
        entries.sort_unstable_by_key(|(id, _)| *id);
        // Once the log since the last full anchor holds twice the points (and 64 KiB), this
        // append is a full one: every point, the new ones in place of the old, so that a
        // reader starting there needs nothing before it.
        let since = self.end - self.full.map_or(0, |f| f.at.min(self.end));
        let held = (self.points.len() * ENTRY_LEN) as u64;
        // (Never when a point held is at or past `next_seq`, which no sound anchor may list:
        // a session rolled back, with the sequence floor lost, is anchored higher than the
        // store's numbers now reach.)
        let full = !entries.is_empty()
            && since > FULL_AFTER.max(2 * held)
            && self.points.iter().all(|(_, p)| p.last_seq < next_seq);
        if full {
            entries = self.points.with(&entries);
        }
        let mut chunks: Vec<&[(u64, Point)]> = entries.chunks(self.entries_max).collect();
        if chunks.is_empty() {
            match self.root() {
                Some(root) if !first => return Ok(root),
                Some(_) => {} // nothing to add, but the log must be made durable
                None => chunks.push(&[]), // the first anchor of an empty store
            }
        }
        // The anchor stands for a state already durable; it must be durable itself (and a new
        // log's name) before its root is handed out, or an operator could keep a root the
        // folder never holds.
        let mut written = Vec::new();
        let mut end = self.end;
        let mut prev = self.root().unwrap_or([0; HASH_LEN]);
        append_durably(fs, &anchors_path(dir), first, |file| {
            for chunk in chunks {
                let (bytes, root) = encode(next_seq, &prev, chunk);
                file.write_at(&bytes, end)?;
                end += bytes.len() as u64;
                prev = root;
                written.push((root, chunk));
            }
            // What an append that failed left past the new end is no anchor.
            if file.size()? > end {
                file.set_len(end)?;
            }
            Ok(())
        })?;
        if let (true, Some((root, _))) = (full, written.first()) {
            self.full = Some(FullAnchor {
                at: self.end,
                end,
                root: *root,
            });
        }
        self.end = end;
        self.file_len = end;
        for (root, chunk) in written {
            self.roots.push(root);
            self.points.merge(chunk);
        }
        Ok(prev)
    }

    /// The sessions that end before their anchored point: (session id, anchored point, the
    /// point found, if the session is there at all). `found` gives a session's point by id (and its anchored one);
    /// `erased` says whether the erasure log erased a session (then its absence is no
    /// rollback).
    pub(crate) fn behind(
        &self,
        found: impl Fn(u64, &Point) -> Option<Point>,
        erased: impl Fn(u64) -> bool,
    ) -> Vec<(u64, Point, Option<Point>)> {
        // In order of id already.
        self.points
            .iter()
            .filter(|(id, _)| !erased(*id))
            .filter_map(|(id, anchored)| {
                let now = found(id, &anchored);
                let ok = now.map_or(anchored == Point::NONE, |now| {
                    now.last_seq > anchored.last_seq
                        || (now.last_seq == anchored.last_seq && now.head == anchored.head)
                });
                (!ok).then_some((id, anchored, now))
            })
            .collect()
    }
}

/// The anchor at `at` (its bytes left in `bytes`), if one that is sound ends by `file_len`.
fn read_anchor(
    file: &dyn FileHandle,
    path: &Path,
    at: u64,
    file_len: u64,
    bytes: &mut Vec<u8>,
) -> Result<Option<Decoded>> {
    let left = file_len.saturating_sub(at);
    let mut head = [0u8; HEAD_LEN];
    if left < (HEAD_LEN + TAIL_LEN) as u64 {
        return Ok(None);
    }
    file.read_at(&mut head, at)
        .map_err(context("reading", path))?;
    let len = anchor_len(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    if head[..4] != MAGIC || len > ANCHOR_MAX || len > left {
        return Ok(None);
    }
    bytes.clear();
    bytes.extend_from_slice(&head);
    bytes.resize(len as usize, 0);
    file.read_at(&mut bytes[HEAD_LEN..], at + HEAD_LEN as u64)
        .map_err(context("reading", path))?;
    Ok(decode(bytes))
}

/// Where the first sound anchor at or after `from` starts, if any: the file is scanned for
/// the magic through a fixed buffer. Each candidate's claimed length is taken from `budget`;
/// once that runs out, the scan stops and there is none (the rest is a torn tail).
fn next_anchor(
    file: &dyn FileHandle,
    path: &Path,
    from: u64,
    file_len: u64,
    bytes: &mut Vec<u8>,
    budget: &mut u64,
) -> Result<Option<u64>> {
    const CHUNK: usize = 1 << 16;
    let mut chunk = vec![0u8; CHUNK];
    let mut at = from;
    while at < file_len {
        let n = usize::try_from(file_len - at).map_or(CHUNK, |left| left.min(CHUNK));
        file.read_at(&mut chunk[..n], at)
            .map_err(context("reading", path))?;
        for i in 0..n.saturating_sub(MAGIC.len() - 1) {
            let start = at + i as u64;
            if chunk[i..i + MAGIC.len()] != MAGIC {
                continue;
            }
            let count = chunk
                .get(i + 4..i + 8)
                .and_then(|c| c.try_into().ok())
                .map_or(0, u32::from_le_bytes);
            // What reading it would take: its head only, when its count or length rules it out.
            let claimed = anchor_len(count);
            let read = if claimed > ANCHOR_MAX || claimed > file_len - start {
                HEAD_LEN as u64
            } else {
                claimed
            };
            *budget = match budget.checked_sub(read) {
                Some(left) => left,
                None => return Ok(None),
            };
            if read_anchor(file, path, start, file_len, bytes)?.is_some() {
                return Ok(Some(start));
            }
        }
        // The next chunk overlaps this one by a magic's length less one.
        at += (n.saturating_sub(MAGIC.len() - 1)).max(1) as u64;
    }
    Ok(None)
}

fn prev_root(bytes: &[u8]) -> Hash {
    let mut prev = [0; HASH_LEN];
    prev.copy_from_slice(&bytes[16..16 + HASH_LEN]);
    prev
}

fn encode(next_seq: u64, prev: &Hash, entries: &[(u64, Point)]) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(HEAD_LEN + entries.len() * ENTRY_LEN + TAIL_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(prev);
    for (id, point) in entries {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&point.last_seq.to_le_bytes());
        out.extend_from_slice(&point.head);
    }
    let root = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&root);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    (out, root)
}

/// A sound anchor's entries and root.
type Decoded = (Vec<(u64, Point)>, Hash);

fn decode(bytes: &[u8]) -> Option<Decoded> {
    let body_len = bytes.len().checked_sub(TAIL_LEN)?;
    let (body, tail) = bytes.split_at(body_len);
    let (root_bytes, crc) = tail.split_at(HASH_LEN);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    if crc32fast::hash(&bytes[..bytes.len() - 4]) != crc {
        return None;
    }
    let root: Hash = root_bytes.try_into().ok()?;
    if *blake3::hash(body).as_bytes() != root {
        return None;
    }
    let next_seq = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    if next_seq >= NUMBER_LIMIT {
        return None;
    }
    let mut entries = Vec::with_capacity(body.len() / ENTRY_LEN);
    for entry in body.get(HEAD_LEN..)?.chunks_exact(ENTRY_LEN) {
        let id = u64::from_le_bytes(entry[0..8].try_into().ok()?);
        let last_seq = u64::from_le_bytes(entry[8..16].try_into().ok()?);
        // The store never comes near these numbers: an anchor holding one is not sound.
        if id >= NUMBER_LIMIT || last_seq >= next_seq {
            return None;
        }
        let head: Hash = entry[16..].try_into().ok()?;
        entries.push((id, Point { last_seq, head }));
    }
    Some((entries, root))
}

#[cfg(test)]
mod tests;
