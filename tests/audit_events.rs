//! Reading the log back for audit: `events` in commit order with what each event replaced,
//! `load_at` before and after compaction (with and without `keep_history`), and a replay of
//! every event that rebuilds exactly the state the store reports.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use sessionlog::testing::{run_op, Op, KEYS};
use sessionlog::{
    ChatMessage, Durability, Error, EventFilter, EventKind, LogEvent, LogStore, Options,
    SessionBackend, SessionContext,
};

fn all_events(store: &LogStore, filter: EventFilter) -> Vec<LogEvent> {
    store
        .events(filter)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn fast(keep_history: bool) -> Options {
    Options {
        keep_history,
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    }
}

#[test]
fn events_come_back_in_commit_order_with_what_they_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(true)).unwrap();
    store.append("a", &user("hello")).unwrap();
    store.append("b", &user("other")).unwrap();
    store.append("a", &ChatMessage::assistant("")).unwrap();
    store
        .update_last("a", &ChatMessage::assistant("hi there"))
        .unwrap();
    store.set_session_name("a", "greeting").unwrap();
    store
        .set_session_context(
            "a",
            SessionContext {
                channel_id: Some("tg.main"),
                room_id: None,
                sender_id: Some("42"),
            },
        )
        .unwrap();
    store.set_session_state("a", "running", Some("t1")).unwrap();
    store.remove_last("a").unwrap();
    store.clear_messages("a").unwrap();
    store.delete_session("b").unwrap();

    let events = all_events(&store, EventFilter::all());
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "strictly increasing sequence numbers");
    assert_eq!(events.len(), 10);
    let kinds: Vec<(&str, &EventKind)> = events
        .iter()
        .map(|e| (e.session.as_str(), &e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "a",
                &EventKind::Append {
                    message: user("hello")
                }
            ),
            (
                "b",
                &EventKind::Append {
                    message: user("other")
                }
            ),
            (
                "a",
                &EventKind::Append {
                    message: ChatMessage::assistant("")
                }
            ),
            (
                "a",
                &EventKind::UpdateLast {
                    old: ChatMessage::assistant(""),
                    new: ChatMessage::assistant("hi there")
                }
            ),
            (
                "a",
                &EventKind::Name {
                    name: Some("greeting".into())
                }
            ),
            (
                "a",
                &EventKind::Context {
                    channel_id: Some("tg.main".into()),
                    room_id: None,
                    sender_id: Some("42".into())
                }
            ),
            (
                "a",
                &EventKind::State {
                    state: "running".into(),
                    turn_id: Some("t1".into())
                }
            ),
            (
                "a",
                &EventKind::RemoveLast {
                    removed: ChatMessage::assistant("hi there")
                }
            ),
            ("a", &EventKind::Clear { removed: 1 }),
            ("b", &EventKind::Delete),
        ]
    );
    // Times are the records' times, in order here since one thread wrote them.
    assert!(events.windows(2).all(|w| w[0].time <= w[1].time));
    assert_eq!(events.last().unwrap().seq, store.last_seq());
}

#[test]
fn the_filter_selects_by_session_sequence_number_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    for i in 0..10 {
        store.append("x", &user(&format!("x{i}"))).unwrap();
        store.append("y", &user(&format!("y{i}"))).unwrap();
    }
    let every = all_events(&store, EventFilter::all());
    assert_eq!(every.len(), 20);
    let only_y = all_events(&store, EventFilter::session("y"));
    assert_eq!(only_y.len(), 10);
    assert!(only_y.iter().all(|e| e.session == "y"));
    let (from, to) = (every[5].seq, every[12].seq);
    let window = all_events(
        &store,
        EventFilter {
            from_seq: Some(from),
            to_seq: Some(to),
            ..EventFilter::all()
        },
    );
    assert_eq!(window, every[5..=12].to_vec());
    let by_time = all_events(
        &store,
        EventFilter {
            from_time: Some(every[3].time),
            to_time: Some(every[3].time),
            ..EventFilter::all()
        },
    );
    assert!(by_time.contains(&every[3]));
    assert!(by_time.iter().all(|e| e.time == every[3].time));
    assert!(all_events(&store, EventFilter::session("missing")).is_empty());
}

#[test]
fn events_written_after_the_iterator_was_made_are_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "k", "before", 3);
    let events = store.events(EventFilter::all()).unwrap();
    fill(&store, "k", "after", 3);
    let read: Vec<LogEvent> = events.map(Result::unwrap).collect();
    assert_eq!(read.len(), 3);
}

/// After each operation, the session as the store reports it, keyed by the last sequence
/// number: what `load_at` must give back.
fn record_states(store: &LogStore, ops: usize) -> Vec<(u64, Vec<ChatMessage>, Option<String>)> {
    let mut states = Vec::new();
    for i in 0..ops {
        match i % 5 {
            0 | 1 => store.append("k", &user(&format!("m{i}"))).unwrap(),
            2 => {
                store
                    .update_last("k", &ChatMessage::assistant(format!("u{i}")))
                    .unwrap();
            }
            3 => store.set_session_name("k", &format!("n{i}")).unwrap(),
            _ => {
                store.remove_last("k").unwrap();
            }
        }
        store.append("noise", &user("n")).unwrap();
        let seq = store.last_seq() - 1; // right after the operation on "k"
        states.push((seq, store.load("k"), None));
        states.last_mut().unwrap().2 = store.get_session_name("k").unwrap();
    }
    states
}

fn assert_states(store: &LogStore, states: &[(u64, Vec<ChatMessage>, Option<String>)]) {
    for (seq, messages, name) in states {
        let at = store.load_at("k", *seq).unwrap().expect("session existed");
        let got: Vec<ChatMessage> = at.messages.into_iter().map(|m| m.message).collect();
        assert_eq!(&got, messages, "messages at seq {seq}");
        assert_eq!(&at.metadata.name, name, "name at seq {seq}");
    }
}

#[test]
fn load_at_gives_every_past_state_before_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(false)).unwrap();
    let states = record_states(&store, 40);
    assert_states(&store, &states);
    // Before the session's first event, it did not exist.
    assert!(store.load_at("k", 0).unwrap().is_none());
    assert!(store.load_at("never", store.last_seq()).unwrap().is_none());
    // The same after a reopen.
    drop(store);
    let store = LogStore::open_with(dir.path(), fast(false)).unwrap();
    assert_states(&store, &states);
}

#[test]
fn after_compaction_without_keep_history_the_past_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(false)).unwrap();
    let states = record_states(&store, 20);
    store.compact_session("k").unwrap();
    let compacted_at = store.last_seq();
    match store.load_at("k", states[3].0) {
        Err(Error::HistoryCompacted {
            key,
            available_from,
        }) => {
            assert_eq!(key, "k");
            assert_eq!(available_from, compacted_at);
        }
        other => panic!("expected HistoryCompacted, got {other:?}"),
    }
    // From the compaction on, the state is known.
    let now = store.load_at("k", compacted_at).unwrap().unwrap();
    let got: Vec<ChatMessage> = now.messages.into_iter().map(|m| m.message).collect();
    assert_eq!(got, store.load("k"));
    store.append("k", &user("later")).unwrap();
    let later = store.load_at("k", store.last_seq()).unwrap().unwrap();
    assert_eq!(later.messages.last().unwrap().message, user("later"));
    // The event stream starts at the compaction: restated messages, then the compaction.
    let events = all_events(&store, EventFilter::session("k"));
    let restated = events
        .iter()
        .take_while(|e| matches!(e.kind, EventKind::Restated { .. }))
        .count();
    assert_eq!(restated, got.len());
    assert_eq!(
        events[restated].kind,
        EventKind::Compaction {
            messages: got.len()
        }
    );
}

#[test]
fn with_keep_history_every_past_state_survives_compaction_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(true)).unwrap();
    let states = record_states(&store, 20);
    store.compact_session("k").unwrap();
    let more = record_states(&store, 10);
    store.compact_session("k").unwrap();
    assert_states(&store, &states);
    assert_states(&store, &more);
    let before_delete = store.last_seq();
    store.delete_session("k").unwrap();
    assert!(store.load_at("k", store.last_seq()).unwrap().is_none());
    assert_states(&store, &states);
    drop(store);
    let store = LogStore::open_with(dir.path(), fast(true)).unwrap();
    assert_states(&store, &more);
    let last = store.load_at("k", before_delete).unwrap().unwrap();
    assert_eq!(last.messages.len(), more.last().unwrap().1.len());
    // The full stream still has every original append, then two compactions and the delete.
    let events = all_events(&store, EventFilter::session("k"));
    assert!(events
        .iter()
        .all(|e| !matches!(e.kind, EventKind::Restated { .. })));
    let compactions = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Compaction { .. }))
        .count();
    assert_eq!(compactions, 2);
    assert_eq!(events.last().unwrap().kind, EventKind::Delete);
}

#[test]
fn a_compaction_while_events_are_read_waits_for_the_reader_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(false)).unwrap();
    fill(&store, "k", "m", 50);
    for i in 0..50 {
        store.update_last("k", &user(&format!("edit {i}"))).unwrap();
    }
    let mut events = store.events(EventFilter::session("k")).unwrap();
    let first = events.next().unwrap().unwrap();
    store.compact_session("k").unwrap();
    let rest: Vec<LogEvent> = events.by_ref().map(Result::unwrap).collect();
    assert_eq!(1 + rest.len(), 100, "every event, though a compaction ran");
    assert!(matches!(first.kind, EventKind::Append { .. }));
    assert!(
        segments(dir.path()).len() > 1,
        "old segment kept while read"
    );
    drop(events);
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "retired once the reader is gone"
    );
    assert_eq!(store.load("k").len(), 50);
}

#[test]
fn append_if_exists_never_brings_a_deleted_session_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    assert!(!store.append_if_exists("k", &user("x")).unwrap());
    assert!(!store.session_exists("k"));
    store.append("k", &user("first")).unwrap();
    assert!(store.append_if_exists("k", &user("second")).unwrap());
    assert_eq!(store.load("k"), vec![user("first"), user("second")]);
    store.delete_session("k").unwrap();
    assert!(!store.append_if_exists("k", &user("late")).unwrap());
    assert!(!store.session_exists("k"));
    assert!(!store.append_if_exists("", &user("bad key")).unwrap());
}

#[test]
fn append_expected_refuses_a_session_that_moved_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append_expected("k", &user("one"), 0).unwrap();
    store.append_expected("k", &user("two"), 1).unwrap();
    match store.append_expected("k", &user("stale"), 1) {
        Err(Error::Conflict { expected, actual }) => assert_eq!((expected, actual), (1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.append_expected("fresh", &user("x"), 3),
        Err(Error::Conflict {
            expected: 3,
            actual: 0
        })
    ));
    assert!(!store.session_exists("fresh"));
    assert_eq!(store.load("k"), vec![user("one"), user("two")]);
    let io: std::io::Error = Error::Conflict {
        expected: 1,
        actual: 2,
    }
    .into();
    assert_eq!(io.kind(), std::io::ErrorKind::AlreadyExists);
}

#[test]
fn concurrent_append_expected_lets_exactly_one_writer_win_each_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (store, wins) = (&store, &wins);
            scope.spawn(move || {
                for _ in 0..50 {
                    let len = store.load("k").len();
                    if store
                        .append_expected("k", &user(&format!("t{t} at {len}")), len)
                        .is_ok()
                    {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let messages = store.load("k");
    assert_eq!(messages.len(), wins.into_inner());
    for (i, m) in messages.iter().enumerate() {
        assert!(m.content.ends_with(&format!(" at {i}")), "{m:?} at {i}");
    }
}

/// A session rebuilt from nothing but the event stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Replayed {
    messages: Vec<ChatMessage>,
    name: Option<String>,
    alias: Option<String>,
    channel_id: Option<String>,
    sender_id: Option<String>,
    state: Option<(String, Option<String>)>,
}

fn replay(events: &[LogEvent]) -> BTreeMap<String, Replayed> {
    let mut sessions: BTreeMap<String, Replayed> = BTreeMap::new();
    for event in events {
        if let EventKind::Erased { .. } = event.kind {
            // An erasure names no session: the events it erased are no longer in the log.
            assert!(event.session.is_empty());
            continue;
        }
        let s = sessions.entry(event.session.clone()).or_default();
        match &event.kind {
            EventKind::Append { message } | EventKind::Restated { message } => {
                s.messages.push(message.clone())
            }
            EventKind::AppendBatch { messages } => s.messages.extend(messages.iter().cloned()),
            EventKind::UpdateLast { old, new } => {
                assert_eq!(s.messages.last(), Some(old), "old message of {event:?}");
                *s.messages.last_mut().unwrap() = new.clone();
            }
            EventKind::RemoveLast { removed } => {
                assert_eq!(s.messages.pop().as_ref(), Some(removed));
            }
            EventKind::Clear { removed } => {
                assert_eq!(s.messages.len(), *removed);
                s.messages.clear();
            }
            EventKind::Delete => {
                sessions.remove(&event.session);
            }
            EventKind::Name { name } => s.name = name.clone(),
            EventKind::Alias { alias } => s.alias = alias.clone(),
            EventKind::Context {
                channel_id,
                sender_id,
                ..
            } => {
                if channel_id.is_some() {
                    s.channel_id = channel_id.clone();
                }
                if sender_id.is_some() {
                    s.sender_id = sender_id.clone();
                }
            }
            EventKind::State { state, turn_id } => s.state = Some((state.clone(), turn_id.clone())),
            EventKind::Compaction { messages } => assert_eq!(s.messages.len(), *messages),
            other => panic!("unexpected event {other:?}"),
        }
    }
    sessions
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        6 => (key.clone(), "[a-z]{0,6}").prop_map(|(k, t)| Op::Append(k, t)),
        2 => (key.clone(), proptest::collection::vec("[a-z]{0,6}", 0..4))
            .prop_map(|(k, t)| Op::AppendBatch(k, t)),
        3 => (key.clone(), "[a-z]{0,6}").prop_map(|(k, t)| Op::UpdateLast(k, t)),
        2 => key.clone().prop_map(Op::RemoveLast),
        1 => key.clone().prop_map(Op::Clear),
        1 => key.clone().prop_map(Op::Delete),
        1 => (key.clone(), "[a-z]{0,3}").prop_map(|(k, t)| Op::Name(k, t)),
        1 => (key.clone(), "[a-z]{1,3}").prop_map(|(k, t)| Op::Alias(k, t)),
        1 => (key.clone(), proptest::option::of("[a-z]{1,3}"), proptest::option::of("[a-z]{1,3}"))
            .prop_map(|(k, c, s)| Op::Context(k, c, s)),
        1 => (key.clone(), any::<bool>()).prop_map(|(k, r)| Op::State(k, r)),
        2 => key.prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

fn check_replay(ops: &[Op], keep_history: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_with(dir.path(), fast(keep_history)).unwrap();
    for op in ops {
        if let Op::Reopen = op {
            drop(store);
            store = LogStore::open_with(dir.path(), fast(keep_history)).unwrap();
        } else {
            run_op(&store, op).unwrap();
        }
    }
    let events = all_events(&store, EventFilter::all());
    let rebuilt = replay(&events);
    let mut reported = BTreeMap::new();
    for meta in store.list_sessions_with_metadata() {
        let state = store.get_session_state(&meta.key).unwrap().unwrap();
        let at = store.load_at(&meta.key, store.last_seq()).unwrap().unwrap();
        assert_eq!(
            format!("{:?}", at.metadata),
            format!("{meta:?}"),
            "load_at(now) agrees with the store"
        );
        assert_eq!(
            format!("{:?}", at.messages),
            format!("{:?}", store.load_with_timestamps(&meta.key))
        );
        reported.insert(
            meta.key.clone(),
            Replayed {
                messages: store.load(&meta.key),
                name: meta.name,
                alias: meta.agent_alias,
                channel_id: meta.channel_id,
                sender_id: meta.sender_id,
                state: Some((state.state, state.turn_id)),
            },
        );
    }
    // A session that never had its state set replays with state None; the store says idle.
    let rebuilt: BTreeMap<String, Replayed> = rebuilt
        .into_iter()
        .map(|(k, mut s)| {
            s.state.get_or_insert(("idle".into(), None));
            (k, s)
        })
        .collect();
    if keep_history {
        assert_eq!(rebuilt, reported);
    } else {
        // Without history, a compaction restates messages but not metadata events: compare
        // the messages only.
        let messages = |m: &BTreeMap<String, Replayed>| -> BTreeMap<String, Vec<ChatMessage>> {
            m.iter()
                .map(|(k, s)| (k.clone(), s.messages.clone()))
                .collect()
        };
        assert_eq!(messages(&rebuilt), messages(&reported));
    }
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn replaying_every_event_rebuilds_the_state_the_store_reports(
        ops in proptest::collection::vec(op(), 1..60),
        keep_history: bool,
    ) {
        check_replay(&ops, keep_history);
    }
}

#[test]
fn a_reader_that_outlives_the_store_neither_holds_its_lock_nor_leaves_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), fast(false)).unwrap();
    fill(&store, "k", "m", 20);
    let mut events = store.events(EventFilter::all()).unwrap();
    events.next().unwrap().unwrap();
    store.compact_session("k").unwrap();
    assert_eq!(segments(dir.path()).len(), 2, "retirement deferred");
    drop(store);
    assert_eq!(segments(dir.path()).len(), 1, "retired at close");
    let reopened = LogStore::open_with(dir.path(), fast(false)).unwrap();
    assert!(reopened.recovery_report().is_clean());
    assert_eq!(reopened.load("k").len(), 20);
    drop(events);
}
