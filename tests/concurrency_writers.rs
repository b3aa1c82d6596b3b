//! Many threads writing at once lose nothing: writers to one session are serialised, writers to
//! different sessions proceed in parallel, and readers never see half of a mutation.

mod common;

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

#[test]
fn readers_never_see_half_a_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_fast(dir.path()));
    store.append("k", &user("start")).unwrap();
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..2000 {
                // Pairs: append then update, clear now and then. Count and content must agree.
                store
                    .append("k", &ChatMessage::assistant(format!("a{i}")))
                    .unwrap();
                store
                    .update_last("k", &ChatMessage::assistant(format!("b{i}")))
                    .unwrap();
                if i % 100 == 99 {
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
                for _ in 0..500 {
                    let messages = store.load("k");
                    for m in &messages {
                        assert!(
                            m.content == "start"
                                || m.content.starts_with('a')
                                || m.content.starts_with('b')
                        );
                    }
                    let tail = store.load_tail("k", 3);
                    assert!(tail.len() <= 3);
                    if let Some(meta) = store.get_session_metadata("k") {
                        assert!(meta.message_count <= 101);
                    }
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
    drop(store);
    let store = open(dir.path());
    assert_eq!(observe(&store), seen);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}
