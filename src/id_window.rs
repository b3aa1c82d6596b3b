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
//! the ids' length: at most 66 bytes per id in memory once full (16 in the order, 2 x 25 for
//! the map's buckets; 264 KiB for a full window of 4,096), about 70 for a few dozen ids, 16
//! bytes per id in a snapshot or the checkpoint, and 16 bytes for a session that never took an
//! identified append. Two different ids collide with probability 2^-128 per pair.

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
#[derive(Debug, Clone)]
pub struct IdWindow {
    cap: usize,
    held: Option<Box<Held>>,
}

/// The digests of a window that holds some.
#[derive(Debug, Clone, Default)]
struct Held {
    /// The digests in the window, oldest first.
    order: VecDeque<u128>,
    /// How many times each digest is in `order` (an id can be entered twice, when the window
    /// was smaller when it came again): it stays in the window until its newest entry leaves.
    /// Keyed by the digest's two halves, so that an entry takes 24 bytes, not the 32 a `u128`
    /// key's alignment would make it.
    count: HashMap<[u64; 2], u32>,
}

/// The map's key for `digest`.
fn halves(digest: u128) -> [u64; 2] {
    [digest as u64, (digest >> 64) as u64]
}

impl PartialEq for IdWindow {
    /// Two windows are equal when they keep the same number of ids and hold the same ones in
    /// the same order (however their memory was reserved).
    fn eq(&self, other: &IdWindow) -> bool {
        self.cap == other.cap && self.digests().eq(other.digests())
    }
}

impl Eq for IdWindow {}

impl IdWindow {
    /// An empty window that keeps at most `cap` ids (0 keeps none).
    pub fn new(cap: usize) -> IdWindow {
        IdWindow { cap, held: None }
    }

    /// How many ids it keeps at most.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// True when the window holds `digest`.
    pub fn contains(&self, digest: u128) -> bool {
        self.held
            .as_ref()
            .is_some_and(|held| held.count.contains_key(&halves(digest)))
    }

    /// Enters `digest` as the newest id, forgetting the oldest first if the window is full (so
    /// that neither the order nor the map ever holds more than `cap`, and neither grows past
    /// the size `cap` needs).
    pub fn push(&mut self, digest: u128) {
        if self.cap == 0 {
            return;
        }
        let held = self.held.get_or_insert_with(Box::default);
        while held.order.len() >= self.cap {
            let Some(oldest) = held.order.pop_front() else {
                break;
            };
            let key = halves(oldest);
            if let Some(n) = held.count.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    held.count.remove(&key);
                }
            }
        }
        held.order.push_back(digest);
        *held.count.entry(halves(digest)).or_insert(0) += 1;
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

    /// The heap bytes the window has reserved, counted from its collections' capacities: the
    /// box, 16 bytes per slot of the order, and per bucket of the map its 24-byte entry and
    /// control byte (a hash table keeps at least an eighth of its buckets free, rounded up to a
    /// power of two).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |held| {
            let buckets = if held.count.capacity() == 0 {
                0
            } else {
                (held.count.capacity() * 8 / 7).next_power_of_two()
            };
            std::mem::size_of::<Held>()
                + held.order.capacity() * std::mem::size_of::<u128>()
                + buckets * (std::mem::size_of::<([u64; 2], u32)>() + 1)
        })
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
    fn a_full_window_stays_within_its_reserved_size() {
        let cap = IDEMPOTENCY_WINDOW_DEFAULT;
        let mut window = IdWindow::new(cap);
        let mut most = 0;
        for i in 0..3 * cap {
            window.push(id_digest(&i.to_string()));
            most = most.max(window.heap_bytes());
        }
        assert_eq!(window.len(), cap);
        // The order never reserves more than the next power of two of `cap` slots, the map
        // never more buckets than `cap` entries need: 16 + 2 * 25 bytes an id for 4,096.
        assert_eq!(window.held.as_ref().unwrap().order.capacity(), cap);
        assert!(
            most <= cap * (16 + 2 * 25) + 256,
            "{most} bytes for {cap} ids"
        );
    }

    #[test]
    fn windows_with_the_same_ids_are_equal_however_they_grew() {
        let mut grown = IdWindow::new(3);
        for id in ["a", "b", "c", "d"] {
            grown.push(id_digest(id));
        }
        let mut replaced = IdWindow::new(3);
        replaced.replace(&["b", "c", "d"].map(id_digest));
        assert_eq!(grown, replaced);
        assert_ne!(grown, IdWindow::new(3));
    }

    #[test]
    fn digests_differ_by_id_and_are_stable() {
        assert_ne!(id_digest("a"), id_digest("b"));
        assert_eq!(id_digest("a"), id_digest("a"));
    }
}
