//! [`Events`]: every session's cursor merged into one stream in commit order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::Arc;

use crate::erasures::Logged;
use crate::error::{Error, Result};
use crate::event::{EventFilter, EventKind, LogEvent};
use crate::fs::FileSystem;
use crate::keyring::{self, Keyring};
use crate::projection::to_time;

use super::cursor::{history_key, readable_histories, Cursor};

/// Events of many sessions merged in sequence-number order.
pub struct Events {
    cursors: Vec<Cursor>,
    /// The erasure log's events (see `erasures.rs`), in order, the filter already applied.
    erased: std::collections::VecDeque<LogEvent>,
    /// Each cursor's next event, keyed by sequence number.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    pending: Vec<Option<LogEvent>>,
    filter: EventFilter,
    /// Events above this were written after the iterator was made and are not returned.
    cut: u64,
    failed: bool,
    /// An error met while reading ahead, returned after the event read before it.
    error: Option<Error>,
    /// Keeps compaction from removing files while the iterator lives.
    guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Events {
    pub(crate) fn new(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        filter: EventFilter,
        cut: u64,
        keys: Option<&Keyring>,
    ) -> Result<Events> {
        let erased = match &filter.session {
            Some(_) => Default::default(), // an erasure names no session
            None => crate::erasures::read(&*fs, dir)?
                .erasures
                .into_iter()
                .filter(|e| e.seq <= cut)
                .map(|e| LogEvent {
                    seq: e.seq,
                    time: to_time(e.ts_micros),
                    session: String::new(),
                    kind: match e.what {
                        Logged::Session(session_id) => EventKind::Erased {
                            session_id,
                            whole_session: true,
                        },
                        Logged::History(session_id) => EventKind::Erased {
                            session_id,
                            whole_session: false,
                        },
                        Logged::Gap(from) => EventKind::Gap {
                            from,
                            to: e.seq - 1,
                        },
                    },
                })
                .filter(|e| filter.admits(e.seq, e.time))
                .collect(),
        };
        let mut events = Events {
            erased,
            cursors: Vec::new(),
            heads: BinaryHeap::new(),
            pending: Vec::new(),
            filter,
            cut,
            failed: false,
            error: None,
            guard: None,
        };
        for (id, segments) in readable_histories(&*fs, dir, keys)? {
            if let Some(wanted) = &events.filter.session {
                // Another session's damage (or missing key) must not stop this one's reading.
                let key = keyring::data_key(keys, id).ok().flatten();
                if history_key(&*fs, &segments, key.as_deref()).as_ref() != Some(wanted) {
                    continue;
                }
            }
            let key = keyring::data_key(keys, id)?;
            let cursor = Cursor::new(Arc::clone(&fs), id, key, segments)?;
            events.cursors.push(cursor);
            events.pending.push(None);
        }
        for index in 0..events.cursors.len() {
            events.advance(index)?;
        }
        Ok(events)
    }

    pub(crate) fn hold(&mut self, guard: Box<dyn std::any::Any + Send + Sync>) {
        self.guard = Some(guard);
    }

    /// Reads cursor `index`'s next event into `pending` and the heap.
    pub(super) fn advance(&mut self, index: usize) -> Result<()> {
        if let Some(event) = self.cursors[index].next_event(self.cut)? {
            self.heads.push(Reverse((event.seq, index)));
            self.pending[index] = Some(event);
        }
        Ok(())
    }
}

impl Iterator for Events {
    type Item = Result<LogEvent>;

    fn next(&mut self) -> Option<Result<LogEvent>> {
        while !self.failed {
            if let Some(e) = self.error.take() {
                self.failed = true;
                return Some(Err(e));
            }
            let next_logged = self.heads.peek().map(|Reverse((seq, _))| *seq);
            if self
                .erased
                .front()
                .is_some_and(|e| next_logged.is_none_or(|seq| e.seq < seq))
            {
                return self.erased.pop_front().map(Ok);
            }
            let Reverse((_, index)) = self.heads.pop()?;
            let event = self.pending[index].take()?;
            if let Err(e) = self.advance(index) {
                // The event in hand is sound: return it, and the error next.
                self.error = Some(e);
            }
            if self.filter.admits(event.seq, event.time) {
                return Some(Ok(event));
            }
        }
        None
    }
}
