//! The live sessions ordered by last activity, most recent first, ties by key: what
//! `list_page` walks from the front, and the disk budget's retention from the back.
//!
//! It is built at its first use. The sessions hot then are in a B-tree of their slots, which
//! writes keep in order ([`ActivityIndex::relist`]). The sessions cold then (most of a store
//! just opened from a clean close's checkpoint) are a sorted list of their entries' indices
//! in the checkpoint, 4 bytes each, their keys and activity read from the entries: a million
//! sessions cost 5 MB, not a B-tree entry and a key each. A cold session that moves (a write
//! changes its activity, or it goes) is marked moved there, and enters the B-tree if it is
//! still live. Walks merge the two.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use crate::checkpoint::Cold;

use super::Slot;

/// Where a session is in the index's order: its last activity, most recent first, then its
/// key.
type Place<'a> = (Reverse<i64>, &'a str);

/// The live sessions by activity (see the module's comment).
pub(super) struct ActivityIndex {
    hot: BTreeMap<(Reverse<i64>, String), Arc<Slot>>,
    cold: Option<ColdOrder>,
}

/// The sessions that were cold when the index was built, in its order.
struct ColdOrder {
    cold: Arc<Cold>,
    /// Their entries' indices in `cold`, in the index's order.
    order: Vec<u32>,
    /// Which of `order` moved since (their activity changed, or they went).
    moved: Vec<bool>,
}

/// A session of the index: its slot, or its entry among the cold ones (a session warmed
/// since keeps this place until it moves: look it up by key).
pub(super) enum Indexed<'a> {
    Hot(&'a Arc<Slot>),
    Cold(&'a Arc<Cold>, usize),
}

/// One session as a walk of the index gives it: its last activity, key and where it is.
pub(super) type Walked<'a> = (i64, &'a str, Indexed<'a>);

impl ColdOrder {
    /// The place of the session at `pos` of `order`.
    fn place(&self, pos: usize) -> Option<Place<'_>> {
        let index = *self.order.get(pos)? as usize;
        let at = self.cold.entries.get(index)?.last_activity;
        Some((Reverse(at), self.cold.key(index)?))
    }

    /// The first position at or past `start`.
    fn first(&self, start: Bound<Place<'_>>) -> usize {
        let before = |pos: &u32, bound: &Place<'_>, or_equal: bool| {
            let index = *pos as usize;
            let place = self.cold.entries.get(index).zip(self.cold.key(index));
            place.is_some_and(|(e, key)| {
                let ord = (Reverse(e.last_activity), key).cmp(bound);
                ord == Ordering::Less || (or_equal && ord == Ordering::Equal)
            })
        };
        match start {
            Bound::Unbounded => 0,
            Bound::Included(b) => self.order.partition_point(|p| before(p, &b, false)),
            Bound::Excluded(b) => self.order.partition_point(|p| before(p, &b, true)),
        }
    }

    /// The session at `pos`, unless it moved.
    fn walked(&self, pos: usize) -> Option<Walked<'_>> {
        if self.moved.get(pos).copied().unwrap_or(true) {
            return None;
        }
        let (Reverse(at), key) = self.place(pos)?;
        Some((
            at,
            key,
            Indexed::Cold(&self.cold, *self.order.get(pos)? as usize),
        ))
    }
}

impl ActivityIndex {
    /// The index of the live `hot` sessions (each with its last activity) and of the live
    /// sessions of `cold` (their indices).
    pub(super) fn new(
        hot: impl Iterator<Item = (i64, Arc<Slot>)>,
        cold: Option<(&Arc<Cold>, impl Iterator<Item = usize>)>,
    ) -> ActivityIndex {
        let hot = hot
            .map(|(at, slot)| ((Reverse(at), slot.key.clone()), slot))
            .collect();
        let cold = cold.map(|(cold, indices)| {
            let entries = &cold.entries;
            // Sorted with the activity beside each index; keys are compared only on ties.
            let mut sorted: Vec<(Reverse<i64>, u32)> = indices
                .filter_map(|i| Some((Reverse(entries.get(i)?.last_activity), i as u32)))
                .collect();
            sorted.sort_unstable_by(|(a, i), (b, j)| {
                a.cmp(b).then_with(|| {
                    let key = |i: &u32| cold.key(*i as usize).unwrap_or_default();
                    key(i).cmp(key(j))
                })
            });
            let order: Vec<u32> = sorted.into_iter().map(|(_, i)| i).collect();
            ColdOrder {
                cold: Arc::clone(cold),
                moved: vec![false; order.len()],
                order,
            }
        });
        ActivityIndex { hot, cold }
    }

    /// True if it holds sessions that were cold when it was built (and their checkpoint's
    /// entries).
    pub(super) fn holds_cold(&self) -> bool {
        self.cold.is_some()
    }

    /// Moves `slot` from `before` to `after` (its last activity while live; `None` while not
    /// live). A session still at its cold place is marked moved there.
    pub(super) fn relist(&mut self, slot: &Arc<Slot>, before: Option<i64>, after: Option<i64>) {
        if let Some(at) = before {
            if self.hot.remove(&(Reverse(at), slot.key.clone())).is_none() {
                self.cold_moved((Reverse(at), &slot.key), slot.session_id);
            }
        }
        if let Some(at) = after {
            self.hot
                .insert((Reverse(at), slot.key.clone()), Arc::clone(slot));
        }
    }

    /// Marks the cold session of `id` at `place` moved.
    fn cold_moved(&mut self, place: Place<'_>, id: u64) {
        let Some(c) = &mut self.cold else { return };
        let pos = c.first(Bound::Included(place));
        let same = c.place(pos) == Some(place)
            && (c.order.get(pos))
                .and_then(|&i| c.cold.entries.get(i as usize))
                .is_some_and(|e| e.session_id == id);
        if same {
            if let Some(moved) = c.moved.get_mut(pos) {
                *moved = true;
            }
        }
    }

    /// The sessions from `start` on, in the index's order.
    pub(super) fn walk<'a>(
        &'a self,
        start: Bound<(i64, &'a str)>,
    ) -> impl Iterator<Item = Walked<'a>> + 'a {
        let place = |(at, key): (i64, &'a str)| (Reverse(at), key);
        let owned = |(at, key): (i64, &str)| (Reverse(at), key.to_owned());
        let hot_start = match start {
            Bound::Included(b) => Bound::Included(owned(b)),
            Bound::Excluded(b) => Bound::Excluded(owned(b)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hot = (self.hot.range((hot_start, Bound::Unbounded))).map(hot_walked);
        let cold = self.cold.iter().flat_map(move |c| {
            let from = c.first(start.map(place));
            (from..c.order.len()).filter_map(|pos| c.walked(pos))
        });
        merge(hot, cold, Ordering::Less)
    }

    /// The sessions from the least recently active on: the index's order reversed.
    pub(super) fn least_recent(&self) -> impl Iterator<Item = Walked<'_>> {
        let hot = self.hot.iter().rev().map(hot_walked);
        let cold = self
            .cold
            .iter()
            .flat_map(|c| (0..c.order.len()).rev().filter_map(|pos| c.walked(pos)));
        merge(hot, cold, Ordering::Greater)
    }
}

fn hot_walked<'a>(
    ((Reverse(at), key), slot): (&'a (Reverse<i64>, String), &'a Arc<Slot>),
) -> Walked<'a> {
    (*at, key.as_str(), Indexed::Hot(slot))
}

/// `hot` and `cold`, each in order, merged: each step takes the one whose place compares as
/// `first` to the other's. A cold session at the place of a hot one is the same session
/// (never, since it would have moved): the hot one is taken alone.
fn merge<'a>(
    hot: impl Iterator<Item = Walked<'a>>,
    cold: impl Iterator<Item = Walked<'a>>,
    first: Ordering,
) -> impl Iterator<Item = Walked<'a>> {
    let mut hot: Peekable<_> = hot.peekable();
    let mut cold: Peekable<_> = cold.peekable();
    std::iter::from_fn(move || {
        let place = |w: &Walked<'a>| (Reverse(w.0), w.1);
        let order = match (hot.peek(), cold.peek()) {
            (Some(h), Some(c)) => place(h).cmp(&place(c)),
            (Some(_), None) => first,
            (None, Some(_)) => first.reverse(),
            (None, None) => return None,
        };
        if order == Ordering::Equal {
            cold.next();
            return hot.next();
        }
        if order == first {
            hot.next()
        } else {
            cold.next()
        }
    })
}
