//! The audit readers hold up where the store's own open does: a torn tail or a half-created
//! segment ends a history instead of failing it, another session's damage does not stop a
//! filtered read, a failed catch-up ends a subscription, a subscriber never makes a write
//! fail, and archived history survives a power loss without `Durability::Always`.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sessionlog::testing::SimFs;
use sessionlog::{
    ChatMessage, Delivery, Durability, EventFilter, LogEvent, LogStore, Options, SessionBackend,
};

fn all(store: &LogStore, filter: EventFilter) -> sessionlog::Result<Vec<LogEvent>> {
    store.events(filter)?.collect()
}

#[test]
fn a_torn_tail_or_a_half_created_segment_ends_the_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_fast(dir.path());
        fill(&store, "k", "m", 5);
    }
    let seg = segments(dir.path())[0].clone();
    // A crash left zero fill and a partial header after the last record.
    let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&[0; 300]).unwrap();
    file.write_all(&[7, 0, 0, 0, 1, 2]).unwrap();
    // And the next segment was created but its header never written.
    std::fs::File::create(seg.with_file_name("0000000000000001-00000002.seg")).unwrap();

    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(all(&reader, EventFilter::all()).unwrap().len(), 5);
    assert_eq!(reader.load_at("k", 5).unwrap().unwrap().messages.len(), 5);
    let report = reader.verify().unwrap();
    assert!(
        report.is_sound(),
        "a torn tail is not damage: {:?}",
        report.problems
    );
}

#[test]
fn another_sessions_damage_does_not_stop_a_filtered_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_fast(dir.path());
        fill(&store, "good", "m", 3);
        fill(&store, "bad", "m", 3);
    }
    let bad = segments(dir.path())
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().windows(3).any(|w| w == b"bad"))
        .unwrap();
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[0] = b'X'; // its header's magic
    std::fs::write(&bad, &bytes).unwrap();

    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(all(&reader, EventFilter::session("good")).unwrap().len(), 3);
    assert_eq!(
        reader.load_at("good", 99).unwrap().unwrap().messages.len(),
        3
    );
    assert!(
        all(&reader, EventFilter::all()).is_err(),
        "the full log is not whole"
    );
    let report = reader.verify().unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].path, bad);
}

#[test]
fn a_catch_up_that_fails_ends_the_subscription() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_fast(dir.path());
        fill(&store, "k", "message", 5);
    }
    let seg = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(9).position(|w| w == b"message 1").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    let mut sub = reader.subscribe(0).unwrap();
    assert!(matches!(sub.recv().unwrap(), Some(Delivery::Event(_))));
    assert!(sub.recv().is_err(), "the damaged record");
    assert_eq!(
        sub.recv().unwrap(),
        None,
        "no CaughtUp after a failed catch-up"
    );
    assert!(sub.is_closed());
}

#[test]
fn a_subscription_from_beyond_the_last_event_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "k", "m", 2);
    let mut sub = store.subscribe(store.last_seq() + 2).unwrap();
    assert_eq!(sub.recv().unwrap(), Some(Delivery::CaughtUp));
    fill(&store, "k", "n", 4);
    let seqs: Vec<u64> = (0..2)
        .map(
            |_| match sub.recv_timeout(Duration::from_secs(10)).unwrap() {
                Some(Delivery::Event(e)) => e.seq,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(seqs, [5, 6]);
}

#[test]
fn a_subscriber_never_makes_a_write_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("k", &user("original")).unwrap();
    let mut sub = store.subscribe(store.last_seq()).unwrap();
    assert_eq!(sub.recv().unwrap(), Some(Delivery::CaughtUp));
    // Damage at rest in the record update_last replaces.
    let seg = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(8).position(|w| w == b"original").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(store
        .update_last("k", &ChatMessage::assistant("replaced"))
        .unwrap());
    match sub.recv_timeout(Duration::from_secs(10)).unwrap() {
        Some(Delivery::Missed { seq, reason }) => {
            assert_eq!(seq, store.last_seq());
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Missed, got {other:?}"),
    }
    assert_eq!(store.load("k"), vec![ChatMessage::assistant("replaced")]);
}

/// Without `Durability::Always`, a compaction syncs the segments it replaces before
/// `keep_history` archives them, so the archive holds the records the new generation links to.
#[test]
fn archived_history_survives_a_power_loss_without_always() {
    for durability in [
        Durability::Never,
        Durability::Interval(Duration::from_secs(3600)),
    ] {
        let fs = SimFs::new();
        let options = Options {
            durability,
            keep_history: true,
            auto_compact: false,
            ..Options::default()
        };
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        for i in 0..5 {
            store.append("k", &user(&format!("m{i}"))).unwrap();
        }
        store.update_last("k", &user("edited")).unwrap();
        store.compact_session("k").unwrap();
        store.append("gone", &user("x")).unwrap();
        store.delete_session("gone").unwrap();
        drop(store);
        fs.crash(None);
        let store = LogStore::open_with_fs("/s", options, Arc::new(fs.clone())).unwrap();
        assert_eq!(store.load("k").len(), 5);
        let report = store.verify().unwrap();
        assert!(report.is_sound(), "{durability:?}: {:?}", report.problems);
        let events = all(&store, EventFilter::session("gone")).unwrap();
        assert_eq!(
            events.len(),
            2,
            "{durability:?}: the archived delete is there"
        );
    }
}
