//! Exactly-once appends: `append_once` and `append_batch_once` write a message once per id,
//! through reopens (with and without a checkpoint), compactions and power cuts, up to the
//! window's edge; ids reach the audit log.

mod common;

use std::sync::Arc;

use common::SIM_DIR;
use sessionlog::testing::SimFs;
use sessionlog::{
    ChatMessage, Durability, EncryptionKey, Error, EventFilter, EventKind, Finding, LogStore,
    Options, SessionBackend, MESSAGE_ID_MAX_BYTES,
};

fn sim_open(fs: &SimFs, options: &Options) -> LogStore {
    LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).expect("open")
}

fn contents(store: &LogStore, key: &str) -> Vec<String> {
    store.load(key).into_iter().map(|m| m.content).collect()
}

/// What happens between two deliveries of the same messages.
#[derive(Debug, Clone, Copy)]
enum Between {
    Reopen,
    Compact,
    PowerCut,
}

/// Every message is delivered three times, with a reopen, a compaction or a power cut (under
/// `Always` and `Never`) between the copies, in another order each time: each is stored once.
#[test]
fn every_message_sent_three_times_is_stored_once() {
    let orders = [
        [Between::Reopen, Between::Compact],
        [Between::Compact, Between::PowerCut],
        [Between::PowerCut, Between::Reopen],
    ];
    for durability in [Durability::Always, Durability::Never] {
        for between in orders {
            let options = Options {
                durability,
                segment_bytes_max: 4096,
                ..Options::default()
            };
            let fs = SimFs::new();
            let mut store = sim_open(&fs, &options);
            let messages: Vec<(String, String, String)> = (0..40)
                .map(|i| {
                    let key = format!("chat-{}", i % 3);
                    (
                        key,
                        format!("message {i} {}", "x".repeat(i * 7)),
                        format!("wamid.{i}"),
                    )
                })
                .collect();
            for round in 0..3 {
                let mut order: Vec<usize> = (0..messages.len()).collect();
                if round == 1 {
                    order.reverse();
                }
                if round == 2 {
                    order.rotate_left(17);
                }
                for i in order {
                    let (key, content, id) = &messages[i];
                    let wrote = store
                        .append_once(key, &ChatMessage::user(content.as_str()), id)
                        .unwrap();
                    if round > 0 && durability == Durability::Always {
                        assert!(!wrote, "{between:?} round {round}: {id} written again");
                    }
                }
                let Some(step) = between.get(round) else {
                    break;
                };
                match step {
                    Between::Reopen => {
                        drop(store);
                        store = sim_open(&fs, &options);
                    }
                    Between::Compact => {
                        for key in store.list_sessions() {
                            store.compact_session(&key).unwrap();
                        }
                    }
                    Between::PowerCut => {
                        // The power goes before the store's drop could sync what `Never`
                        // left unsynced.
                        fs.cut_power_after(0);
                        drop(store);
                        fs.crash(Some(3));
                        store = sim_open(&fs, &options);
                    }
                }
            }
            // Under `Never` a power cut may lose copies; the next delivery writes them again.
            store.sync().unwrap();
            for key in ["chat-0", "chat-1", "chat-2"] {
                let mut held = contents(&store, key);
                let mut expected: Vec<String> = messages
                    .iter()
                    .filter(|(k, _, _)| k == key)
                    .map(|(_, c, _)| c.clone())
                    .collect();
                if durability == Durability::Always {
                    assert_eq!(held, expected, "{durability:?} {between:?}: {key}");
                }
                held.sort();
                expected.sort();
                assert_eq!(
                    held, expected,
                    "{durability:?} {between:?}: {key}, once each"
                );
            }
        }
    }
}

/// Appends ids `first..=last` to `key`, each once.
fn fill(store: &LogStore, key: &str, ids: std::ops::RangeInclusive<usize>) {
    for i in ids {
        let message = ChatMessage::user(format!("m{i}"));
        assert!(store
            .append_once(key, &message, &format!("id-{i}"))
            .unwrap());
    }
}

/// With a window of 8: after ids 1..=9, id 1 (the 9th back) is accepted again, id 2 (the 8th)
/// is not; the same after a reopen from the checkpoint, after a replay without one, and after
/// a compaction.
#[test]
fn the_window_edge_holds_through_reopen_replay_and_compaction() {
    let options = Options {
        idempotency_window: 8,
        ..Options::with_durability(Durability::Never)
    };
    let check = |store: &LogStore, key: &str, context: &str| {
        let again = ChatMessage::user("again");
        for i in 2..=9 {
            let wrote = store.append_once(key, &again, &format!("id-{i}")).unwrap();
            assert!(!wrote, "{context}: id-{i} is within the window");
        }
        assert!(
            store.append_once(key, &again, "id-1").unwrap(),
            "{context}: the 9th id back is accepted again"
        );
        // Now id-2 is the 9th back.
        assert!(store.append_once(key, &again, "id-2").unwrap(), "{context}");
        assert!(
            !store.append_once(key, &again, "id-2").unwrap(),
            "{context}"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    for (key, context) in [
        ("live", "as written"),
        ("checkpoint", "reopened from the checkpoint"),
        ("replay", "replayed without a checkpoint"),
        ("compacted", "after a compaction"),
    ] {
        fill(&store, key, 1..=9);
        if key == "live" {
            check(&store, key, context);
        }
    }
    store.compact_session("compacted").unwrap();
    check(&store, "compacted", "after a compaction");
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    assert!(store.recovery_report().from_checkpoint);
    check(&store, "checkpoint", "reopened from the checkpoint");
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    assert!(!store.recovery_report().from_checkpoint);
    check(&store, "replay", "replayed without a checkpoint");
    // A smaller window at open keeps only the newest ids.
    drop(store);
    let smaller = Options {
        idempotency_window: 2,
        ..options
    };
    let store = LogStore::open_with(dir.path(), smaller).unwrap();
    let again = ChatMessage::user("again");
    assert!(!store.append_once("live", &again, "id-2").unwrap());
    assert!(store.append_once("live", &again, "id-9").unwrap());
}

/// A store opened once with a smaller window and closed writes a checkpoint of the smaller
/// windows; a later open with the larger window does not trust it and replays, finding the ids
/// the smaller window dropped. A compaction under the smaller window forgets them for good.
#[test]
fn a_smaller_window_for_one_open_loses_no_ids_unless_it_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let window = |idempotency_window| Options {
        idempotency_window,
        ..Options::with_durability(Durability::Never)
    };
    let again = ChatMessage::user("again");
    let store = LogStore::open_with(dir.path(), window(8)).unwrap();
    fill(&store, "k", 1..=8);
    store.close().unwrap();
    // An open with a window of 2 that writes (elsewhere) and closes: its checkpoint holds 2 ids.
    let store = LogStore::open_with(dir.path(), window(2)).unwrap();
    store.append("other", &again).unwrap();
    store.close().unwrap();
    assert!(dir.path().join("CHECKPOINT").exists());
    let store = LogStore::open_with(dir.path(), window(8)).unwrap();
    let report = store.recovery_report();
    assert!(!report.from_checkpoint, "{report:?}");
    assert!(
        report.findings.iter().any(|f| matches!(f,
            Finding::CheckpointIgnored { reason } if reason.contains("idempotency_window"))),
        "{report:?}"
    );
    for i in 1..=8 {
        let id = format!("id-{i}");
        assert!(!store.append_once("k", &again, &id).unwrap(), "{id}");
    }
    store.close().unwrap();
    // The checkpoint of the larger window serves a smaller one.
    let store = LogStore::open_with(dir.path(), window(2)).unwrap();
    assert!(store.recovery_report().from_checkpoint);
    assert!(store.append_once("k", &again, "id-1").unwrap());
    // A compaction under the window of 2 keeps 2 ids: the others are forgotten for good.
    store.compact_session("k").unwrap();
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), window(8)).unwrap();
    assert!(!store.append_once("k", &again, "id-8").unwrap());
    assert!(!store.append_once("k", &again, "id-1").unwrap());
    assert!(store.append_once("k", &again, "id-7").unwrap());
}

/// A compaction writes a session's metadata and window in one record: an identified append
/// that would grow the window past what one record holds is refused, writes nothing, and the
/// session still compacts and reopens.
#[test]
fn an_id_the_snapshot_could_not_hold_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        record_bytes_max: 400,
        idempotency_window: 64,
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    let mut written = 0;
    let refused = loop {
        match store.append_once("k", &ChatMessage::user("m"), &format!("id-{written}")) {
            Ok(wrote) => {
                assert!(wrote);
                written += 1;
            }
            Err(e) => break e,
        }
        assert!(written < 64, "the window's 64 ids cannot fit in 400 bytes");
    };
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::InvalidInput,
        "{refused}"
    );
    assert!(written > 0);
    assert_eq!(store.load("k").len(), written);
    store.compact_session("k").unwrap();
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.load("k").len(), written);
    assert!(!store
        .append_once("k", &ChatMessage::user("m"), "id-0")
        .unwrap());
}

#[test]
fn a_window_of_zero_remembers_nothing_and_a_larger_one_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let too_large = Options {
        idempotency_window: sessionlog::IDEMPOTENCY_WINDOW_MAX + 1,
        ..Options::default()
    };
    assert!(matches!(
        LogStore::open_with(dir.path(), too_large),
        Err(Error::InvalidOptions { .. })
    ));
    let none = Options {
        idempotency_window: 0,
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with(dir.path(), none).unwrap();
    let m = ChatMessage::user("m");
    assert!(store.append_once("k", &m, "id").unwrap());
    assert!(store.append_once("k", &m, "id").unwrap());
    assert_eq!(store.load("k").len(), 2);
}

#[test]
fn a_batch_is_written_once_and_shares_the_window_with_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    let turn = [
        ChatMessage::assistant("calling a tool"),
        ChatMessage::new("tool", "42"),
    ];
    assert!(store.append_batch_once("k", &turn, "turn-1").unwrap());
    assert!(!store.append_batch_once("k", &turn, "turn-1").unwrap());
    let one = ChatMessage::user("one");
    assert!(!store.append_once("k", &one, "turn-1").unwrap());
    assert!(store.append_once("k", &one, "msg-1").unwrap());
    assert!(!store.append_batch_once("k", &turn, "msg-1").unwrap());
    assert_eq!(store.load("k").len(), 3);
    // An empty batch writes nothing and creates no session.
    assert!(!store.append_batch_once("empty", &[], "e").unwrap());
    assert!(!store.session_exists("empty"));
    assert!(matches!(
        store.append_batch_once("k", &vec![one; sessionlog::BATCH_MESSAGES_MAX + 1], "big"),
        Err(Error::BatchTooLarge { .. })
    ));
}

#[test]
fn bad_ids_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    let m = ChatMessage::user("m");
    let long = "i".repeat(MESSAGE_ID_MAX_BYTES + 1);
    for id in ["", long.as_str()] {
        let err = store.append_once("k", &m, id).unwrap_err();
        assert!(matches!(err, Error::InvalidMessageId { .. }), "{err}");
        let err = store
            .append_batch_once("k", std::slice::from_ref(&m), id)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMessageId { .. }), "{err}");
    }
    assert!(!store.session_exists("k"));
    assert_eq!(store.last_seq(), 0);
    let longest = "i".repeat(MESSAGE_ID_MAX_BYTES);
    assert!(store.append_once("k", &m, &longest).unwrap());
}

#[test]
fn concurrent_deliveries_of_one_id_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(common::open_fast(dir.path()));
    for round in 0..20 {
        let id = format!("delivery-{round}");
        let written: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (store, id) = (Arc::clone(&store), id.clone());
                    scope.spawn(move || {
                        store
                            .append_once("k", &ChatMessage::user(id.clone()), &id)
                            .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(written, 1, "round {round}");
    }
    assert_eq!(store.load("k").len(), 20);
}

#[test]
fn removing_a_message_keeps_its_id_but_a_fork_or_a_new_session_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    let m = ChatMessage::user("m");
    assert!(store.append_once("k", &m, "a").unwrap());
    store.remove_last("k").unwrap();
    store.clear_messages("k").unwrap();
    assert!(
        !store.append_once("k", &m, "a").unwrap(),
        "the append happened"
    );
    store.append("k", &m).unwrap();
    store.fork_session("k", "fork", None).unwrap();
    assert!(
        store.append_once("fork", &m, "a").unwrap(),
        "the fork's window is its own"
    );
    assert!(!store.append_once("fork", &m, "a").unwrap());
    // Delete and restore bring the window back; a session created again starts empty.
    store.delete_session("k").unwrap();
    assert!(store.restore_session("k").unwrap());
    assert!(!store.append_once("k", &m, "a").unwrap());
    store.delete_session("k").unwrap();
    assert!(store.append_once("k", &m, "a").unwrap(), "a new session");
    // The fork's window survives its compaction and a reopen.
    store.compact_session("fork").unwrap();
    drop(store);
    let store = common::open_fast(dir.path());
    assert!(!store.append_once("fork", &m, "a").unwrap());
    assert!(!store.append_once("k", &m, "a").unwrap());
}

#[test]
fn ids_appear_in_the_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    store
        .append_once("k", &ChatMessage::user("hi"), "wamid.1")
        .unwrap();
    store
        .append_once("k", &ChatMessage::user("hi"), "wamid.1")
        .unwrap();
    store
        .append_batch_once("k", &[ChatMessage::user("a")], "batch.1")
        .unwrap();
    let kinds: Vec<EventKind> = store
        .events(EventFilter::session("k"))
        .unwrap()
        .map(|e| e.unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::AppendOnce {
                message: ChatMessage::user("hi"),
                message_id: "wamid.1".into(),
            },
            EventKind::AppendBatchOnce {
                messages: vec![ChatMessage::user("a")],
                batch_id: "batch.1".into(),
            },
        ]
    );
}

#[test]
fn an_encrypted_store_keeps_the_window_sealed_through_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        encryption: Some(EncryptionKey::from_bytes([7; 32])),
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    let m = ChatMessage::user("m");
    assert!(store.append_once("k", &m, "order-81723").unwrap());
    store.compact_session("k").unwrap();
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert!(!store.append_once("k", &m, "order-81723").unwrap());
    drop(store);
    for (path, bytes) in common::snapshot_files(dir.path()) {
        let found = bytes.windows(11).any(|w| w == b"order-81723");
        assert!(!found, "{} holds the id in the clear", path.display());
    }
}
