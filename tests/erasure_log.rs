//! The event log records that an erasure happened, not what was erased: every reclaimed delete,
//! `erase_session` and erasing compaction leaves an `Erased` event (with its own sequence
//! number and time, and no key or message), whether the running store or open did it.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{
    Delivery, EncryptionKey, EventFilter, EventKind, Finding, LogEvent, LogStore, Options,
    SessionBackend,
};

fn all_events(store: &LogStore) -> Vec<LogEvent> {
    store
        .events(EventFilter::all())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn erasures(events: &[LogEvent]) -> Vec<(u64, bool)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Erased {
                session_id,
                whole_session,
            } => Some((session_id, whole_session)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reclaimed_delete_and_erase_session_each_leave_one_erased_event_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    store.append("secret", &user("the plan")).unwrap();
    store.append("other", &user("kept")).unwrap();
    store.append("gone-too", &user("x")).unwrap();
    // Session ids in order of creation: secret's is the lowest, gone-too's the highest.
    let ids_of_secret_and_gone_too: Vec<u64> = {
        let segs = segments(dir.path());
        let id = |p: &std::path::PathBuf| {
            u64::from_str_radix(&p.file_name().unwrap().to_str().unwrap()[..16], 16).unwrap()
        };
        vec![id(&segs[0]), id(&segs[2])]
    };
    store.delete_session("secret").unwrap();
    store.erase_session("gone-too").unwrap();
    let events = all_events(&store);
    // One erasure for each session, naming its id.
    let mut ids: Vec<u64> = erasures(&events).iter().map(|(id, _)| *id).collect();
    ids.sort();
    assert_eq!(ids, ids_of_secret_and_gone_too, "{events:?}");
    // Nothing of the erased sessions is left in the log: only the erasures, which name
    // neither their key nor their messages.
    assert!(events
        .iter()
        .all(|e| e.session != "secret" && e.session != "gone-too"));
    let erased: Vec<&LogEvent> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Erased { .. }))
        .collect();
    assert!(erased.iter().all(|e| e.session.is_empty()));
    // In sequence-number order with the rest, after everything written before them.
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let last_append = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Append { .. }))
        .map(|e| e.seq)
        .max()
        .unwrap();
    assert!(erased.iter().all(|e| e.seq > last_append));
    drop(store);
    // The log survives a reopen, and new events number on above it.
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    store.append("other", &user("after")).unwrap();
    let again = all_events(&store);
    assert_eq!(erasures(&again), erasures(&events));
    assert!(again.last().unwrap().seq > erased.last().unwrap().seq);
    assert!(matches!(
        again.last().unwrap().kind,
        EventKind::Append { .. }
    ));
}

#[test]
fn an_erasing_compaction_logs_that_the_history_went() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    store.append("k", &user("cleared away")).unwrap();
    store.clear_messages("k").unwrap();
    store.append("k", &user("kept")).unwrap();
    store.compact_session("k").unwrap();
    let events = all_events(&store);
    assert_eq!(erasures(&events).len(), 1, "{events:?}");
    assert!(!erasures(&events)[0].1, "the session lives on");
    assert_eq!(store.load("k"), vec![user("kept")]);
}

#[test]
fn open_logs_the_reclaim_of_a_delete_whose_undo_window_ended_while_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        keep_history_retaining(Duration::from_secs(3600)),
    )
    .unwrap();
    store.append("old", &user("bye")).unwrap();
    store.delete_session("old").unwrap();
    assert!(erasures(&all_events(&store)).is_empty(), "still restorable");
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    let events = all_events(&store);
    assert_eq!(erasures(&events).len(), 1, "{events:?}");
    drop(store);
    // Logged once, not again by the next open.
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    assert_eq!(erasures(&all_events(&store)).len(), 1);
}

#[test]
fn open_finishing_an_encrypted_erasure_logs_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        encryption: Some(EncryptionKey::from_bytes([9; 32])),
        ..keep_history_retaining(Duration::ZERO)
    };
    let store = LogStore::open_with(dir.path(), opts.clone()).unwrap();
    store.append("a", &user("one")).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // The state a crash leaves right after the erasure's first steps: the erasure logged
    // (sequence number 99, above every record), the marker written, the key removed.
    let keys = dir.path().join("keys");
    let key = files_named(&keys, "key").remove(0);
    let stem = key.file_stem().unwrap().to_str().unwrap().to_owned();
    let id = u64::from_str_radix(&stem, 16).unwrap();
    let mut record = Vec::new();
    record.extend_from_slice(&99u64.to_le_bytes());
    record.extend_from_slice(&0i64.to_le_bytes());
    record.extend_from_slice(&id.to_le_bytes());
    record.extend_from_slice(&0u32.to_le_bytes()); // the whole session
    let crc = crc32fast::hash(&record);
    record.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("ERASED"), &record).unwrap();
    std::fs::write(keys.join(format!("{stem}.erasing")), b"").unwrap();
    std::fs::remove_file(&key).unwrap();
    let store = LogStore::open_with(dir.path(), opts.clone()).unwrap();
    assert!(store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::ErasureFinished { .. })));
    // Finished, and logged once: the record the erasure wrote before the crash.
    assert_eq!(erasures(&all_events(&store)), vec![(id, true)]);
    assert_eq!(all_events(&store).last().unwrap().seq, 99);
    assert!(segments(dir.path()).is_empty());
    drop(store);
    let store = LogStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(erasures(&all_events(&store)), vec![(id, true)]);
    store.append("b", &user("later")).unwrap();
    assert!(all_events(&store).last().unwrap().seq > 99);
}

#[test]
fn a_torn_erasure_record_is_kept_aside_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    store.append("a", &user("x")).unwrap();
    store.append("b", &user("y")).unwrap();
    store.delete_session("a").unwrap();
    drop(store);
    let log = dir.path().join("ERASED");
    let mut bytes = std::fs::read(&log).unwrap();
    assert_eq!(bytes.len(), 32);
    bytes.extend_from_slice(&[0xAB; 11]); // a record a crash cut short
    std::fs::write(&log, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    let torn = store
        .recovery_report()
        .findings
        .iter()
        .find_map(|f| match f {
            Finding::TornTail {
                path,
                bytes,
                saved_to,
                ..
            } if path == &log => Some((*bytes, saved_to.clone())),
            _ => None,
        });
    let (cut, saved_to) = torn.expect("the torn record is reported");
    assert_eq!(cut, 11);
    assert_eq!(std::fs::read(saved_to).unwrap(), vec![0xAB; 11]);
    store.delete_session("b").unwrap();
    assert_eq!(erasures(&all_events(&store)).len(), 2);
    assert_eq!(std::fs::read(&log).unwrap().len(), 64);
    drop(store);
    // The side file is the store's own: not reported as unknown.
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn a_subscriber_is_told_of_an_erasure_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    store.append("a", &user("x")).unwrap();
    let mut subscription = store.subscribe(0).unwrap();
    // Caught up first: an erasure takes effect at once, under a reader of the erased files.
    while !matches!(subscription.recv().unwrap(), Some(Delivery::CaughtUp)) {}
    store.delete_session("a").unwrap();
    let mut kinds = Vec::new();
    while let Ok(Some(delivery)) = subscription.recv_timeout(Duration::from_secs(5)) {
        if let Delivery::Event(event) = delivery {
            let erased = matches!(event.kind, EventKind::Erased { .. });
            kinds.push(event.kind);
            if erased {
                break;
            }
        }
    }
    assert!(
        matches!(
            kinds.last(),
            Some(EventKind::Erased {
                whole_session: true,
                ..
            })
        ),
        "{kinds:?}"
    );
}

#[test]
fn an_erased_sessions_id_is_never_given_to_a_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        keep_history_retaining(Duration::from_secs(3600)),
    )
    .unwrap();
    store.append("a", &user("x")).unwrap();
    store.append("newest", &user("y")).unwrap();
    store.erase_session("newest").unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // The erased session held the highest id; the folder no longer shows it.
    let store = LogStore::open_with(
        dir.path(),
        keep_history_retaining(Duration::from_secs(3600)),
    )
    .unwrap();
    store.append("later", &user("z")).unwrap();
    store.delete_session("later").unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // Open reclaims the delete and logs it: a second erasure, of another id.
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    let erased = erasures(&all_events(&store));
    assert_eq!(erased.len(), 2, "{erased:?}");
    assert_ne!(erased[0].0, erased[1].0);
}

#[test]
fn a_damaged_erasure_record_is_reported_and_skipped_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    for key in ["a", "b", "c", "d", "keep"] {
        store.append(key, &user("x")).unwrap();
    }
    for key in ["a", "b", "c"] {
        store.delete_session(key).unwrap();
    }
    drop(store);
    let log = dir.path().join("ERASED");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[32 + 5] ^= 0x10; // the second record
    std::fs::write(&log, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    let damaged = store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::Damaged { path, offset: 32, .. } if path == &log));
    assert!(damaged, "{:?}", store.recovery_report());
    assert_eq!(erasures(&all_events(&store)).len(), 2);
    store.delete_session("d").unwrap();
    assert_eq!(erasures(&all_events(&store)).len(), 3);
    drop(store);
    // The damaged record stays where it was (never removed unasked); the new one follows.
    let after = std::fs::read(&log).unwrap();
    assert_eq!(after.len(), 4 * 32);
    assert_eq!(after[..96], bytes[..]);
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    assert_eq!(erasures(&all_events(&store)).len(), 3);
    assert_eq!(store.list_sessions(), vec!["keep".to_owned()]);
}
