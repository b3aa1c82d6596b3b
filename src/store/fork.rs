//! Forks: a new session that starts as another one was at a sequence number, sharing the
//! source's segments by hard links (copies in an encrypted store).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use crate::compaction::{self, Cleared, NewGeneration};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::fs::{context, sync_dir};
use crate::keyring::Keyring;
use crate::layout;
use crate::location::RecordLoc;
use crate::projection::SessionView;
use crate::reader::{ForkCuts, ReadPolicy, SegmentEnd, SegmentReader, SegmentRef};
use crate::record::{
    begin_record, chain_start, decode_event, open_payload, record_hash, Event, Hash,
};
use crate::segment::{self, SegmentKind};

use super::appender::Writer;
use super::commit::Before;
use super::{check_key, now_micros, Inner, Slot};

/// What a fork shares of its source: the state, where in the source's segments it ends
/// (segment number, byte length), the hash of its last record, and its last sequence number.
pub(super) struct Shared {
    pub(super) view: SessionView,
    pub(super) segment: u32,
    pub(super) end: u64,
    pub(super) head: Hash,
    pub(super) seq: u64,
}

impl Inner {
    pub(super) fn fork(&self, source: &str, target: &str, at_seq: Option<u64>) -> Result<()> {
        self.check_writable()?;
        check_key(target)?;
        let not_found = || Error::SessionNotFound {
            key: source.to_owned(),
        };
        let exists = || Error::SessionExists {
            key: target.to_owned(),
        };
        if source == target || self.with_view(target, |_| ()).is_some() {
            return Err(exists());
        }
        // No reclaim or erasure is under way while the fork is made (see `Inner::fork_gate`).
        let _gate = self.fork_gate.write();
        let src = self.slot(source)?.ok_or_else(not_found)?;
        // Before any link is made: a reclaim or an erasure looks for forks from now on.
        self.forks_seen.store(true, Ordering::SeqCst);
        let mut sw = src.writer.lock();
        if sw.retired || sw.newest == 0 || !src.view.read().is_live() {
            return Err(not_found());
        }
        // The state to share, where in the source's segments it ends, and the hash of its
        // last record (the fork's first record links to it).
        let live_seq = src.view.read().last_seq;
        let shared = match at_seq {
            Some(seq) if seq < live_seq => self.fold_until(&src, &sw, seq)?,
            _ => Shared {
                view: src.view.read().clone(),
                segment: sw.newest,
                end: sw.newest_len,
                head: sw.head,
                seq: live_seq,
            },
        };
        if shared.segment == sw.newest {
            // The shared segments never change again: the source's next record starts a
            // new one.
            sw.sealed = true;
        }
        // The shared bytes must be on disk before another session depends on them.
        self.with_file(&src, &mut sw, |file| file.sync())?;
        self.forget_checkpoint()?;
        if shared.segment >= u32::MAX - 1 {
            return Err(Error::SegmentsExhausted {
                key: source.to_owned(),
            });
        }
        self.check_room()?;
        let tgt = self.create_slot(target)?;
        // A new slot's writer is free; one that is not belongs to a concurrent writer of the
        // key, which then owns it.
        let Some(mut tw) = tgt.writer.try_lock() else {
            return Err(exists());
        };
        if tw.retired || tw.newest != 0 || tgt.view.read().exists {
            return Err(exists());
        }
        let made = match &self.keys {
            // Encrypted: the fork gets its own copy, under its own data key, so that erasing
            // either session never leaves its bytes readable through the other's files.
            Some(keys) => {
                let copied = self.copy_fork(keys, &src, &tgt, &mut tw, source, shared);
                drop(sw);
                self.poison(copied)
            }
            None => self.link_fork(&src, sw, &tgt, &mut tw, source, shared),
        };
        if made.is_err() {
            // Never seen (a session is seen once it exists), and gone again.
            self.abandon(&tgt, &mut tw);
        }
        made
    }

    /// Makes the fork `tgt` (whose writer lock the caller holds) of `source` by linking the
    /// source's segments (`sw`: its writer, released once they are linked) and writing the
    /// fork's `Fork` record. The fork exists, and is seen, only once that record is written.
    fn link_fork(
        &self,
        src: &Slot,
        sw: MutexGuard<'_, Writer>,
        tgt: &Arc<Slot>,
        tw: &mut Writer,
        source: &str,
        shared: Shared,
    ) -> Result<()> {
        let linked = {
            // No reader may list the folder while the fork is half made.
            let _readers = self.readers.lock();
            self.share_segments(src, &sw, tgt, tw, &shared)
        };
        self.poison(linked)?;
        drop(sw);
        let at_seq = shared.seq;
        {
            let mut view = tgt.view.write();
            *view = SessionView {
                key: tgt.key.clone(),
                cleared: Vec::new(),
                cleared_by: None,
                // Not yet: applying the Fork record makes it exist (and counts it live).
                exists: false,
                // The source's block does not hold the fork's locations.
                home: crate::parked::Home::Memory,
                ..shared.view
            };
            // Nothing shared is dead weight of the fork's.
            view.bytes_written = view.live_bytes;
        }
        let event = Event::Fork { source, at_seq };
        let mut record = Vec::new();
        begin_record(&event, &mut record, false);
        let before = Before::of(&tgt.view.read());
        // A failure leaves the links under an id no session owns, which no erasure of the
        // source would find: the store stops, and the next open takes them away.
        let written = self.write_event(tgt, tw, &event, &mut record, now_micros(), before);
        self.poison(written).map(drop)
    }

    /// Writes the fork `tgt` (whose writer lock the caller holds, as the source's) of `source`
    /// as it was at `shared`: one compacted generation of the shared state, sealed under the
    /// fork's new data key, whose snapshot names the origin.
    pub(super) fn copy_fork(
        &self,
        keys: &Keyring,
        src: &Slot,
        tgt: &Arc<Slot>,
        tw: &mut Writer,
        source: &str,
        shared: Shared,
    ) -> Result<()> {
        self.reserve_seqs()?;
        let key = keys.create_key(tgt.session_id)?;
        let now = now_micros();
        let mut view = SessionView {
            key: tgt.key.clone(),
            ..shared.view
        };
        view.begin_fork(source, shared.seq, now);
        let source_files = self.segment_files(src, &view.messages)?;
        let new = NewGeneration {
            session_id: tgt.session_id,
            segment: 1,
            kind: SegmentKind::Compacted,
            view: &view,
            source: &source_files,
            seal: Some(&key),
            replaced_head: chain_start(&tgt.key),
            cleared: Cleared::Drop,
        };
        let (generation, ticket) =
            compaction::write_generation(&*self.fs, &self.dir, &new, || {
                let ticket = self.feed.take();
                ((ticket.seq(), now), ticket)
            })?;
        let messages = view.messages.len();
        tw.install_generation(1, &generation, self.segment_version());
        view.install_compacted(generation.messages, Vec::new());
        view.last_seq = ticket.seq();
        *tgt.view.write() = view;
        self.changed();
        self.relist(tgt, None, Some(now));
        let kind = EventKind::Fork {
            source: source.to_owned(),
            at_seq: shared.seq,
            messages,
        };
        ticket.commit_event(now, tgt.key.clone(), kind);
        Ok(())
    }

    /// Links the source's segments up to the shared one under the target's names, and
    /// creates the target's forked segment after them.
    pub(super) fn share_segments(
        &self,
        src: &Slot,
        sw: &Writer,
        tgt: &Slot,
        tw: &mut Writer,
        shared: &Shared,
    ) -> Result<()> {
        for number in sw.oldest..=shared.segment {
            let from = layout::segment_path(&self.dir, src.session_id, number);
            let to = layout::segment_path(&self.dir, tgt.session_id, number);
            self.fs
                .hard_link(&from, &to)
                .map_err(context("linking", &to))?;
        }
        let number = shared
            .segment
            .checked_add(1)
            .ok_or_else(|| Error::SegmentsExhausted {
                key: tgt.key.clone(),
            })?;
        let (file, header_len) =
            self.create_segment(tgt, number, SegmentKind::Forked, shared.end)?;
        tw.oldest = sw.oldest;
        tw.newest = number;
        tw.newest_len = header_len;
        tw.header_len = header_len;
        tw.head = shared.head;
        tw.newest_version = self.segment_version();
        self.cache_file(tw, file);
        // The links and the forked segment are durable only with the folder's entries.
        sync_dir(&*self.fs, &self.dir)
    }

    /// The source's state right after event `seq`, read from its segments in force.
    pub(super) fn fold_until(&self, src: &Slot, sw: &Writer, seq: u64) -> Result<Shared> {
        let key = self.data_key(src.session_id)?;
        let mut segments = Vec::new();
        for number in sw.oldest..=sw.newest {
            let path = layout::segment_path(&self.dir, src.session_id, number);
            let read = segment::read_header(&*self.fs, &path, key.as_deref())?;
            let (header, header_len) = read.map_err(|e| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("{e:?}"),
            })?;
            segments.push((SegmentRef { number, path }, header, header_len));
        }
        let forks = ForkCuts::of(segments.iter().map(|(s, h, _)| (s.number, Some(h))));
        let base_first = segments.first().is_some_and(|(_, h, _)| {
            matches!(h.kind, SegmentKind::Compacted | SegmentKind::Recovered)
        });
        let mut fold = Fold {
            view: SessionView::with_window(&src.key, self.options.idempotency_window),
            until: seq,
            stopped: false,
            snapshot_seq: None,
            last: None,
            last_bytes: Vec::new(),
        };
        for (segment, _, header_len) in segments {
            let cut = forks.cut(segment.number);
            fold.segment(&*self.fs, segment, header_len as u64, cut, key.as_deref())?;
        }
        if base_first && fold.snapshot_seq.is_none_or(|s| s > seq) {
            return Err(Error::HistoryCompacted {
                key: src.key.clone(),
                available_from: fold.snapshot_seq.unwrap_or(0),
            });
        }
        // A source that is itself a fork did not exist before its own Fork record.
        let view = fold.view;
        let before_own_fork = src.view.read().fork_origin.is_some() && view.fork_origin.is_none();
        let Some((segment, end)) = fold.last.filter(|_| view.is_live() && !before_own_fork) else {
            return Err(Error::SessionNotFound {
                key: src.key.clone(),
            });
        };
        let last_seq = view.last_seq;
        Ok(Shared {
            view,
            segment,
            end,
            head: record_hash(&fold.last_bytes),
            seq: last_seq,
        })
    }
}

/// A fork's fold of its source's records up to the fork point.
struct Fold {
    view: SessionView,
    /// The fork point: records after it are read (for the snapshot) but not folded.
    until: u64,
    stopped: bool,
    /// The first snapshot's sequence number.
    snapshot_seq: Option<u64>,
    /// Where the last record folded ends: (segment number, byte offset), and its bytes.
    last: Option<(u32, u64)>,
    last_bytes: Vec<u8>,
}

impl Fold {
    /// Folds one segment's records from `start`; of a segment a fork shares, only the bytes
    /// before `cut`. Damage (not a torn tail) is an error.
    fn segment(
        &mut self,
        fs: &dyn crate::fs::FileSystem,
        segment: SegmentRef,
        start: u64,
        cut: Option<u64>,
        key: Option<&crate::cipher::DataKey>,
    ) -> Result<()> {
        let number = segment.number;
        let path = segment.path.clone();
        let damage = |offset, reason| Error::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        let mut reader = SegmentReader::new(segment, start, None, ReadPolicy::SCAN);
        let mut scratch = Vec::new(); // an encrypted store's opened payload
        while let Some(record) = reader.next(fs)? {
            let (frame, offset) = (&record.frame, record.offset);
            let payload = open_payload(frame, key, &mut scratch).map_err(|e| damage(offset, e))?;
            let event = decode_event(payload).map_err(|e| damage(offset, e))?;
            if matches!(event, Event::Snapshot(_)) && self.snapshot_seq.is_none() {
                self.snapshot_seq = Some(frame.seq);
            }
            if self.stopped || cut.is_some_and(|cut| offset >= cut) {
                continue;
            }
            if frame.seq > self.until {
                self.stopped = true;
                continue;
            }
            let at = RecordLoc {
                seq: frame.seq,
                segment: number,
                offset,
                len: record.len,
            };
            self.view
                .apply(frame.ts_micros, &event, at)
                .map_err(|e| damage(offset, e))?;
            self.last = Some((number, offset + u64::from(record.len)));
            self.last_bytes.clear();
            self.last_bytes.extend_from_slice(record.bytes);
        }
        // A torn tail is the writer's business; damage is not.
        match reader.end() {
            Some(SegmentEnd::Bad {
                offset,
                error,
                torn: false,
            }) => Err(damage(*offset, error.to_string())),
            _ => Ok(()),
        }
    }
}
