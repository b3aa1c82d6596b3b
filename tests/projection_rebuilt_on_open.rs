//! The projection rebuilt on open answers every query exactly as the live one did, after a
//! random workload of every kind of mutation, with compactions and reopens in between; and the
//! store agrees with a simple in-memory model of SEMANTICS.md.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use sessionlog::{ChatMessage, Durability, LogStore, SessionBackend, SessionContext};

#[derive(Debug, Clone)]
enum Op {
    Append(usize, String),
    UpdateLast(usize, String),
    RemoveLast(usize),
    Clear(usize),
    Delete(usize),
    Name(usize, String),
    Alias(usize, String),
    Context(usize, Option<String>, Option<String>),
    State(usize, bool),
    Compact(usize),
    Reopen,
}

const KEYS: &[&str] = &["a", "a.b", "a/b", "../x", "ü"];

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let text = "[a-z ]{0,12}";
    prop_oneof![
        6 => (key.clone(), text).prop_map(|(k, t)| Op::Append(k, t)),
        3 => (key.clone(), text).prop_map(|(k, t)| Op::UpdateLast(k, t)),
        2 => key.clone().prop_map(Op::RemoveLast),
        1 => key.clone().prop_map(Op::Clear),
        1 => key.clone().prop_map(Op::Delete),
        1 => (key.clone(), "[a-z]{0,3}").prop_map(|(k, t)| Op::Name(k, t)),
        1 => (key.clone(), "[a-z]{0,3}").prop_map(|(k, t)| Op::Alias(k, t)),
        1 => (key.clone(), proptest::option::of("[a-z ]{0,3}"), proptest::option::of("[a-z]{0,3}"))
            .prop_map(|(k, c, s)| Op::Context(k, c, s)),
        1 => (key.clone(), any::<bool>()).prop_map(|(k, r)| Op::State(k, r)),
        1 => key.prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// The model: per key, messages and name (the parts that need no clock).
#[derive(Default, Debug)]
struct Model {
    sessions: BTreeMap<String, (Vec<ChatMessage>, Option<String>)>,
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_with(dir.path(), small_segments(Durability::Never)).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append(k, t) => {
                store.append(KEYS[*k], &user(t)).unwrap();
                model
                    .sessions
                    .entry(KEYS[*k].into())
                    .or_default()
                    .0
                    .push(user(t));
            }
            Op::UpdateLast(k, t) => {
                let expected = model
                    .sessions
                    .get_mut(KEYS[*k])
                    .and_then(|s| s.0.last_mut());
                let changed = store
                    .update_last(KEYS[*k], &ChatMessage::assistant(t.clone()))
                    .unwrap();
                assert_eq!(changed, expected.is_some());
                if let Some(last) = expected {
                    *last = ChatMessage::assistant(t.clone());
                }
            }
            Op::RemoveLast(k) => {
                let expected = model.sessions.get_mut(KEYS[*k]).and_then(|s| s.0.pop());
                assert_eq!(store.remove_last(KEYS[*k]).unwrap(), expected.is_some());
            }
            Op::Clear(k) => {
                let expected = model
                    .sessions
                    .get_mut(KEYS[*k])
                    .map_or(0, |s| std::mem::take(&mut s.0).len());
                assert_eq!(store.clear_messages(KEYS[*k]).unwrap(), expected);
            }
            Op::Delete(k) => {
                let existed = model.sessions.remove(KEYS[*k]).is_some();
                assert_eq!(store.delete_session(KEYS[*k]).unwrap(), existed);
            }
            Op::Name(k, n) => {
                store.set_session_name(KEYS[*k], n).unwrap();
                model.sessions.entry(KEYS[*k].into()).or_default().1 =
                    (!n.is_empty()).then(|| n.clone());
            }
            Op::Alias(k, a) => {
                store.set_session_agent_alias(KEYS[*k], a).unwrap();
                model.sessions.entry(KEYS[*k].into()).or_default();
            }
            Op::Context(k, c, s) => {
                let context = SessionContext {
                    channel_id: c.as_deref(),
                    room_id: None,
                    sender_id: s.as_deref(),
                };
                store.set_session_context(KEYS[*k], context).unwrap();
                model.sessions.entry(KEYS[*k].into()).or_default();
            }
            Op::State(k, running) => {
                let state = if *running { "running" } else { "idle" };
                store
                    .set_session_state(KEYS[*k], state, Some("turn"))
                    .unwrap();
                model.sessions.entry(KEYS[*k].into()).or_default();
            }
            Op::Compact(k) => {
                let before = observe(&store);
                store.compact(KEYS[*k]).unwrap();
                assert_eq!(observe(&store), before, "compaction changed a read");
            }
            Op::Reopen => {
                let before = observe(&store);
                drop(store);
                store = LogStore::open_with(dir.path(), small_segments(Durability::Never)).unwrap();
                assert_eq!(observe(&store), before, "reopen changed a read");
                assert!(
                    store.recovery_report().is_clean(),
                    "{:?}",
                    store.recovery_report()
                );
            }
        }
        for (key, (messages, name)) in &model.sessions {
            assert_eq!(&store.load(key), messages, "{key}");
            assert_eq!(&store.get_session_name(key).unwrap(), name, "{key}");
            assert_eq!(
                store.get_session_metadata(key).unwrap().message_count,
                messages.len()
            );
        }
        let mut listed = store.list_sessions();
        listed.sort();
        assert_eq!(listed, model.sessions.keys().cloned().collect::<Vec<_>>());
    }
    let live = observe(&store);
    drop(store);
    let store = LogStore::open_with(dir.path(), small_segments(Durability::Never)).unwrap();
    assert_eq!(observe(&store), live);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn rebuilt_projection_answers_like_the_live_one(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(&ops);
    }
}

#[test]
fn a_long_fixed_workload_rebuilds_exactly() {
    let mut ops = Vec::new();
    for i in 0..1500usize {
        let k = i % KEYS.len();
        ops.push(match i % 13 {
            0..=4 => Op::Append(k, format!("m{i}")),
            5..=6 => Op::UpdateLast(k, format!("u{i}")),
            7 => Op::RemoveLast(k),
            8 => Op::Name(k, format!("n{}", i % 3)),
            9 => Op::State(k, i % 2 == 0),
            10 if i % 5 == 0 => Op::Clear(k),
            10 => Op::Context(k, Some(format!("c{i}")), None),
            11 if i % 4 == 0 => Op::Delete(k),
            11 => Op::Compact(k),
            _ if i % 100 == 12 => Op::Reopen,
            _ => Op::Alias(k, String::new()),
        });
    }
    run(&ops);
}
