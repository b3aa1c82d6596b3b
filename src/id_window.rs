//! A session's window of recent ids: what [`crate::LogStore::append_once`] checks a message id
//! against.
//!
//! Each identified append (`AppendOnce`, `AppendBatchOnce`) enters its id; the window keeps the
//! last `cap` of them, oldest first, and forgets the oldest as new ones come. It is part of the
//! projection, so it is rebuilt from the log like everything else: replay enters the ids of the
//! records it reads, a compaction's snapshot carries the window as it was, and the checkpoint
//! holds it too.
//!
//! Ids are kept as 128-bit digests ([`id_digest`]), so that a window costs the same whatever
//! the ids' length: about 45 bytes per id in memory (16 in the order, about 29 in the map),
//! 16 bytes per id in a snapshot or the checkpoint, and 16 bytes for a session that never took
//! an identified append. Two different ids collide with probability
//! 2^-128 per pair.

use std::collections::{HashMap, VecDeque};

/// The default [`crate::Options::idempotency_window`].
pub const IDEMPOTENCY_WINDOW_DEFAULT: usize = 4096;
/// The largest [`crate::Options::idempotency_window`]: a full window's snapshot is 1 MiB.
pub const IDEMPOTENCY_WINDOW_MAX: usize = 1 << 16;
/// Most bytes a message or batch id may have.
pub const MESSAGE_ID_MAX_BYTES: usize = 1024;

/// The digest the window keeps for an id: the first 16 bytes of its BLAKE3 hash, domain
/// separated, little-endian.
pub fn id_digest(id: &str) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sessionlog message id\0");
    hasher.update(id.as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// The last `cap` ids entered, oldest first. A session that never took an identified append
/// pays 16 bytes for it: the digests live behind a box made on the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdWindow {
    cap: usize,
    held: Option<Box<Held>>,
}

/// The digests of a window that holds some.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Held {
    /// The digests in the window, oldest first.
    order: VecDeque<u128>,
    /// Each digest in the window, with the position (counted from the first id ever entered)
    /// of its newest entry: an id entered twice (possible when the window was smaller when it
    /// came again) stays in the window until its newest entry leaves.
    newest: HashMap<u128, u64>,
    /// The position of `order`'s first digest.
    first: u64,
}

impl IdWindow {
    /// An empty window that keeps at most `cap` ids (0 keeps none).
    pub fn new(cap: usize) -> IdWindow {
        IdWindow { cap, held: None }
    }

    /// True when the window holds `digest`.
    pub fn contains(&self, digest: u128) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.newest.contains_key(&digest))
    }

    /// Enters `digest` as the newest id, forgetting the oldest if the window is full.
    pub fn push(&mut self, digest: u128) {
        if self.cap == 0 {
            return;
        }
        let held = self.held.get_or_insert_with(Box::default);
        let position = held.first + held.order.len() as u64;
        held.order.push_back(digest);
        held.newest.insert(digest, position);
        while held.order.len() > self.cap {
            let Some(oldest) = held.order.pop_front() else {
                break;
            };
            if held.newest.get(&oldest) == Some(&held.first) {
                held.newest.remove(&oldest);
            }
            held.first += 1;
        }
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.held = None;
    }

    /// Replaces the window's ids with `digests` (oldest first), keeping the last `cap`.
    pub fn replace(&mut self, digests: &[u128]) {
        self.clear();
        let from = digests.len().saturating_sub(self.cap);
        for digest in &digests[from..] {
            self.push(*digest);
        }
    }

    /// The ids, oldest first.
    pub fn digests(&self) -> impl Iterator<Item = u128> + '_ {
        self.held.iter().flat_map(|held| held.order.iter().copied())
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_leaves_when_the_window_is_full() {
        let mut window = IdWindow::new(3);
        for id in ["a", "b", "c"] {
            window.push(id_digest(id));
        }
        assert!(window.contains(id_digest("a")));
        window.push(id_digest("d"));
        assert!(!window.contains(id_digest("a")));
        assert!(window.contains(id_digest("b")) && window.contains(id_digest("d")));
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn an_id_entered_twice_stays_until_its_newest_entry_leaves() {
        let mut window = IdWindow::new(3);
        for id in ["a", "b", "a"] {
            window.push(id_digest(id));
        }
        window.push(id_digest("c")); // the first "a" leaves
        assert!(window.contains(id_digest("a")));
        window.push(id_digest("d"));
        window.push(id_digest("e")); // the second "a" leaves
        assert!(!window.contains(id_digest("a")));
    }

    #[test]
    fn a_window_of_zero_keeps_nothing() {
        let mut window = IdWindow::new(0);
        window.push(id_digest("a"));
        window.replace(&[id_digest("b")]);
        assert_eq!(window.len(), 0);
        assert!(!window.contains(id_digest("a")) && !window.contains(id_digest("b")));
    }

    #[test]
    fn replace_keeps_the_newest() {
        let mut window = IdWindow::new(2);
        let digests: Vec<u128> = ["a", "b", "c"].map(id_digest).to_vec();
        window.replace(&digests);
        assert_eq!(window.digests().collect::<Vec<_>>(), digests[1..].to_vec());
    }

    #[test]
    fn digests_differ_by_id_and_are_stable() {
        assert_ne!(id_digest("a"), id_digest("b"));
        assert_eq!(id_digest("a"), id_digest("a"));
    }
}
