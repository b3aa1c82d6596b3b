//! Compacting a session: a new generation of what is live, put in force, and the old segments
//! retired.

use crate::compaction::{self, Cleared, NewGeneration};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::layout;
use crate::options::Durability;
use crate::segment::SegmentKind;

use super::retire::Retirement;
use super::{check_key, every_loc, now_micros, Inner, Slot};

/// Why a session is compacted, which decides what the new generation keeps and how the
/// segments it replaces go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compaction {
    /// The background compactor: messages a clear removed are kept within their undo window;
    /// the replaced segments retire as the options say, once no event reader is open.
    Background,
    /// `compact`, `compact_session`: holds only what is live, as the contract says, so
    /// messages a clear removed are dropped even within their undo window.
    Explicit,
    /// A fork of a session being erased gets its own copy of what it shares: the links it
    /// drops are removed at once (never archived, not deferred for readers).
    Detach,
}

impl Inner {
    /// Rewrites a session as one new generation (see `compaction.rs`): an explicit
    /// compaction, which holds only what is live.
    pub(super) fn compact(&self, key: &str) -> Result<()> {
        self.compact_as(key, Compaction::Explicit)
    }

    /// Rewrites a session as one new generation, as `why` asks. Holds the session's writer
    /// lock throughout, so its writers wait; its readers and every other session go on.
    pub(super) fn compact_as(&self, key: &str, why: Compaction) -> Result<()> {
        if check_key(key).is_err() {
            return Ok(());
        }
        let Some(slot) = self.slot(key)? else {
            return Ok(());
        };
        let retention = self.options.tombstone_retention;
        let explicit = why == Compaction::Explicit;
        let mut gate = None;
        if why != Compaction::Detach
            && self.keys.is_none()
            && Cleared::of(&slot.view.read(), retention, explicit) == Cleared::Erase
        {
            // No fork is made from here until the erased segments are gone: it would link
            // them (see `Inner::fork_gate`; no caller holds it).
            gate = Some(self.fork_gate.read());
            // The cleared messages this compaction erases may lie in a segment a fork from
            // the past shares (records past its fork point included): each fork gets its own
            // copy first, as before a reclaim, or the erased bytes would live on under its
            // names. (An encrypted store's forks hold their own copies.) A failure here changes
            // nothing of this session: the compaction fails alone.
            self.detach_forks(key, false)?;
        }
        let mut w = slot.writer.lock();
        let view = slot.view.read().clone();
        if w.retired || w.newest == 0 || !view.is_live() {
            return Ok(());
        }
        // Decided once (it depends on the time): what the generation keeps of the clear.
        let cleared = Cleared::of(&view, retention, explicit);
        if cleared == Cleared::Erase
            && gate.is_none()
            && why != Compaction::Detach
            && self.keys.is_none()
        {
            // A clear passed its undo window since the look above: the forks go first.
            drop(w);
            return self.compact_as(key, why);
        }
        self.check_writable()?;
        let number = w
            .newest
            .checked_add(1)
            .ok_or_else(|| Error::SegmentsExhausted {
                key: key.to_owned(),
            })?;
        if self.options.durability != Durability::Always {
            // The generation links to the last record of the segments it replaces, which
            // `keep_history` archives: they must hold that record after a crash.
            self.with_file(&slot, &mut w, |file| file.sync())?;
        }
        self.forget_checkpoint()?;
        self.reserve_seqs()?;
        // Cleared messages past their undo window go for good with this compaction (`cleared`):
        // the segments that held them are removed, and the session's archive with them
        // (erasure wins over history).
        let (generation, (ticket, ts)) = {
            let source = self.segment_files(&slot, &every_loc(&view))?;
            let new = NewGeneration {
                session_id: slot.session_id,
                segment: number,
                kind: SegmentKind::Compacted,
                view: &view,
                source: &source,
                seal: source.key(),
                replaced_head: w.head,
                cleared,
            };
            let written = compaction::write_generation(&*self.fs, &self.dir, &new, || {
                let ticket = self.feed.take();
                let ts = now_micros();
                ((ticket.seq(), ts), (ticket, ts))
            });
            self.settle_generation(&slot, number, written)?
        };
        self.release_file(&mut w);
        let oldest = w.oldest;
        w.install_generation(number, &generation, self.segment_version());
        {
            let mut view = slot.view.write();
            view.install_compacted(generation.messages, generation.cleared);
            view.last_seq = view.last_seq.max(ticket.seq());
        }
        self.changed();
        let kind = EventKind::Compaction {
            messages: view.messages.len(),
        };
        ticket.commit_event(ts, slot.key.clone(), kind);
        drop(w);
        let retirement = if cleared == Cleared::Erase {
            Retirement::Erased(slot.session_id, oldest, number)
        } else if why == Compaction::Detach {
            Retirement::Unlinked(slot.session_id, oldest, number)
        } else {
            Retirement::Replaced(slot.session_id, oldest, number)
        };
        let retired = self.retire_as(retirement).map(drop);
        self.poison(retired)
    }

    /// What a compaction's failure means. Before the rename put the new generation in force,
    /// nothing the session depends on changed: the compaction fails alone (its temporary file
    /// goes; open would remove it too) and the store goes on, whatever failed (a read of a
    /// damaged record, a full disk, a descriptor limit). After it, the disk may not hold what
    /// the session now names, so the store stops writing.
    fn settle_generation<T>(&self, slot: &Slot, number: u32, written: Result<T>) -> Result<T> {
        let Err(e) = written else {
            return written;
        };
        let temp = layout::segment_temp_path(&self.dir, slot.session_id, number);
        let final_path = layout::segment_path(&self.dir, slot.session_id, number);
        // Not in force only when a look says so for certain: the temporary file is still
        // there, or nothing is under the final name. A look that fails (a `stat` error, which
        // `exists` reads as absent) cannot rule the rename out, and an append to the
        // replaced segments would be lost at the next open.
        let temp_there = self.fs.exists(&temp);
        let final_absent = matches!(
            self.fs.stat(&final_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        );
        if !temp_there && !final_absent {
            return self.poison(Err(e));
        }
        // Best effort: a temporary file left here is removed at the next open, or with the
        // session's erasure, which then lists the folder again to find it.
        if self.fs.remove_file(&temp).is_err() {
            self.forget_traces();
        }
        Err(e)
    }
}
