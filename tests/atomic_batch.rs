//! `append_batch`: several messages in one record, so a crash leaves all of them or none;
//! reads, edits, compaction, replay and the event log treat them as ordinary messages.

mod common;

use std::sync::Arc;

use common::*;
use sessionlog::testing::SimFs;
use sessionlog::{
    ChatMessage, Durability, Error, EventFilter, EventKind, LogStore, Options, SessionBackend,
    BATCH_MESSAGES_MAX,
};

fn turn() -> Vec<ChatMessage> {
    vec![
        ChatMessage::assistant("calling the weather tool"),
        ChatMessage::tool("{\"temp\": 21}"),
        ChatMessage::assistant("It is 21 degrees."),
    ]
}

#[test]
fn a_batch_reads_edits_and_compacts_like_separate_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("k", &user("weather?")).unwrap();
    store.append_batch("k", &turn()).unwrap();
    store.append_batch("k", &[]).unwrap(); // writes nothing
    let mut expected = vec![user("weather?")];
    expected.extend(turn());
    assert_eq!(store.load("k"), expected);
    assert_eq!(store.load_tail("k", 2), expected[2..].to_vec());
    // The batch's messages share one time.
    let times: Vec<_> = store
        .load_with_timestamps("k")
        .iter()
        .map(|m| m.created_at)
        .collect();
    assert!(times[1] == times[2] && times[2] == times[3]);
    // The last message of a batch can be streamed into and removed like any other.
    store
        .update_last("k", &ChatMessage::assistant("It is 22 degrees."))
        .unwrap();
    assert!(store.remove_last("k").unwrap());
    expected.pop();
    assert_eq!(store.load("k"), expected);
    store.compact_session("k").unwrap();
    assert_eq!(store.load("k"), expected);
    drop(store);
    let store = open_fast(dir.path());
    assert_eq!(store.load("k"), expected);
    assert!(store.verify().unwrap().is_sound());
}

#[test]
fn a_batch_is_one_event_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append_batch("k", &turn()).unwrap();
    let events: Vec<_> = store
        .events(EventFilter::all())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::AppendBatch { messages: turn() });
    let at = store.load_at("k", events[0].seq).unwrap().unwrap();
    assert_eq!(at.messages.len(), 3);
}

#[test]
fn a_batch_over_a_limit_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        Options {
            record_bytes_max: 1000,
            ..Options::with_durability(Durability::Never)
        },
    )
    .unwrap();
    let too_many = vec![user("x"); BATCH_MESSAGES_MAX + 1];
    assert!(matches!(
        store.append_batch("k", &too_many),
        Err(Error::BatchTooLarge { len, max })
            if len == BATCH_MESSAGES_MAX + 1 && max == BATCH_MESSAGES_MAX
    ));
    let too_big = vec![
        user(&"a".repeat(400)),
        user(&"b".repeat(400)),
        user(&"c".repeat(400)),
    ];
    assert!(matches!(
        store.append_batch("k", &too_big),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(!store.session_exists("k"));
    let at_limit = vec![user("y"); BATCH_MESSAGES_MAX];
    let roomy_dir = tempfile::tempdir().unwrap();
    let roomy = LogStore::open_with(
        roomy_dir.path(),
        Options::with_durability(Durability::Never),
    )
    .unwrap();
    roomy.append_batch("k", &at_limit).unwrap();
    assert_eq!(roomy.load("k").len(), BATCH_MESSAGES_MAX);
}

/// Power is cut while the batch's record is being written, keeping every possible prefix of
/// it: after reopening, the session holds the whole turn or none of it.
#[test]
fn a_crash_mid_batch_leaves_all_or_nothing() {
    let options = Options {
        auto_compact: false,
        ..Options::with_durability(Durability::Always)
    };
    let mut outcomes = [0usize; 2];
    let batch: Vec<ChatMessage> = (0..3)
        .map(|i| ChatMessage::tool(format!("result {i} {}", "r".repeat(300))))
        .collect();
    let record_len = 60
        + 4
        + 8
        + batch
            .iter()
            .map(|m| 16 + m.role.len() + m.content.len())
            .sum::<usize>();
    let torn_sizes = (0..record_len)
        .step_by(7)
        .chain([record_len - 1, record_len]);
    for torn in torn_sizes {
        let fs = SimFs::new();
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        store.append("k", &user("question")).unwrap();
        // The batch's record is written, then the power goes before its sync.
        fs.cut_power_after(1);
        let result = store.append_batch("k", &batch);
        assert!(result.is_err(), "the sync fails once the power is off");
        drop(store);
        fs.crash(Some(torn));
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        let messages = store.load("k");
        match messages.len() {
            1 => outcomes[0] += 1,
            4 => {
                assert_eq!(messages[1..], batch[..]);
                outcomes[1] += 1;
            }
            n => panic!("torn at {torn}: {n} messages: part of a batch survived"),
        }
        assert_eq!(messages[0], user("question"));
    }
    assert!(
        outcomes[0] > 0,
        "cuts inside the record drop the whole batch"
    );
    assert!(outcomes[1] > 0, "a record written whole survives");
}
