//! Live events for subscribers: every write takes its sequence number from the [`Feed`] and
//! hands its event back once it is committed (or failed), and the feed passes committed events
//! to subscribers in sequence-number order, each exactly once.
//!
//! Writers of different sessions commit concurrently, so event 11 may be acknowledged before
//! event 10. The feed holds an event back until every lower sequence number is resolved,
//! then delivers the run. A write that fails resolves its number with no event, so a failed
//! write never stalls the feed.
//!
//! A [`Subscription`] starts with a catch-up from the log ([`crate::LogStore::events`]) up to
//! the sequence number at which it registered, then reads live events from its channel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::event::{EventKind, LogEvent};
use crate::history::Events;
use crate::projection::to_time;

/// Sequence numbers and the subscribers of committed events.
pub(crate) struct Feed {
    /// The next sequence number to hand out.
    next_seq: AtomicU64,
    state: Mutex<FeedState>,
    /// Signalled whenever a sequence number is resolved.
    resolved: Condvar,
}

#[derive(Default)]
struct FeedState {
    /// Numbers handed out and not yet resolved.
    in_flight: BTreeSet<u64>,
    /// Committed events waiting for a lower number to resolve (kept only while there are
    /// subscribers).
    ready: BTreeMap<u64, Delivery>,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    /// The first sequence number this subscriber takes from the feed.
    from: u64,
    sender: Sender<Delivery>,
}

/// A sequence number taken for a write. Dropping it unresolved (the write failed) resolves it
/// with no event.
pub(crate) struct Ticket<'a> {
    feed: &'a Feed,
    seq: u64,
    /// A subscriber was registered when the number was taken. One registered later starts
    /// after this number, so it is never owed this event.
    wanted: bool,
    resolved: bool,
}

impl Ticket<'_> {
    /// The number taken.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// True when a subscriber may want this write's event: build it only then.
    pub(crate) fn wanted(&self) -> bool {
        self.wanted
    }

    /// The write committed: hand its event (if built) to the subscribers.
    pub(crate) fn commit(mut self, event: Option<Delivery>) {
        self.resolved = true;
        self.feed.resolve(self.seq, event);
    }

    /// The write committed at `ts_micros`: hand the event `kind` of `session` (empty for a
    /// store-wide one) to the subscribers, under this ticket's number.
    pub(crate) fn commit_event(self, ts_micros: i64, session: String, kind: EventKind) {
        let event = LogEvent {
            seq: self.seq,
            time: to_time(ts_micros),
            session,
            kind,
        };
        self.commit(Some(Delivery::Event(event)));
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.feed.resolve(self.seq, None);
        }
    }
}

impl Feed {
    /// A feed whose first number is `next_seq`.
    pub(crate) fn new(next_seq: u64) -> Feed {
        Feed {
            next_seq: AtomicU64::new(next_seq),
            state: Mutex::new(FeedState::default()),
            resolved: Condvar::new(),
        }
    }

    /// The next number to hand out.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Every number below this one is resolved: its record is written (or its write failed).
    pub(crate) fn committed_below(&self) -> u64 {
        let state = self.state.lock();
        let next = self.next_seq();
        state
            .in_flight
            .first()
            .map_or(next, |&first| first.min(next))
    }

    /// Takes the next sequence number for a write.
    pub(crate) fn take(&self) -> Ticket<'_> {
        let mut state = self.state.lock();
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        state.in_flight.insert(seq);
        Ticket {
            feed: self,
            seq,
            wanted: !state.subscribers.is_empty(),
            resolved: false,
        }
    }

    fn resolve(&self, seq: u64, event: Option<Delivery>) {
        let mut state = self.state.lock();
        state.in_flight.remove(&seq);
        if !state.subscribers.is_empty() {
            if let Some(event) = event {
                state.ready.insert(seq, event);
            }
        }
        // Deliver every ready event below the lowest number still in flight.
        let floor = state.in_flight.first().copied().unwrap_or(u64::MAX);
        while let Some(entry) = state.ready.first_entry() {
            if *entry.key() >= floor {
                break;
            }
            let (seq, event) = entry.remove_entry();
            state.subscribers.retain(|s| {
                // A subscriber whose receiver is gone is dropped.
                s.from > seq || s.sender.send(event.clone()).is_ok()
            });
        }
        if state.subscribers.is_empty() {
            state.ready.clear();
        }
        drop(state);
        self.resolved.notify_all();
    }

    /// Registers a subscriber for every event from the next sequence number on (and from
    /// `at_least` on), waits until every lower number is resolved (so the log holds all of
    /// them), and returns that number and the subscriber's channel.
    pub(crate) fn register(&self, at_least: u64) -> (u64, Receiver<Delivery>) {
        let (sender, receiver) = mpsc::channel();
        let mut state = self.state.lock();
        let from = self.next_seq().max(at_least);
        state.subscribers.push(Subscriber { from, sender });
        let next = self.next_seq();
        while state.in_flight.first().is_some_and(|&seq| seq < next) {
            self.resolved.wait(&mut state);
        }
        (from, receiver)
    }
}

/// What [`Subscription::recv`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The next event, in sequence-number order.
    Event(LogEvent),
    /// Every event committed before the subscription began has been delivered; what follows
    /// is live. Sent once.
    CaughtUp,
    /// Event `seq` was committed, but its description could not be built (the message an
    /// `update_last` or `remove_last` replaced could not be read back: see
    /// [`crate::LogStore::verify`]). [`crate::LogStore::events`] reads it from the log.
    Missed {
        /// The event's sequence number.
        seq: u64,
        /// Why it could not be described.
        reason: String,
    },
}

/// A catch-up subscription from [`crate::LogStore::subscribe`]: every event after a given
/// sequence number, then new events as they commit, each exactly once, in order.
///
/// Live events wait in an unbounded queue until read, so a subscriber that stops reading
/// holds memory; drop the subscription to end it. Once the store is dropped, the subscription
/// ends (`Ok(None)`) after the events already queued.
pub struct Subscription {
    catch_up: Option<Events>,
    /// The first live sequence number; `catch_up` returns everything before it.
    live_from: u64,
    live: Receiver<Delivery>,
    caught_up_sent: bool,
    closed: bool,
}

impl Subscription {
    pub(crate) fn new(catch_up: Events, live_from: u64, live: Receiver<Delivery>) -> Self {
        Subscription {
            catch_up: Some(catch_up),
            live_from,
            live,
            caught_up_sent: false,
            closed: false,
        }
    }

    /// The first sequence number delivered live rather than read from the log.
    pub fn live_from(&self) -> u64 {
        self.live_from
    }

    /// The next delivery, waiting for a live event as long as it takes. `Ok(None)` once the
    /// store is closed and every queued event was read. An error reading the log during
    /// catch-up ends the catch-up with that error.
    pub fn recv(&mut self) -> Result<Option<Delivery>> {
        self.next_before(None)
    }

    /// Like [`Subscription::recv`], but gives up after `timeout` without a live event:
    /// `Ok(None)` then too ([`Subscription::is_closed`] tells the two apart; call again to
    /// keep waiting).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        self.next_before(Some(Instant::now() + timeout))
    }

    /// True once the store was closed and every queued event was read.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn next_before(&mut self, deadline: Option<Instant>) -> Result<Option<Delivery>> {
        if let Some(catch_up) = &mut self.catch_up {
            match catch_up.next() {
                Some(Ok(event)) => return Ok(Some(Delivery::Event(event))),
                Some(Err(e)) => {
                    // The catch-up cannot go on, so nothing after it would be "every event":
                    // the subscription ends here.
                    self.catch_up = None;
                    self.caught_up_sent = true;
                    self.closed = true;
                    return Err(e);
                }
                None => self.catch_up = None,
            }
        }
        if self.closed {
            return Ok(None);
        }
        if !self.caught_up_sent {
            self.caught_up_sent = true;
            return Ok(Some(Delivery::CaughtUp));
        }
        let received = match deadline {
            None => self.live.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => self
                .live
                .recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(delivery) => Ok(Some(delivery)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Ok(None)
            }
        }
    }
}
