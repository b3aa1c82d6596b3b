//! Sequence numbers reserved durably ahead of use, so that a number once handed out (to a
//! subscriber, or by `last_seq`) never names another event, whatever a crash loses.
//!
//! The `LOCK` file's sequence floor says that no number at or above it was handed out. Before
//! the feed hands out numbers, the store raises the floor [`RESERVE_BLOCK`] past them and syncs
//! it; open starts numbering at the floor (or past the highest number on disk), so the numbers
//! a crash took with unsynced records are skipped, never reused. The cost is one `LOCK` write
//! and sync per [`RESERVE_BLOCK`] numbers, and a hole of at most that many after a crash.

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::fs::sync_dir;
use crate::layout;

use super::Inner;

/// How many numbers one reservation covers.
pub(super) const RESERVE_BLOCK: u64 = 1 << 20;

/// A reservation is renewed once fewer than this many numbers are left in it: more than the
/// writers that can take a number between their check and their take.
const RESERVE_MARGIN: u64 = 1 << 16;

impl Inner {
    /// Makes sure the next numbers the feed hands out are below the durable floor, raising it
    /// if fewer than [`RESERVE_MARGIN`] are left. A failed write or sync of the floor poisons
    /// the store: a retried sync could claim a floor the disk does not hold.
    pub(super) fn reserve_seqs(&self) -> Result<()> {
        if self.feed.next_seq() + RESERVE_MARGIN <= self.reserved.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one = self.reserving.lock();
        let next = self.feed.next_seq();
        if next + RESERVE_MARGIN <= self.reserved.load(Ordering::SeqCst) {
            return Ok(()); // another writer renewed it meanwhile
        }
        let floor = next + RESERVE_BLOCK;
        self.poison(layout::write_seq_floor(&*self.fs, &self.dir, floor))?;
        if self.reserved.load(Ordering::SeqCst) == 0 {
            // The first reservation since open: `LOCK` may have been created by this open,
            // and its bytes count only once its name is durable too.
            self.poison(sync_dir(&*self.fs, &self.dir))?;
        }
        self.reserved.store(floor, Ordering::SeqCst);
        Ok(())
    }
}
