//! Writing checkpoints: at a clean close, and while the store runs (every
//! `Options::checkpoint_bytes` written, at least every `Options::checkpoint_interval`, or when
//! `LogStore::checkpoint` asks), so that an open after a crash replays only the sessions
//! written since the last one (see `checkpoint/` for what open does with it).
//!
//! A checkpoint written while the store runs describes segments that keep changing after it:
//! the running marker (`CHECKPOINT.running`) says so, durably, before such a checkpoint is put
//! in place and before the first change to segments a clean close's checkpoint describes. A
//! clean close removes it once its own checkpoint is in place.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, BaseId, Cold, ColdEntry, Copier, Entry, Sessions, DELTA_FILE_MAX};
use crate::claim::SegmentStat;
use crate::error::Result;
use crate::fs::{context, sync_dir, written_after, OpenMode};
use crate::health::Swallowed;
use crate::layout::{self, FolderStamp, CHECKPOINT_FILE, CHECKPOINT_RUNNING_FILE};
use crate::parked::{Block, BlockFile, Home};
use crate::recovery;

use super::residence::Pinned;
use super::session_map::ColdIndices;
use super::{Inner, Slot};

/// What the store knows of the checkpoint on disk.
#[derive(Default)]
pub(super) struct CheckpointState {
    /// The running marker is on disk.
    pub(super) marked: bool,
    /// Open replayed segments a crashed process may have left in the page cache only: the
    /// next checkpoint syncs every file before it vouches for them.
    pub(super) unsynced_before_open: bool,
    /// The checkpoint open read is of a version a build that knows nothing of the marker
    /// reads as a clean close's: it is removed before the first change, not marked.
    pub(super) older_format: bool,
    /// Erasures so far: a checkpoint that recorded its sessions before one is not put in
    /// place (it may hold what the erasure removed).
    pub(super) erasures: u64,
    /// Erasures under way: no checkpoint is put in place meanwhile (it could hold what the
    /// erasure removes, and sessions re-pointed at it would keep it open once removed).
    pub(super) erasing: u64,
    /// The segment files the clean close's checkpoint recorded, for the folder's stamp.
    pub(super) recorded: Option<Vec<String>>,
    /// The names open listed in the folder and found to be those the checkpoint it used
    /// records, hashed: a close that changed nothing (and so writes no checkpoint) stamps the
    /// folder if it still holds them (a copied store, say, is listed once, not at every open).
    pub(super) listed_as_recorded: Option<crate::record::Hash>,
    /// The full checkpoint on disk that deltas may follow (a plain store's, written at a clean
    /// close or by this store), while every session's [`super::appender::Writer::recorded`]
    /// says where it and its deltas left the session. Taken by a checkpoint under way and put
    /// back only when it succeeds: after a failure the next checkpoint is a full one.
    pub(super) base: Option<Base>,
}

/// A full checkpoint on disk, and how long the delta file that follows it is.
#[derive(Clone, Copy)]
pub(super) struct Base {
    id: BaseId,
    /// The delta file's length; 0: not started since the full checkpoint was written.
    delta_len: u64,
}

impl Base {
    pub(super) fn new(id: BaseId) -> Base {
        Base { id, delta_len: 0 }
    }

    /// A delta is due rather than a full checkpoint: the deltas so far are shorter than half
    /// the full checkpoint (an open after a crash reads both, and a delta holds each session
    /// it records whole, so a store that wrote to most of its sessions starts afresh), or than
    /// [`DELTA_LEN_FLOOR`].
    fn takes_delta(&self) -> bool {
        let most = (self.id.file_len() / 2).max(DELTA_LEN_FLOOR);
        self.delta_len < most.min(DELTA_FILE_MAX / 2)
    }
}

/// How often the checkpointer looks at what was written, at most.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A full checkpoint up to this long is followed by deltas however many of its sessions moved:
/// reading it twice after a crash costs little.
const DELTA_SHARE_FROM: u64 = 1 << 20;

/// Deltas up to this long follow a full checkpoint however short it is.
const DELTA_LEN_FLOOR: u64 = 64 << 10;

/// How long the checkpointer waits after a checkpoint that failed or was not written before it
/// tries again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The background thread that takes checkpoints while the store runs.
pub(super) fn checkpointer(inner: &Inner) {
    let background = &inner.background;
    let bytes = inner.options.checkpoint_bytes;
    let every = inner.options.checkpoint_interval;
    let look = every.map_or(LOOK_EVERY, |every| every.min(LOOK_EVERY));
    let mut last = Instant::now();
    let mut retry_at = None;
    loop {
        if background.wait_or_stop(&background.checkpoint_due, look) {
            return;
        }
        // The same thread keeps a search index in use caught up (`searching.rs`).
        inner.index_in_background();
        let written = inner.written_since_checkpoint.load(Ordering::SeqCst);
        let due = (bytes > 0 && written >= bytes)
            || (written > 0 && every.is_some_and(|every| last.elapsed() >= every));
        let waiting = retry_at.is_some_and(|at| Instant::now() < at);
        if !due || waiting || inner.poisoned.load(Ordering::SeqCst) {
            continue;
        }
        // A failure poisons the store where a sync failed; it is counted either way.
        let taken = inner.write_checkpoint(true);
        retry_at = match taken {
            Ok(true) => None,
            // Not written (a file-system clock too coarse, an erasure meanwhile), or failed:
            // not again at once.
            _ => Some(Instant::now() + RETRY_AFTER),
        };
        inner
            .monitor
            .note(Swallowed::Background, "checkpoint", None, taken.map(drop));
        last = Instant::now();
    }
}

/// A session a checkpoint records: by its slot, or, cold, by its entry's index.
enum ToRecord<'a> {
    Hot(&'a Arc<Slot>),
    Cold(&'a Arc<Cold>, usize),
}

/// What a checkpoint being taken has recorded so far.
#[derive(Default)]
struct Recording {
    /// The live sessions' keys (one live session per key).
    live_keys: HashSet<String>,
    /// Every segment file, by name, with what the checkpoint records of it.
    segments: BTreeMap<String, SegmentStat>,
    sessions: Sessions,
    /// The sessions whose locations were an earlier checkpoint's block, with that block and
    /// where the new one holds the same bytes.
    moved: Vec<(Arc<Slot>, Block, u64)>,
    /// The cold sessions recorded from their entries: each one's index among the cold ones
    /// and its new entry (where it starts counted from the first entry's start).
    placed: Vec<(u32, ColdEntry)>,
}

impl Inner {
    /// Counts `bytes` written to segments since the last checkpoint; wakes the checkpointer
    /// when they reach `Options::checkpoint_bytes`.
    pub(super) fn count_written(&self, bytes: u64) {
        let before = self
            .written_since_checkpoint
            .fetch_add(bytes, Ordering::SeqCst);
        let due = self.options.checkpoint_bytes;
        if due > 0 && before < due && before.saturating_add(bytes) >= due {
            self.background.checkpoint_due.notify_one();
        }
    }

    /// Called before the first change to a segment: the checkpoint the store opened from no
    /// longer describes the segments exactly, so the running marker goes on disk first.
    pub(super) fn forget_checkpoint(&self) -> Result<()> {
        // Once false, for good: writes after the first take no lock here.
        if !self.checkpoint_exact.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut state = self.checkpoint.lock();
        if self.checkpoint_exact.load(Ordering::SeqCst) {
            if state.older_format {
                // A build that reads only that version would trust it, marker or not.
                let removed = checkpoint::remove(&*self.fs, &self.dir);
                self.poison(removed)?;
            } else {
                self.mark_running(&mut state)?;
            }
            self.checkpoint_exact.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// What a replaying open read may be a killed process's unsynced writes, still only in
    /// the page cache: before an anchor or a checkpoint first vouches for them, every segment
    /// is made durable (all at once where the file system can, else each file, then the
    /// folder), or a power loss would take records they name. Once done, for good. `names`:
    /// the folder's files, if the caller listed it.
    pub(super) fn sync_replayed(&self, names: Option<&[String]>) -> Result<()> {
        let mut state = self.checkpoint.lock();
        if !state.unsynced_before_open {
            return Ok(());
        }
        let listed;
        let names = match names {
            Some(names) => names,
            None => {
                listed = recovery::list_folder(&*self.fs, &self.dir)?.names;
                &listed
            }
        };
        let segments: Vec<(u64, u32)> = (names.iter())
            .filter_map(|name| layout::parse_segment_name(name, layout::SEGMENT_SUFFIX))
            .collect();
        self.poison(self.sync_segments(&segments, true))?;
        state.unsynced_before_open = false;
        Ok(())
    }

    /// Before an erasure: the checkpoint (and a temporary one) goes, durably, so that nothing
    /// it holds of the erased session (its key, name, context) outlives the erasure, and a
    /// checkpoint under way that recorded it is not put in place (see `erasures`). The next
    /// checkpoint describes the store without it.
    pub(super) fn drop_checkpoint_for_erasure(&self) -> Result<()> {
        {
            let mut state = self.checkpoint.lock();
            state.erasures += 1;
            state.erasing += 1;
            self.checkpoint_exact.store(false, Ordering::SeqCst);
        }
        // Nothing read from the checkpoint may stay open once it is removed.
        self.unpark_all();
        let mut state = self.checkpoint.lock();
        // Its deltas go with it: the next checkpoint is a full one.
        state.base = None;
        let removed = checkpoint::remove(&*self.fs, &self.dir);
        state.erasing -= 1;
        drop(state);
        // Counted as a change, so that a checkpoint is due at the next interval: open after a
        // crash needs one, and the memory budget drops the locations read back above only once
        // one holds them. (Not at once: an erasure is often one of many, a sweep's.)
        self.written_since_checkpoint.fetch_add(1, Ordering::SeqCst);
        self.poison(removed)
    }

    /// Puts the running marker on disk, durably, if it is not there yet. A failure to create
    /// it changes nothing; a failed folder sync stops the store.
    fn mark_running(&self, state: &mut CheckpointState) -> Result<()> {
        if !state.marked {
            let path = self.dir.join(CHECKPOINT_RUNNING_FILE);
            self.fs
                .open(&path, OpenMode::Truncate)
                .map_err(context("creating", &path))?;
            // On disk before a segment moves past the checkpoint (or a checkpoint taken while
            // the store runs is put in place): without it, the next open would trust the
            // checkpoint without looking at the files.
            self.poison(sync_dir(&*self.fs, &self.dir))?;
            state.marked = true;
        }
        Ok(())
    }

    /// Writes the projection to the checkpoint file (see `checkpoint/`): at close, once the
    /// background threads have stopped and every write is synced (`running` false; then the
    /// running marker goes), or while the store runs (`running`). Returns false when none was
    /// written: the file system's clock could not show the checkpoint newer than the segments,
    /// or an erasure came while it was taken.
    pub(super) fn write_checkpoint(&self, running: bool) -> Result<bool> {
        let _one = self.checkpointing.lock();
        if running {
            self.check_writable()?;
            if self.checkpoint_exact.load(Ordering::SeqCst) {
                return Ok(true); // nothing changed since open: the checkpoint holds
            }
        }
        let counted = self.written_since_checkpoint.load(Ordering::SeqCst);
        let (erasures, base) = {
            let mut state = self.checkpoint.lock();
            if running {
                self.mark_running(&mut state)?;
            }
            // Put back only once this checkpoint is on disk: after a failure, a full one.
            (state.erasures, state.base.take())
        };
        if let Some(base) = base.filter(|base| running && base.takes_delta()) {
            if let Some(taken) = self.write_delta(base, erasures, counted)? {
                return Ok(taken);
            }
        }
        let names = recovery::list_folder(&*self.fs, &self.dir)?.names;
        self.sync_replayed(Some(&names))?;
        let (slots, cold) = self.to_record();
        // Newest first, hot and cold together.
        let mut order: Vec<(u64, ToRecord<'_>)> = (slots.iter())
            .map(|slot| (slot.session_id, ToRecord::Hot(slot)))
            .collect();
        if let Some((cold, indices)) = &cold {
            order.extend(indices.iter().filter_map(|&i| {
                let e = cold.entries.get(i as usize)?;
                Some((e.session_id, ToRecord::Cold(cold, i as usize)))
            }));
        }
        order.sort_by_key(|(id, _)| Reverse(*id));
        let mut rec = Recording::default();
        let mut copier = cold.as_ref().map(|(cold, _)| Copier::new(cold));
        for (_, to_record) in order {
            let (cold, at) = match to_record {
                ToRecord::Hot(slot) => {
                    self.record_moved(slot, &mut rec)?;
                    continue;
                }
                ToRecord::Cold(cold, at) => (cold, at),
            };
            if let Some(copier) = &mut copier {
                if self.copy_cold(cold, copier, at, &mut rec) {
                    continue;
                }
            }
            match self.cold_to_record(cold, at)? {
                None => {}
                Some((slot, true)) => self.record_moved(&slot, &mut rec)?,
                Some((slot, false)) => {
                    // Recorded from its entry (no other call holds this slot): its locations
                    // stay in the file they were read from. If that fails, it is warmed and
                    // recorded as any other.
                    rec.sessions.take_last();
                    let (keys, segments) = (&mut rec.live_keys, &mut rec.segments);
                    let recorded = self.record_locked(&slot, keys, segments, &mut rec.sessions);
                    match recorded {
                        Ok(_) => {
                            if let Some(entry) = placed_entry(&mut rec.sessions, &slot) {
                                rec.placed.push((at as u32, entry));
                            }
                        }
                        Err(_) => {
                            if let Some(slot) = self.warmed(cold, at)? {
                                self.record_moved(&slot, &mut rec)?;
                            }
                        }
                    }
                }
            }
        }
        let Recording {
            mut segments,
            sessions,
            moved,
            placed,
            ..
        } = rec;
        for name in names {
            if segments.contains_key(&name) {
                continue;
            }
            // Files of no session held (a deleted session's, a compaction's output): each
            // recorded, so that a clean open checks them and an open after a crash replays
            // their session.
            // While the store runs, a compaction may retire one meanwhile: then it is gone.
            if let Some(stat) = self.examine(&self.dir.join(&name), running)? {
                segments.insert(name, stat);
            }
        }
        let newest_segment_ns = newest_modified(&segments);
        let segments: Vec<(String, SegmentStat)> = segments.into_iter().collect();
        if running {
            // What the checkpoint describes is on disk before it is in place: every write
            // recorded above came before this flush (one `syncfs` where the file system can).
            self.flush()?;
        }
        let section_len = sessions.section_len();
        let entries_len = sessions.entries_len();
        // Read after every session: above each number and id they hold.
        let next_seq = self.feed.next_seq();
        let encoded = checkpoint::encode_with(
            next_seq,
            self.next_id.load(Ordering::SeqCst),
            self.options.idempotency_window,
            &segments,
            sessions,
        );
        let file_len = encoded.len();
        // Names, aliases and context are as private as the records they came from. A plain
        // checkpoint is written in the parts the encoder built: never a second copy of them.
        let sealed_len = (file_len + crate::cipher::SEAL_OVERHEAD) as u64;
        if self.keys.is_some() && sealed_len > checkpoint::SEALED_MAX {
            // Open would not read it (it reads a sealed checkpoint whole, and no more than
            // that): none is written, and the next open replays.
            return Ok(false);
        }
        let sealed = (self.keys.as_ref())
            .map(|keys| keys.seal_blob(checkpoint::SEALED_AAD, &encoded.joined()));
        let parts = match &sealed {
            Some(sealed) => vec![&sealed[..]],
            None => encoded.parts().to_vec(),
        };
        // Written and put in place under the lock an erasure takes to remove the checkpoint:
        // one that recorded a session an erasure removed since is never written, and one
        // written before an erasure is removed by it.
        let mut state = self.checkpoint.lock();
        if state.erasures != erasures || state.erasing > 0 {
            return Ok(false); // it may hold what an erasure removed: the next one will not
        }
        if !checkpoint::write_temp(&*self.fs, &self.dir, &parts, newest_segment_ns)? {
            return Ok(false);
        }
        self.poison(checkpoint::put_in_place(&*self.fs, &self.dir))?;
        // The deltas of the checkpoint it replaces go (they name that one, and are never
        // applied to this one, so a removal a crash undoes does no harm). Deltas follow this
        // one only once they are gone.
        let deltas_gone = checkpoint::remove_deltas(&*self.fs, &self.dir).is_ok();
        if running && deltas_gone && self.keys.is_none() {
            state.base = encoded.id(next_seq).map(Base::new);
        }
        if self.keys.is_none() {
            // (An encrypted store's checkpoint is read whole: nothing is parked in it, and no
            // session is cold.)
            let section_at = file_len - section_len;
            let path = self.dir.join(CHECKPOINT_FILE);
            // If the new one cannot be opened, they keep reading from the old one.
            if let Ok(file) = self.fs.open(&path, OpenMode::Read) {
                let file = Arc::new(BlockFile::new(file, path, section_at as u64));
                self.repoint(moved, &file);
                if let Some((cold, _)) = &cold {
                    let body_at = checkpoint::BODY_AT;
                    let entries_at = (section_at - entries_len) as u64 - body_at;
                    self.move_cold(cold, &file, body_at, entries_at, section_len, placed);
                }
            }
        }
        self.written_since_checkpoint
            .fetch_sub(counted, Ordering::SeqCst);
        if !running {
            state.recorded = Some(segments.iter().map(|(name, _)| name.clone()).collect());
            // The checkpoint describes the segments as they stay: the marker goes.
            if state.marked {
                let path = self.dir.join(CHECKPOINT_RUNNING_FILE);
                self.fs
                    .remove_file(&path)
                    .map_err(context("removing", &path))?;
                // Gone durably, or the next open only looks at every file again.
                self.poison(sync_dir(&*self.fs, &self.dir))?;
                state.marked = false;
            }
        }
        Ok(true)
    }

    /// The sessions hot and cold at one moment (a cold session stays cold: it is recorded from
    /// its entry), and the deleted ones: the slots newest session first, the order open settles
    /// them in (its sort then only reverses the list).
    fn to_record(&self) -> (Vec<Arc<Slot>>, Option<ColdIndices>) {
        let (mut slots, cold) = self.sessions.read().snapshot();
        slots.extend(self.tombstones.lock().slots().cloned());
        slots.sort_by_key(|slot| Reverse(slot.session_id));
        slots.dedup_by_key(|slot| slot.session_id);
        (slots, cold)
    }

    /// A delta (`checkpoint/delta.rs`) after the full checkpoint `base`: the sessions whose
    /// segments moved since the checkpoint or delta before, appended to the delta file once
    /// every write it records is on disk. Returns whether one was written (false: see
    /// [`Inner::write_checkpoint`]; then, and after a failure, the next one is a full one), or
    /// `None` when a full one is to be written instead: a quarter of the sessions or more moved
    /// in a store whose full checkpoint is past [`DELTA_SHARE_FROM`] (a delta holds each whole,
    /// and an open after a crash would read them twice), or the full checkpoint is gone from
    /// the folder.
    fn write_delta(&self, mut base: Base, erasures: u64, counted: u64) -> Result<Option<bool>> {
        // Cold sessions were not written since the full checkpoint (a write warms them first).
        let (mut slots, cold) = self.to_record();
        let sessions = slots.len() + cold.map_or(0, |(_, indices)| indices.len());
        slots.retain(|slot| {
            let w = slot.writer.lock();
            w.recorded != Some(w.tail())
        });
        let most =
            slots.len().saturating_mul(4) >= sessions && base.id.file_len() > DELTA_SHARE_FROM;
        if most || !self.fs.exists(&self.dir.join(CHECKPOINT_FILE)) {
            return Ok(None);
        }
        let mut rec = Recording::default();
        for slot in &slots {
            // (A write after the look above is recorded too, or by the next delta.)
            self.record_moved(slot, &mut rec)?;
        }
        let Recording {
            segments, sessions, ..
        } = rec;
        let mut state = if sessions.is_empty() {
            self.checkpoint.lock()
        } else {
            let newest_segment_ns = newest_modified(&segments);
            let segments: Vec<(String, SegmentStat)> = segments.into_iter().collect();
            // What the delta records is on disk before the delta is.
            self.flush()?;
            let encoded = checkpoint::encode_with(
                self.feed.next_seq(),
                self.next_id.load(Ordering::SeqCst),
                self.options.idempotency_window,
                &segments,
                sessions,
            );
            if checkpoint::delta_len_with(base.delta_len, encoded.len()) > DELTA_FILE_MAX {
                return Ok(None); // an open would not read it: a full one instead
            }
            let state = self.checkpoint.lock();
            if state.erasures != erasures || state.erasing > 0 {
                return Ok(Some(false)); // it may hold what an erasure removed
            }
            let (fs, dir) = (&*self.fs, &self.dir);
            let parts = encoded.parts();
            let (id, at) = (&base.id, base.delta_len);
            // A failed write fails this checkpoint alone (the next one is a full one); a
            // failed sync stops the store's writes.
            match checkpoint::append_delta(fs, dir, id, at, &parts, newest_segment_ns)? {
                Some(appended) => {
                    base.delta_len = appended.len;
                    self.poison(appended.sync(fs, dir))?;
                }
                None => return Ok(Some(false)),
            }
            state
        };
        // Deltas follow the full checkpoint still, unless an erasure took both meanwhile.
        if state.erasures == erasures && state.erasing == 0 {
            state.base = Some(base);
        }
        drop(state);
        self.written_since_checkpoint
            .fetch_sub(counted, Ordering::SeqCst);
        Ok(Some(true))
    }

    /// After a clean close's checkpoint: stamps the folder (`layout::FolderStamp`) if it
    /// holds only the store's files and the segment files the checkpoint records, so that the
    /// next open need not list it. The stamp only spares that open work: whatever stops it
    /// here leaves none (a blank is written first), and the next open lists the folder.
    pub(super) fn stamp_folder(&self) -> Result<()> {
        let recorded = self.checkpoint.lock().recorded.take();
        self.stamp_if(|names| recorded.as_deref() == Some(names))
    }

    /// After a clean close that changed nothing (no checkpoint written): stamps the folder as
    /// [`Inner::stamp_folder`] does if open had to list it and it still holds the names open
    /// found there, those of the checkpoint it used. (A stamp open found whole still holds.)
    pub(super) fn stamp_unchanged(&self) -> Result<()> {
        let Some(listed) = self.checkpoint.lock().listed_as_recorded.take() else {
            return Ok(());
        };
        self.stamp_if(|names| layout::names_hash(names) == listed)
    }

    /// Stamps the folder if it holds only the store's files and `recorded` says its names
    /// are those of the checkpoint.
    fn stamp_if(&self, recorded: impl Fn(&[String]) -> bool) -> Result<()> {
        let fs = &*self.fs;
        FolderStamp::write(None, fs, &self.dir)?;
        let Some(before) = FolderStamp::now(fs, &self.dir) else {
            return Ok(());
        };
        // The clock passes the folder's last change before the folder is listed: an entry
        // made after the listing then moves the folder's times past those stamped, whatever
        // the clock's grain.
        // (The clock is read as `LOCK`'s modification time after a write of the blank into
        // it, which changes no folder entry.)
        let lock = self.dir.join(layout::LOCK_FILE);
        let past = written_after(fs, &lock, before.folder.0, || {
            FolderStamp::write(None, fs, &self.dir)
        })?;
        if !past {
            return Ok(());
        }
        let listed = recovery::list_folder(fs, &self.dir)?;
        let clean = listed.report.findings.is_empty() && recorded(&listed.names);
        if !clean || FolderStamp::now(fs, &self.dir) != Some(before) {
            return Ok(());
        }
        FolderStamp::write(Some(before), fs, &self.dir)
    }

    /// What a checkpoint records of the file at `path`; `None` when it is gone and
    /// `missing_ok`, an error when it is gone otherwise.
    fn examine(&self, path: &Path, missing_ok: bool) -> Result<Option<SegmentStat>> {
        let gone = |e: &std::io::Error| missing_ok && e.kind() == ErrorKind::NotFound;
        match self.fs.stat_changed(path) {
            Ok(stat) => Ok(Some(stat)),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(context("examining", path)(e)),
        }
    }

    /// Records one session in a checkpoint under construction, with its segment files, all
    /// under its locks, so that what is recorded of the files and of the session agree (an
    /// append meanwhile changes both, or neither). (What it records is synced once every
    /// session is recorded, before the checkpoint is written.) A session nobody read or wrote since open
    /// keeps what the checkpoint claimed of its files, unchecked: a change made to them while
    /// the store was closed is still caught at its first read or write after the next open.
    ///
    /// Returns where the checkpoint puts the session's locations when they are a block of an
    /// earlier checkpoint (parked, or their image), so that they can be read from this one once
    /// it is in place. Locations that cannot be copied from the block that holds them are read
    /// back first (replayed from the session's files if the block cannot be read).
    /// [`Inner::record_session`] into `rec`, noting a session whose locations the new
    /// checkpoint will hold in place of an earlier one's block.
    fn record_moved(&self, slot: &Arc<Slot>, rec: &mut Recording) -> Result<()> {
        let (keys, segments) = (&mut rec.live_keys, &mut rec.segments);
        let recorded = self.record_session(slot, keys, segments, &mut rec.sessions)?;
        if let Some((block, offset)) = recorded {
            rec.moved.push((Arc::clone(slot), block, offset));
        }
        Ok(())
    }

    fn record_session(
        &self,
        slot: &Arc<Slot>,
        live_keys: &mut HashSet<String>,
        segments: &mut BTreeMap<String, SegmentStat>,
        sessions: &mut Sessions,
    ) -> Result<Option<(Block, u64)>> {
        match self.record_locked(slot, live_keys, segments, sessions) {
            Err(_) if slot.view.read().parked().is_some() => {
                // Its files first, as its first read or write would check them: files changed
                // since the checkpoint that holds its block are replayed (and repaired) now,
                // which puts their locations in memory. Then what is still parked is read back.
                self.settle_claim(slot)?;
                if slot.view.read().parked().is_some() {
                    let pinned = Pinned::new(Arc::clone(slot));
                    self.unpark(&pinned)?;
                }
                self.record_locked(slot, live_keys, segments, sessions)
            }
            recorded => recorded,
        }
    }

    /// [`Inner::record_session`], once, under the session's locks.
    fn record_locked(
        &self,
        slot: &Slot,
        live_keys: &mut HashSet<String>,
        segments: &mut BTreeMap<String, SegmentStat>,
        sessions: &mut Sessions,
    ) -> Result<Option<(Block, u64)>> {
        let claim = slot.claim.lock();
        let mut w = slot.writer.lock();
        let view = slot.view.read();
        let tombstone = view.deleted;
        if (w.retired && !tombstone) || w.newest == 0 || !view.exists {
            return Ok(None);
        }
        // One live session per key: a session deleted (and its key taken again) while this
        // checkpoint was taken is left out, its files replayed after a crash.
        if !tombstone && live_keys.contains(&view.key) {
            return Ok(None);
        }
        let id = slot.session_id;
        match claim.as_deref() {
            Some(claim) => {
                for (number, stat) in claim.files() {
                    segments.insert(layout::segment_name(id, *number), *stat);
                }
            }
            None => {
                for number in w.oldest.max(1)..=w.newest {
                    let path = layout::segment_path(&self.dir, id, number);
                    if let Some(stat) = self.examine(&path, true)? {
                        segments.insert(layout::segment_name(id, number), stat);
                    }
                }
            }
        }
        let offset = sessions.add(&Entry {
            session_id: id,
            oldest: w.oldest,
            newest: w.newest,
            newest_len: w.newest_len,
            head: w.head,
            newest_version: w.newest_version,
            view: &view,
        })?;
        if !tombstone {
            live_keys.insert(view.key.clone());
        }
        // (Should this checkpoint not be put in place, the next one is a full one.)
        w.recorded = Some(w.tail());
        let block = view.home.block().cloned();
        Ok(block.map(|block| (block, offset)))
    }

    /// Records the session at `at` of `cold` as its entry and block are there, copied (no
    /// decoding), if it is still cold and they can be copied as they are (`Copier::next`);
    /// its files as the checkpoint claims them. False if not: then it is recorded decoded (a
    /// read that failed is tried again there).
    fn copy_cold(
        &self,
        cold: &Cold,
        copier: &mut Copier<'_>,
        at: usize,
        rec: &mut Recording,
    ) -> bool {
        let Some((e, Some(claim))) = self.sessions.read().cold_copy(at) else {
            return false;
        };
        let window = self.options.idempotency_window;
        let Ok(Some((entry, block))) = copier.next(&e, checkpoint::VERSION_WRITTEN, window) else {
            return false;
        };
        let placed = rec.sessions.add_copied(entry, block);
        for (number, stat) in claim.files() {
            let name = layout::segment_name(e.session_id, *number);
            rec.segments.insert(name, *stat);
        }
        rec.live_keys
            .insert(cold.key(at).unwrap_or_default().to_owned());
        let entry = ColdEntry {
            at: placed.entry_at,
            block_at: placed.block_at,
            ..e
        };
        rec.placed.push((at as u32, entry));
        true
    }

    /// Points the sessions whose locations are still those of an earlier checkpoint's block
    /// (`moved`: the block, and where the new checkpoint, in place, holds the same bytes) at
    /// the new checkpoint, so that the old file, replaced, is closed once none reads from it.
    /// If the new one cannot be opened, they keep reading from the old one.
    fn repoint(&self, moved: Vec<(Arc<Slot>, Block, u64)>, file: &Arc<BlockFile>) {
        if moved.is_empty() {
            return;
        }
        for (slot, old, offset) in moved {
            let new = old.moved_to(file, offset);
            let mut view = slot.view.write();
            // Each is checked under the view's lock: locations changed since, or read back
            // for an erasure, are left as they are.
            view.home = match std::mem::take(&mut view.home) {
                Home::Parked(block) if block == old => Home::Parked(new),
                Home::Image(block) if block == old => Home::Image(new),
                other => other,
            };
        }
        // Locations an erasure left in memory may be dropped again.
        self.keep_budget();
    }

    /// Points the sessions still cold at the new checkpoint in `file` (its body at `body_at`,
    /// its entries from `entries_at` in it, its location section `section_len` bytes long),
    /// where `placed` says their entries went, so that the old file, replaced, is closed once
    /// no call reads from it. Only if every session still cold of `cold` is among them
    /// (else they keep reading from the old file).
    fn move_cold(
        &self,
        cold: &Arc<Cold>,
        file: &Arc<BlockFile>,
        body_at: u64,
        entries_at: u64,
        section_len: usize,
        mut placed: Vec<(u32, ColdEntry)>,
    ) {
        for (_, entry) in &mut placed {
            entry.at += entries_at;
        }
        let moved =
            (self.sessions.write()).move_cold(cold, file, body_at, section_len as u64, &placed);
        if moved {
            // The activity index holds the old entries: it is built again at the next page.
            self.activity.lock().take();
        }
    }
}

/// The latest modification time of the segment files a checkpoint records: the checkpoint
/// must be newer on disk than all of them.
fn newest_modified(segments: &BTreeMap<String, SegmentStat>) -> i64 {
    (segments.values())
        .map(|(stat, _)| stat.modified_ns)
        .max()
        .unwrap_or(i64::MIN)
}

/// The entry `sessions` last took, of the session in `slot`: where it starts counted from the
/// first entry's start.
fn placed_entry(sessions: &mut Sessions, slot: &Slot) -> Option<ColdEntry> {
    let (placed, crc) = sessions.take_last()?;
    let view = slot.view.read();
    Some(ColdEntry {
        at: placed.entry_at,
        len: u32::try_from(placed.entry_len).ok()?,
        crc,
        block_at: placed.block_at,
        session_id: slot.session_id,
        last_seq: view.last_seq,
        last_activity: view.last_activity,
    })
}
