//! Many threads writing at once lose nothing: writers to one session are serialised, writers to
//! different sessions proceed in parallel, and readers never see half of a mutation.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use sessionlog::{ChatMessage, LogStore, SessionBackend};

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LogStore>();
}

#[test]
fn concurrent_writers_on_many_sessions_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads = 8;
    let per_thread = 100;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    // Each thread has its own session and also writes to a shared one.
                    store
                        .append(&format!("own-{t}"), &user(&format!("{t}:{i}")))
                        .unwrap();
                    store.append("shared", &user(&format!("{t}:{i}"))).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let check = |store: &LogStore| {
        for t in 0..threads {
            let own = store.load(&format!("own-{t}"));
            let expected: Vec<ChatMessage> =
                (0..per_thread).map(|i| user(&format!("{t}:{i}"))).collect();
            assert_eq!(own, expected);
        }
        let shared = store.load("shared");
        assert_eq!(shared.len(), threads * per_thread);
        // Each thread's messages appear in its own order.
        for t in 0..threads {
            let mine: Vec<&str> = shared
                .iter()
                .map(|m| m.content.as_str())
                .filter(|c| c.starts_with(&format!("{t}:")))
                .collect();
            let expected: Vec<String> = (0..per_thread).map(|i| format!("{t}:{i}")).collect();
            assert_eq!(mine, expected);
        }
        assert_eq!(
            store.get_session_metadata("shared").unwrap().message_count,
            threads * per_thread
        );
    };
    check(&store);
    drop(store);
    check(&open(dir.path()));
}

/// The writer of `readers_never_see_half_a_mutation`: rounds of append `a{i}`, then update it
/// to `b{i}`; a clear after every `CLEAR_EVERY` rounds.
const ROUNDS: usize = 2000;
const CLEAR_EVERY: usize = 100;

/// A state that writer leaves the session in (its compactions change nothing a reader sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    /// Before the first round: `["start"]`.
    Start,
    /// Round `i` appended `a{i}`.
    Appended(usize),
    /// Round `i` updated `a{i}` to `b{i}`.
    Updated(usize),
    /// Round `i` ended with a clear.
    Cleared(usize),
}

/// Every state of the writer, in the order it passes through them.
fn steps() -> Vec<Step> {
    let mut steps = vec![Step::Start];
    for i in 0..ROUNDS {
        steps.push(Step::Appended(i));
        steps.push(Step::Updated(i));
        if i % CLEAR_EVERY == CLEAR_EVERY - 1 {
            steps.push(Step::Cleared(i));
        }
    }
    steps
}

/// The session at `step`: whether it still holds `"start"`, the rounds whose `b{j}` it
/// holds, and the round whose `a{i}` ends it (if one does).
fn contents(step: Step) -> (bool, std::ops::Range<usize>, Option<usize>) {
    let since_clear = |i: usize| i - i % CLEAR_EVERY;
    match step {
        Step::Start => (true, 0..0, None),
        Step::Appended(i) => (since_clear(i) == 0, since_clear(i)..i, Some(i)),
        Step::Updated(i) => (since_clear(i) == 0, since_clear(i)..i + 1, None),
        Step::Cleared(_) => (false, 0..0, None),
    }
}

/// How many messages the session holds at `step`.
fn count_at(step: Step) -> usize {
    let (start, updated, appended) = contents(step);
    usize::from(start) + updated.len() + usize::from(appended.is_some())
}

/// The last `n` messages the session holds at `step` (all of them with `usize::MAX`).
fn messages_at(step: Step, n: usize) -> Vec<ChatMessage> {
    let (start, updated, appended) = contents(step);
    let all = start
        .then(|| user("start"))
        .into_iter()
        .chain(updated.map(|j| ChatMessage::assistant(format!("b{j}"))))
        .chain(appended.map(|i| ChatMessage::assistant(format!("a{i}"))));
    let skip = count_at(step).saturating_sub(n);
    all.skip(skip).collect()
}

/// Where in `steps` a reader that last saw the writer at `steps[from]` (or later) now sees it,
/// given what `load` returned: the messages must be exactly those of one state at or after
/// `from`. (An empty session is the state after any clear: the first one from `from` on.)
fn locate(
    steps: &[Step],
    index: &HashMap<Step, usize>,
    messages: &[ChatMessage],
    from: usize,
) -> usize {
    let at = match messages.last().map(|m| m.content.as_str()) {
        None => {
            from + steps[from..]
                .iter()
                .position(|s| matches!(s, Step::Cleared(_)))
                .unwrap_or_else(|| panic!("empty, but no clear is left after {:?}", steps[from]))
        }
        Some("start") => index[&Step::Start],
        Some(last) => {
            let round = |prefix: char| {
                last.strip_prefix(prefix)
                    .and_then(|n| n.parse::<usize>().ok())
            };
            let step = match (round('a'), round('b')) {
                (Some(i), _) => Step::Appended(i),
                (_, Some(i)) => Step::Updated(i),
                _ => panic!("a message never written: {last:?}"),
            };
            *index
                .get(&step)
                .unwrap_or_else(|| panic!("a round never written: {last:?}"))
        }
    };
    assert!(
        at >= from,
        "went back from {:?} to {:?}",
        steps[from],
        steps[at]
    );
    assert_eq!(
        messages,
        messages_at(steps[at], usize::MAX),
        "not the session as the writer left it at {:?}",
        steps[at]
    );
    at
}

#[test]
fn readers_never_see_half_a_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_fast(dir.path()));
    store.append("k", &user("start")).unwrap();
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                // Pairs: append then update, clear now and then. Count and content must agree.
                store
                    .append("k", &ChatMessage::assistant(format!("a{i}")))
                    .unwrap();
                store
                    .update_last("k", &ChatMessage::assistant(format!("b{i}")))
                    .unwrap();
                if i % CLEAR_EVERY == CLEAR_EVERY - 1 {
                    store.clear_messages("k").unwrap();
                }
                if i % 250 == 0 {
                    store.compact("k").unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let steps = steps();
                let index: HashMap<Step, usize> =
                    steps.iter().enumerate().map(|(i, s)| (*s, i)).collect();
                // The writer's state this reader last saw: it never sees an older one.
                let mut seen = 0;
                for _ in 0..500 {
                    let messages = store.load("k");
                    for m in &messages {
                        assert!(
                            m.content == "start"
                                || m.content.starts_with('a')
                                || m.content.starts_with('b')
                        );
                    }
                    // Exactly the messages of one state the writer passed through, with no
                    // message lost, doubled or out of order.
                    let before = locate(&steps, &index, &messages, seen);
                    let tail = store.load_tail("k", 3);
                    assert!(tail.len() <= 3);
                    let meta = store
                        .get_session_metadata("k")
                        .expect("the session is never deleted");
                    assert!(meta.message_count <= 101);
                    let after_messages = store.load("k");
                    let after = locate(&steps, &index, &after_messages, before);
                    // The tail and the count were read between the two loads: each is that of
                    // one state the writer passed through between them. (After an empty load
                    // the writer may be at any later clear.)
                    let until = if after_messages.is_empty() {
                        steps.len() - 1
                    } else {
                        after
                    };
                    let between = &steps[before..=until];
                    assert!(
                        between.iter().any(|s| messages_at(*s, 3) == tail),
                        "tail {tail:?} is no state from {:?} to {:?}",
                        steps[before],
                        steps[until]
                    );
                    assert!(
                        between.iter().any(|s| count_at(*s) == meta.message_count),
                        "count {} is no state from {:?} to {:?}",
                        meta.message_count,
                        steps[before],
                        steps[until]
                    );
                    seen = after;
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let last = store.load("k");
    assert_eq!(
        last.len(),
        0,
        "2000 is a multiple of 100: the last step cleared"
    );
}

#[test]
fn concurrent_delete_and_append_leave_one_consistent_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_fast(dir.path()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200 {
                    if (i + t) % 7 == 0 {
                        store.delete_session("k").unwrap();
                    } else {
                        store.append("k", &user(&format!("{t}:{i}"))).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let seen = observe(&store);
    let count = store.load("k").len();
    assert_eq!(
        store
            .get_session_metadata("k")
            .map_or(0, |m| m.message_count),
        count
    );
    // The session holds what the threads appended after the last delete: of each thread, a
    // run of its last appends, in its order; of the thread that deleted last, every append
    // after that delete.
    let messages = store.load("k");
    let deletes = |t: usize| (0..200).filter(move |i: &usize| (i + t).is_multiple_of(7));
    let appended = |t: usize, from: usize| -> Vec<ChatMessage> {
        (from..200)
            .filter(|i| !(i + t).is_multiple_of(7))
            .map(|i| user(&format!("{t}:{i}")))
            .collect()
    };
    let mut kept = 0;
    let mut whole_after_own_delete = 0;
    for t in 0..4 {
        let mine: Vec<ChatMessage> = messages
            .iter()
            .filter(|m| m.content.starts_with(&format!("{t}:")))
            .cloned()
            .collect();
        assert!(
            appended(t, 0).ends_with(&mine),
            "thread {t}: {mine:?} is not a run of its last appends"
        );
        let last_delete = deletes(t).max().unwrap();
        whole_after_own_delete += usize::from(mine == appended(t, last_delete + 1));
        kept += mine.len();
    }
    assert_eq!(
        kept,
        messages.len(),
        "a message no thread appended: {messages:?}"
    );
    assert!(
        whole_after_own_delete >= 1,
        "no thread kept every append after its last delete: {messages:?}"
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(observe(&store), seen);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}
