//! Each session's anchored point, as the anchor log folds to it (`anchor/mod.rs`).

use super::Point;

/// Each session's anchored point, in order of session id (the latest anchor of a session
/// wins): a sorted list, so that open walks it beside the checkpoint's sessions, which are in
/// order of id too, without hashing either.
#[derive(Debug, Default)]
pub(crate) struct Anchored(Vec<(u64, Point)>);

impl Anchored {
    /// The points of `entries`, taken in the order the anchors were written (a later entry
    /// of a session replaces an earlier one).
    pub(super) fn fold(mut entries: Vec<(u64, Point)>) -> Anchored {
        // Stable: the entries of one session stay in the order they were written. One anchor's
        // entries are sorted already, and the sort finds that in one pass.
        entries.sort_by_key(|(id, _)| *id);
        // In place: of each session's entries the first stays, holding the last one's point.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        entries.shrink_to_fit();
        Anchored(entries)
    }

    /// Takes in `entries`, written after the points held, in the order written.
    pub(super) fn take_in(&mut self, entries: Vec<(u64, Point)>) {
        let run = Anchored::fold(entries);
        if self.0.is_empty() {
            *self = run;
        } else {
            self.merge(&run.0);
        }
    }

    /// How many sessions have a point.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every point, with those of `run` (sorted by id, each once) in place of those held, in
    /// order of id.
    pub(super) fn with(&self, run: &[(u64, Point)]) -> Vec<(u64, Point)> {
        let mut merged = Vec::with_capacity(self.0.len() + run.len());
        let (mut held, mut new) = (self.0.iter().peekable(), run.iter().peekable());
        loop {
            let next = match (held.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => held.next(),
                (None, Some(_)) => new.next(),
                (Some(a), Some(b)) => match a.0.cmp(&b.0) {
                    std::cmp::Ordering::Less => held.next(),
                    std::cmp::Ordering::Greater => new.next(),
                    std::cmp::Ordering::Equal => {
                        held.next();
                        new.next()
                    }
                },
            };
            merged.extend(next.copied());
        }
        merged
    }

    /// Session `id`'s point, if it has one.
    pub(crate) fn get(&self, id: &u64) -> Option<&Point> {
        let at = self.0.binary_search_by_key(id, |(id, _)| *id).ok()?;
        self.0.get(at).map(|(_, point)| point)
    }

    /// A lookup of points for ids that come in descending order (a checkpoint's sessions, as
    /// a store writes them): each takes a step from where the last one was, not a search.
    pub(crate) fn descending(&self) -> Descending<'_> {
        Descending {
            points: &self.0,
            end: self.0.len(),
        }
    }

    /// Every session's point, in order of id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, Point)> + '_ {
        self.0.iter().copied()
    }

    /// Takes in the points of `run` (sorted by id, each once), which replace those held.
    pub(super) fn merge(&mut self, run: &[(u64, Point)]) {
        self.0 = self.with(run);
    }
}

/// See [`Anchored::descending`].
pub(crate) struct Descending<'a> {
    points: &'a [(u64, Point)],
    /// How many points have an id at most the last one asked for.
    end: usize,
}

impl<'a> Descending<'a> {
    /// Session `id`'s point, if it has one (any order of ids is answered; a rising one is
    /// searched for).
    pub(crate) fn get(&mut self, id: u64) -> Option<&'a Point> {
        let points = self.points;
        if points.get(self.end).is_some_and(|(at, _)| *at <= id) {
            self.end = points.partition_point(|(at, _)| *at <= id);
        } else {
            while self.end > 0 && points.get(self.end - 1).is_some_and(|(at, _)| *at > id) {
                self.end -= 1;
            }
        }
        let (at, point) = points.get(self.end.checked_sub(1)?)?;
        (*at == id).then_some(point)
    }
}
