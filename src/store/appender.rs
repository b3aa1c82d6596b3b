//! A session's writer: where its next record goes, segment roll-over, cached file handles,
//! and the bookkeeping of what is written but not yet synced.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::cipher::DataKey;
use crate::compaction::Generation;
use crate::error::{Error, Result};
use crate::fs::{context, sync_dir, FileHandle, FileSystem, OpenMode};
use crate::keyring;
use crate::layout;
use crate::location::RecordLoc;
use crate::options::Durability;
use crate::record::{chain_start, Hash};
use crate::segment::{self, SegmentHeader, SegmentKind};

use super::{Inner, Slot};

/// Where a session's next record goes. Only the holder of the mutex writes to the session.
pub(super) struct Writer {
    /// First segment in force (0: none yet).
    pub(super) oldest: u32,
    /// Segment being appended to (0: none yet).
    pub(super) newest: u32,
    /// Its length: the offset of the next record.
    pub(super) newest_len: u64,
    /// Its header's length.
    pub(super) header_len: u64,
    /// Cached handle to the newest segment.
    pub(super) file: Option<Box<dyn FileHandle>>,
    /// The session was deleted and left the map: a writer holding a stale handle to it must
    /// look the key up again.
    pub(super) retired: bool,
    /// The flush epoch and segment under which this session's newest segment was last
    /// listed as unsynced.
    pub(super) listed: Option<(u64, u32)>,
    /// The hash of the session's last record: the `prev` of its next one.
    pub(super) head: Hash,
    /// Its files were reclaimed: nothing may be written to it, or restored, again.
    pub(super) reclaimed: bool,
    /// A fork shares the newest segment: the next record starts a new one.
    pub(super) sealed: bool,
    /// The newest segment was checked for other names (a fork's links) since open.
    pub(super) links_checked: bool,
    /// The format version of the newest segment. Records go only into a segment of this
    /// build's version, so the first write after opening an older store starts a new one.
    pub(super) newest_version: u32,
    /// Where the checkpoint on disk (the full one and its deltas) left the session's segments
    /// (oldest, newest, newest's length), if it holds the session as it is: a delta records a
    /// session again only once it moved from there (every change writes a record or a new
    /// generation). `None`: not known to be there.
    pub(super) recorded: Option<(u32, u32, u64)>,
}

impl Writer {
    /// Appends go to `number`, a generation just put in force in place of every segment
    /// before it.
    pub(super) fn install_generation(
        &mut self,
        number: u32,
        generation: &Generation,
        version: u32,
    ) {
        self.oldest = number;
        self.newest = number;
        self.newest_len = generation.len;
        self.header_len = generation.header_len;
        self.head = generation.head;
        self.newest_version = version;
        self.sealed = false;
        self.links_checked = true;
    }

    pub(super) fn empty(key: &str) -> Writer {
        Writer {
            oldest: 0,
            newest: 0,
            newest_len: 0,
            header_len: 0,
            file: None,
            retired: false,
            listed: None,
            head: chain_start(key),
            reclaimed: false,
            sealed: false,
            links_checked: false,
            newest_version: segment::FORMAT_VERSION,
            recorded: None,
        }
    }

    /// True when the newest segment, at `path`, is as long as the session's records reach
    /// (`newest_len`): the next record goes at its end.
    pub(super) fn newest_len_holds(&self, fs: &dyn FileSystem, path: &Path) -> Result<bool> {
        let len = fs.stat(path).map_err(context("examining", path))?.len;
        Ok(len == self.newest_len)
    }

    /// Where its segments are now, as [`Writer::recorded`] holds it.
    pub(super) fn tail(&self) -> (u32, u32, u64) {
        (self.oldest, self.newest, self.newest_len)
    }
}

/// The error of a newest segment, at `path`, whose length is not where the session's records
/// end (`newest_len`): a record written there would go over others or past a hole, so nothing
/// is written to it.
pub(super) fn ends_elsewhere(path: &Path, newest_len: u64) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        offset: newest_len,
        reason: "the segment's length is not where the session's records end (a checkpoint \
                 that does not match its files?): nothing is written to it"
            .into(),
    }
}

/// Segments written to since the last flush, by (session id, segment number), and whether the
/// folder gained a segment. A flush takes the lists and starts a new epoch in one step, so a
/// write either lands in the taken list (and was complete before the flush syncs it) or is
/// listed again for the next flush.
#[derive(Default)]
pub(super) struct Unsynced {
    pub(super) epoch: u64,
    pub(super) segments: Vec<(u64, u32)>,
    pub(super) dir: bool,
}

/// From this many files to sync, one sync of the file system is cheaper than a sync each
/// (each `fdatasync` costs a round trip to the disk; `syncfs` writes back everything the file
/// system has dirty, the store's or not, so a few files are better synced one by one).
const SYNC_FILE_SYSTEM_FROM: usize = 64;

impl Inner {
    /// Appends a whole record (`frame`, sequence number `seq`) to the session's newest
    /// segment, starting a new segment when that one is full, shared by a fork or of an older
    /// format; syncs it as the durability says. Returns where it lies. The caller poisons the
    /// store on a failure: the disk may not hold what the store believes it wrote.
    pub(super) fn append_record(
        &self,
        slot: &Slot,
        w: &mut Writer,
        frame: &[u8],
        seq: u64,
    ) -> Result<RecordLoc> {
        let frame_len = frame.len() as u64;
        let segment_full = w.newest_len > w.header_len
            && w.newest_len.saturating_add(frame_len) > self.options.segment_bytes_max;
        if !w.links_checked && w.newest != 0 {
            // A segment a fork shares (found on open: `sealed` is not kept on disk) never
            // changes again.
            let path = layout::segment_path(&self.dir, slot.session_id, w.newest);
            let names = self
                .fs
                .link_count(&path)
                .map_err(context("examining", &path))?;
            w.sealed |= names > 1;
            if !w.sealed && !w.newest_len_holds(&*self.fs, &path)? {
                // Appended to, it would be written over or left with a hole: a checkpoint that
                // does not match its files (whole, its CRC right) is the one way there.
                return Err(ends_elsewhere(&path, w.newest_len));
            }
            w.links_checked = true;
        }
        let created =
            w.newest == 0 || segment_full || w.sealed || w.newest_version != self.segment_version();
        if created {
            self.start_segment(slot, w)?;
        }
        let offset = w.newest_len;
        let always = self.options.durability == Durability::Always;
        self.with_file(slot, w, |file| {
            file.write_at(frame, offset)?;
            if always {
                // The call returns only once its record is on disk.
                file.sync()?;
            }
            Ok(())
        })?;
        if always && created {
            // A new segment is durable only once the folder's entry for it is.
            self.poison(sync_dir(&*self.fs, &self.dir))?;
        }
        w.newest_len += frame_len;
        self.count_written(frame_len);
        if !always {
            let mut unsynced = self.unsynced.lock();
            let listing = Some((unsynced.epoch, w.newest));
            if w.listed != listing {
                w.listed = listing;
                unsynced.segments.push((slot.session_id, w.newest));
            }
        }
        Ok(RecordLoc {
            seq,
            segment: w.newest,
            offset,
            len: u32::try_from(frame.len()).map_err(|_| Error::RecordTooLarge {
                len: frame.len(),
                max: u32::MAX as usize,
            })?,
        })
    }

    /// Creates the session's next segment and makes it the one appended to.
    pub(super) fn start_segment(&self, slot: &Slot, w: &mut Writer) -> Result<()> {
        let number = w
            .newest
            .checked_add(1)
            .ok_or_else(|| Error::SegmentsExhausted {
                key: slot.key.clone(),
            })?;
        if w.newest != 0 && self.options.durability != Durability::Always {
            // Without this, a crash could keep the new segment but tear the old one's tail,
            // which open must then treat as damage rather than a torn tail.
            self.with_file(slot, w, |file| file.sync())?;
        }
        self.release_file(w);
        let prev_len = if w.newest == 0 { 0 } else { w.newest_len };
        let (file, header_len) = self.create_segment(slot, number, SegmentKind::Fresh, prev_len)?;
        w.newest = number;
        w.newest_len = header_len;
        w.header_len = header_len;
        w.newest_version = self.segment_version();
        w.sealed = false;
        w.links_checked = true;
        if w.oldest == 0 {
            w.oldest = number;
        }
        self.cache_file(w, file);
        self.unsynced.lock().dir = true;
        Ok(())
    }

    /// Creates segment `number` of a session with its header; returns its handle and the
    /// header's length.
    pub(super) fn create_segment(
        &self,
        slot: &Slot,
        number: u32,
        kind: SegmentKind,
        prev_len: u64,
    ) -> Result<(Box<dyn FileHandle>, u64)> {
        let path = layout::segment_path(&self.dir, slot.session_id, number);
        // Made before the session's first segment (see `write_key`).
        let data_key = self.data_key(slot.session_id)?;
        let header = segment::encode_header(
            &SegmentHeader {
                version: self.segment_version(),
                kind,
                session_id: slot.session_id,
                segment: number,
                prev_len,
                key: slot.key.clone(),
            },
            data_key.as_deref(),
        );
        let file = self
            .fs
            .open(&path, OpenMode::CreateNew)
            .map_err(context("creating", &path))?;
        // A header half written would keep the segment's name from being taken again: the
        // store stops writing (the file is a torn header to the next open).
        self.poison(file.write_at(&header, 0).map_err(context("writing", &path)))?;
        Ok((file, header.len() as u64))
    }

    /// Runs `f` (a write or a sync) on the newest segment's handle, opening it (and caching it
    /// while the pool has room) if needed. A failure of `f` poisons the store: the disk may no
    /// longer hold what it was given (fsyncgate). A failure to open the file does not: nothing
    /// was written, so only this call fails.
    pub(super) fn with_file<T>(
        &self,
        slot: &Slot,
        w: &mut Writer,
        f: impl FnOnce(&dyn FileHandle) -> std::io::Result<T>,
    ) -> Result<T> {
        let path = || layout::segment_path(&self.dir, slot.session_id, w.newest);
        let out = match &w.file {
            Some(file) => f(&**file).map_err(|e| context("writing", &path())(e)),
            None => {
                let path = path();
                let file = self
                    .fs
                    .open(&path, OpenMode::Write)
                    .map_err(context("opening", &path))?;
                let out = f(&*file).map_err(context("writing", &path));
                self.cache_file(w, file);
                out
            }
        };
        self.poison(out)
    }

    pub(super) fn cache_file(&self, w: &mut Writer, file: Box<dyn FileHandle>) {
        if self.open_files.fetch_add(1, Ordering::SeqCst) < self.options.open_files_max {
            w.file = Some(file);
        } else {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub(super) fn release_file(&self, w: &mut Writer) {
        if w.file.take().is_some() {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Syncs every segment written since the last flush, then the folder if it gained files.
    /// Returns once every write made before the call is durable: a flush that finds another
    /// still syncing what it took waits for it (an anchor vouches for what a flush returned).
    pub(super) fn flush(&self) -> Result<()> {
        let mut failed = self.flushing.lock();
        if *failed {
            // A flush before this one failed, perhaps one that took writes made before this
            // call: they may not be on disk, and no later sync can tell.
            return Err(Error::Poisoned);
        }
        let (segments, dir) = {
            let mut unsynced = self.unsynced.lock();
            unsynced.epoch += 1;
            (
                std::mem::take(&mut unsynced.segments),
                std::mem::take(&mut unsynced.dir),
            )
        };
        let result = self.sync_segments(&segments, dir);
        *failed = result.is_err();
        self.poison(result)
    }

    pub(super) fn sync_segments(&self, segments: &[(u64, u32)], dir: bool) -> Result<()> {
        if self.sync_file_system(segments.len())? {
            return Ok(()); // every file, and the folder's entries, at once
        }
        for &(session_id, number) in segments {
            let path = layout::segment_path(&self.dir, session_id, number);
            match self.fs.open(&path, OpenMode::Read) {
                // Interval/Never: this is where those writes become durable.
                Ok(file) => file.sync().map_err(context("syncing", &path))?,
                // Compacted or deleted since: compaction synced its output before removing
                // the old segments, and a deleted session's bytes no longer matter.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(context("opening", &path)(e)),
            }
        }
        if dir {
            // Segments created since the last flush are durable only with their entries.
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// With `files` files to sync, syncs the whole file system the store is on at once, where
    /// it can and that pays; false otherwise (then sync file by file).
    pub(super) fn sync_file_system(&self, files: usize) -> Result<bool> {
        if files < SYNC_FILE_SYSTEM_FROM {
            return Ok(false);
        }
        let Some(handle) = &self.file_system else {
            return Ok(false);
        };
        // Interval/Never: where the writes of many sessions become durable together.
        handle
            .sync_file_system()
            .map_err(context("syncing the file system of", &self.dir))
    }

    /// The format version of the segments this store writes.
    pub(super) fn segment_version(&self) -> u32 {
        segment::version_for(self.keys.is_some())
    }

    /// Session `session_id`'s data key in an encrypted store; `None` in a plain one.
    pub(super) fn data_key(&self, session_id: u64) -> Result<Option<Arc<DataKey>>> {
        keyring::data_key(self.keys.as_ref(), session_id)
    }

    /// The data key to seal a session's next record with (a new session gets its key, stored
    /// durably, before its first segment exists).
    pub(super) fn write_key(&self, slot: &Slot, w: &Writer) -> Result<Option<Arc<DataKey>>> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let key = if w.newest == 0 {
            keys.create_key(slot.session_id)
        } else {
            keys.data_key(slot.session_id)
        };
        self.poison(key).map(Some)
    }
}
