//! A read-only store beside a running writer: a session whose files the writer replaced since
//! the reader read them (a compaction's new generation, an erasure, a sweep) is read again
//! from the files it has now, and the read that found them gone is made again.

use std::sync::Arc;

use crate::error::Result;
use crate::fs::retry_while_gone;
use crate::layout::listed_segments;
use crate::recovery::{self, ReplayOptions};

use super::{Inner, Slot};

/// How many times a read is made again after the session was read again from its files: each
/// try fails only if the writer replaced the session's files once more in between.
const REREAD_TRIES: u32 = 8;

impl Inner {
    /// Runs `read` (a read of the session in `slot`); in a read-only store, if it failed on a
    /// file that is gone, reads the session again from its files and runs `read` again. In a
    /// writable store, nothing removes a session's files behind its lock: the error is
    /// returned as it is.
    pub(super) fn reading<T>(
        &self,
        slot: &Arc<Slot>,
        read: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let tries = if self.read_only { REREAD_TRIES } else { 1 };
        retry_while_gone(tries, read, |_, _| match self.read_again(slot) {
            // The writer replaced a file again while the session was read again: the next
            // try finds it gone too, and reads the session again.
            Err(e) if e.is_file_gone() => Ok(()),
            again => again,
        })
    }

    /// Reads the session in `slot` again from the segment files it has now, as open read it,
    /// and puts what they hold in its place: its messages where the writer's compaction put
    /// them, or nothing if the writer deleted or erased it since. What the replay finds wrong
    /// with a live session is reported as open would.
    fn read_again(&self, slot: &Arc<Slot>) -> Result<()> {
        let mut w = slot.writer.lock();
        let numbers = listed_segments(&*self.fs, &self.dir, slot.session_id)?;
        let options = ReplayOptions::of(&self.options, false);
        let keys = self.keys.as_ref();
        let alone = recovery::replay_alone(
            &*self.fs,
            &self.dir,
            slot.session_id,
            numbers,
            &options,
            keys,
        )?;
        if alone.live.is_some() {
            // A session deleted since is not damage: its findings (that its files hold it
            // deleted) are those of a reader that came late, and are left out.
            self.report.add(alone.report.findings);
        }
        self.install(slot, &mut w, alone.live);
        Ok(())
    }
}
