//! What the search index covers of each session, and the index's state file (`index/STATE`):
//! the runs that make up the index and, per session, the last event indexed, the version of
//! each position's doc, and where its last two messages lie (to tell an append from a
//! rewrite without reading the log). `docs/FORMAT.md`, "The search index", has the bytes.

use std::collections::HashMap;

use crate::bytes::{Reader, Writer};
use crate::location::MessageLoc;
use crate::parked::{decode_locs, encode_loc, LOC_BYTES};

/// First bytes of `index/STATE`.
pub const STATE_MAGIC: &[u8; 8] = b"SLIXSTAT";
/// The state file's version.
pub const STATE_VERSION: u32 = 1;

/// What the index holds of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The session's last event the index reflects.
    pub last_seq: u64,
    /// The version the next indexing of the session gets.
    pub next_version: u32,
    /// For each live position indexed: the version of its current doc and the doc's length.
    pub positions: Vec<(u32, u32)>,
    /// The version and length of the doc of the session's key and name (version 0: none).
    pub meta: (u32, u32),
    /// Where the messages at the last two positions indexed lie (older first).
    pub tail: Vec<MessageLoc>,
    /// Where the first message indexed lies (none when there was none).
    pub first: Option<MessageLoc>,
}

impl Coverage {
    /// The current version of the doc at `position`, if any.
    pub fn version_at(&self, position: u32) -> Option<u32> {
        if position == super::run::META_POSITION {
            return (self.meta.0 != 0).then_some(self.meta.0);
        }
        self.positions.get(position as usize).map(|p| p.0)
    }

    /// How many of `messages` (a session's live messages now) the index already holds as
    /// they are: all it indexed when its last message is still at its place (nothing before it
    /// can have changed: a location is never reused in a session, and every change but an
    /// append, a replacement or a removal of the last message moves or drops that message);
    /// all but the last when the one before is (the last was replaced or removed); else none;
    /// and always none unless the first message is in place too (a trim and an undo between
    /// two catch-ups can leave the last in place with others moved in front of it).
    /// (The index is saved only once what it covers is durable, so no crash takes back a
    /// location it holds.)
    ///
    /// None when the session's last event is older than the last one indexed: its log went
    /// back (files restored from a backup, say), and a location may then have been reused.
    pub fn kept(&self, messages: &[MessageLoc], last_seq: u64) -> usize {
        if last_seq < self.last_seq {
            return 0;
        }
        let n = self.positions.len();
        // A retention trim and an undo between two catch-ups can leave the last message in
        // place with others moved in front of it: the first must be in place too.
        if messages.first() != self.first.as_ref() {
            return 0;
        }
        let at = |position: usize, loc: &MessageLoc| messages.get(position) == Some(loc);
        match self.tail.as_slice() {
            [.., last] if n >= 1 && at(n - 1, last) => n,
            [before, _] if n >= 2 && at(n - 2, before) => n - 1,
            _ => 0,
        }
    }

    /// Drops every doc of the session (none is current any more), keeping its version count.
    pub fn clear(&mut self) {
        *self = Coverage {
            next_version: self.next_version,
            ..Coverage::default()
        };
    }

    /// True when no doc of the session is current.
    pub fn is_gone(&self) -> bool {
        self.positions.is_empty() && self.meta.0 == 0
    }

    /// Total length of the session's current message docs.
    pub fn tokens(&self) -> u64 {
        self.positions.iter().map(|p| u64::from(p.1)).sum()
    }
}

/// The index's state as `index/STATE` holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The hash of the term key's check value: an index of another key is not read.
    pub key_check: u64,
    /// The store's last sequence number when the index last caught up.
    pub covered_seq: u64,
    /// The number the next run gets.
    pub next_run: u64,
    /// The runs, oldest first.
    pub runs: Vec<u64>,
    /// Every session the index covers, by id.
    pub sessions: HashMap<u64, Coverage>,
}

impl State {
    /// The state's bytes: magic, version, key check, covered sequence number, next run, the
    /// runs, the sessions, and a CRC-32 of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(STATE_MAGIC);
        w.u32(STATE_VERSION);
        w.u64(self.key_check);
        w.u64(self.covered_seq);
        w.u64(self.next_run);
        w.u32(self.runs.len() as u32);
        for run in &self.runs {
            w.u64(*run);
        }
        let mut ids: Vec<&u64> = self.sessions.keys().collect();
        ids.sort_unstable();
        w.u32(ids.len() as u32);
        for id in ids {
            let c = &self.sessions[id];
            w.u64(*id);
            w.u64(c.last_seq);
            w.u32(c.next_version);
            w.u32(c.meta.0);
            w.u32(c.meta.1);
            w.u32(c.tail.len() as u32);
            for loc in &c.tail {
                encode_loc(&mut w.0, loc);
            }
            w.u32(u32::from(c.first.is_some()));
            if let Some(loc) = &c.first {
                encode_loc(&mut w.0, loc);
            }
            w.u32(c.positions.len() as u32);
            for (version, len) in &c.positions {
                w.u32(*version);
                w.u32(*len);
            }
        }
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.0
    }

    /// The state `bytes` hold; `None` unless they are whole, of this version, and sound.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        let body = bytes.len().checked_sub(4)?;
        let crc = u32::from_le_bytes(bytes[body..].try_into().ok()?);
        if crc32fast::hash(&bytes[..body]) != crc {
            return None;
        }
        let mut c = Reader(&bytes[..body]);
        if c.take(8)? != STATE_MAGIC || c.u32()? != STATE_VERSION {
            return None;
        }
        let mut state = State {
            key_check: c.u64()?,
            covered_seq: c.u64()?,
            next_run: c.u64()?,
            ..State::default()
        };
        let runs = c.count(8)?;
        for _ in 0..runs {
            state.runs.push(c.u64()?);
        }
        // Every run named is one the store numbered before `next_run`, once: a save numbers
        // its run `next_run`, which must not be one the state still names.
        let numbered = |run: &u64| *run >= 1 && *run < state.next_run;
        let distinct = state
            .runs
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == runs;
        if state.next_run >= super::run::RUN_NUMBER_LIMIT
            || !state.runs.iter().all(numbered)
            || !distinct
        {
            return None;
        }
        let sessions = c.count(40)?; // the least a session takes
        state.sessions.reserve(sessions);
        for _ in 0..sessions {
            let id = c.u64()?;
            let mut cov = Coverage {
                last_seq: c.u64()?,
                next_version: c.u32()?,
                meta: (c.u32()?, c.u32()?),
                ..Coverage::default()
            };
            let tail = c.count(LOC_BYTES)?;
            if tail > 2 {
                return None;
            }
            cov.tail = decode_locs(c.take(tail * LOC_BYTES)?, tail).0;
            let first = c.count(LOC_BYTES)?;
            if first > 1 {
                return None;
            }
            cov.first = decode_locs(c.take(first * LOC_BYTES)?, first).0.pop();
            let positions = c.count(8)?;
            cov.positions.reserve(positions);
            for _ in 0..positions {
                cov.positions.push((c.u32()?, c.u32()?));
            }
            let versions_sound = (cov.meta.0 == 0 || cov.meta.0 < cov.next_version)
                && cov.positions.iter().all(|p| p.0 < cov.next_version);
            if !versions_sound || state.sessions.insert(id, cov).is_some() {
                return None;
            }
        }
        c.is_empty().then_some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: u32, offset: u64) -> MessageLoc {
        MessageLoc::single(segment, 40, offset, 1_000)
    }

    #[test]
    fn the_state_reads_back_and_refuses_damage() {
        let mut state = State {
            key_check: 9,
            covered_seq: 77,
            next_run: 3,
            runs: vec![1, 2],
            ..State::default()
        };
        state.sessions.insert(
            4,
            Coverage {
                last_seq: 70,
                next_version: 3,
                positions: vec![(1, 5), (2, 8)],
                meta: (2, 1),
                tail: vec![loc(1, 0), loc(1, 40)],
                first: Some(loc(1, 0)),
            },
        );
        state.sessions.insert(5, Coverage::default());
        let bytes = state.encode();
        assert_eq!(State::decode(&bytes), Some(state));
        for at in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert_eq!(State::decode(&bad), None, "flip at {at}");
        }
        assert_eq!(State::decode(&bytes[..bytes.len() - 3]), None);
    }

    #[test]
    fn a_state_whose_run_numbers_could_overflow_or_repeat_is_refused() {
        let state = |next_run: u64, runs: Vec<u64>| State {
            next_run,
            runs,
            ..State::default()
        };
        // Sound: every run numbered below the next.
        let sound = state(3, vec![1, 2]);
        assert_eq!(State::decode(&sound.encode()), Some(sound));
        for bad in [
            state(u64::MAX, vec![1]),
            state(super::super::run::RUN_NUMBER_LIMIT, vec![]),
            // The next save would write run 1 over a run the state names.
            state(1, vec![1, 2]),
            state(2, vec![0]),
            state(5, vec![2, 2]),
        ] {
            assert_eq!(State::decode(&bad.encode()), None, "{bad:?}");
        }
    }

    #[test]
    fn kept_tells_an_append_from_a_rewrite() {
        let cov = Coverage {
            positions: vec![(1, 1), (1, 1), (1, 1)],
            tail: vec![loc(1, 40), loc(1, 80)],
            first: Some(loc(1, 0)),
            next_version: 2,
            ..Coverage::default()
        };
        let now = [loc(1, 0), loc(1, 40), loc(1, 80), loc(1, 120)];
        assert_eq!(cov.kept(&now, 9), 3, "an append keeps all");
        let replaced = [loc(1, 0), loc(1, 40), loc(1, 160)];
        assert_eq!(
            cov.kept(&replaced, 9),
            2,
            "a replaced last message is indexed again"
        );
        assert_eq!(cov.kept(&now[..2], 9), 2, "a removed last message");
        let compacted = [loc(2, 0), loc(2, 40), loc(2, 80)];
        assert_eq!(cov.kept(&compacted, 9), 0);
        let trimmed_and_undone = [loc(0, 8), loc(1, 40), loc(1, 80)];
        assert_eq!(cov.kept(&trimmed_and_undone, 9), 0, "the front moved");
        assert_eq!(cov.kept(&[], 9), 0);
        let behind = Coverage {
            last_seq: 10,
            ..cov
        };
        assert_eq!(
            behind.kept(&now, 9),
            0,
            "a log that went back is indexed whole"
        );
    }
}
