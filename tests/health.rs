//! Errors the store cannot return are not silent: a read that fails behind `load`,
//! `load_with_timestamps`, `load_tail` or `search` answers empty as the trait demands, but is
//! counted in `LogStore::health()`, logged as a `tracing` event of target `sessionlog`, and
//! returned by `read_messages` and `read_tail`. A failed write shows as `poisoned`.

mod common;

use std::sync::{Arc, Mutex};

use common::SIM_DIR;
use sessionlog::testing::{FaultyFs, FsOp, SimFs, EIO};
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend, SessionQuery};

/// A `tracing` subscriber that keeps the target and message of every event.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<(String, String)>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        let target = event.metadata().target().to_owned();
        self.0.lock().unwrap().push((target, message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A store with two messages in "k", whose next file operation fails.
fn store_failing_next() -> (LogStore, FaultyFs) {
    let fs = FaultyFs::new(Arc::new(SimFs::new()));
    let options = Options {
        open_files_max: 1,
        ..Options::with_durability(Durability::Always)
    };
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(fs.clone())).unwrap();
    store
        .append("k", &ChatMessage::user("find the cabin"))
        .unwrap();
    store
        .append("k", &ChatMessage::assistant("three are free"))
        .unwrap();
    assert_eq!(store.health(), sessionlog::Health::default());
    (store, fs)
}

#[test]
fn a_read_that_fails_behind_load_is_counted_logged_and_returned_elsewhere() {
    let (store, fs) = store_failing_next();
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        fs.fail_at(0, EIO);
        assert!(store.load("k").is_empty());
        assert!(fs.failed().is_some());
    });
    // The metadata still counts the messages the read could not deliver.
    assert_eq!(store.get_session_metadata("k").unwrap().message_count, 2);
    let health = store.health();
    assert_eq!(health.read_errors, 1);
    assert!(!health.poisoned);
    let last = health.last_error.unwrap();
    assert!(last.contains("load") && last.contains("\"k\""), "{last}");
    let events = recorder.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "sessionlog");
    assert!(events[0].1.contains("load of session \"k\""), "{events:?}");

    // Each API that can return the error does; each that cannot counts it.
    fs.fail_at(0, EIO);
    assert!(store.read_messages("k").is_err());
    fs.fail_at(0, EIO);
    assert!(store.read_tail("k", 1).is_err());
    fs.fail_at(0, EIO);
    assert!(store.load_tail("k", 1).is_empty());
    fs.fail_at(0, EIO);
    assert!(store.load_with_timestamps("k").is_empty());
    fs.fail_at(0, EIO);
    let query = SessionQuery {
        keyword: Some("cabin".into()),
        ..SessionQuery::default()
    };
    assert!(store.search(&query).is_empty());
    assert_eq!(store.health().read_errors, 4);
    // Nothing failing: every answer is whole again.
    assert_eq!(store.load("k").len(), 2);
    assert_eq!(store.search(&query).len(), 1);
    assert_eq!(store.health().read_errors, 4);
}

#[test]
fn a_failed_write_shows_as_poisoned() {
    let (store, fs) = store_failing_next();
    // "k"'s segment is open: the next operation is the append's write.
    fs.fail_at(0, EIO);
    assert!(store.append("k", &ChatMessage::user("lost")).is_err());
    assert_eq!(fs.failed(), Some(FsOp::Write));
    let health = store.health();
    assert!(health.poisoned);
    assert_eq!(health.read_errors, 0);
}
