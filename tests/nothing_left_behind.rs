//! A call that writes nothing leaves nothing behind, and a session is seen only once its first
//! record is written: refused conditional appends on new keys hold no memory, and a write or
//! a fork that fails at any file-system step leaves no session anyone can see (not
//! `session_exists`, `list_sessions`, `get_session_metadata` nor `load`), before or after a
//! reopen.

mod common;

use std::sync::Arc;

use common::SIM_DIR;
use sessionlog::testing::{sessions_in_memory, FaultyFs, SimFs, EIO};
use sessionlog::{
    ChatMessage, Durability, EncryptionKey, Error, LogStore, Options, SessionBackend,
};

fn options(encrypted: bool) -> Options {
    Options {
        encryption: encrypted.then(|| EncryptionKey::from_bytes([7; 32])),
        ..Options::with_durability(Durability::Always)
    }
}

/// A new store on a simulated disk behind a file system that fails on request.
fn faulty_store(encrypted: bool) -> (SimFs, FaultyFs, LogStore) {
    let sim = SimFs::new();
    let fs = FaultyFs::new(Arc::new(sim.clone()));
    let store = LogStore::open_with_fs(SIM_DIR, options(encrypted), Arc::new(fs.clone())).unwrap();
    (sim, fs, store)
}

fn assert_unseen(store: &LogStore, key: &str, context: &str) {
    assert!(!store.session_exists(key), "{context}: exists");
    assert!(
        !store.list_sessions().iter().any(|k| k == key),
        "{context}: listed"
    );
    assert!(
        store.get_session_metadata(key).is_none(),
        "{context}: has metadata"
    );
    assert!(store.load(key).is_empty(), "{context}: loads messages");
}

#[test]
fn refused_conditional_appends_on_new_keys_hold_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        Options {
            sessions_max: 3,
            ..Options::with_durability(Durability::Never)
        },
    )
    .unwrap();
    let m = ChatMessage::user("m");
    for i in 0..10_000 {
        let refused = store.append_expected(&format!("ghost-{i}"), &m, 2);
        assert!(
            matches!(refused, Err(Error::Conflict { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(sessions_in_memory(&store), 0);
    assert!(store.list_sessions().is_empty());
    // The limit counts sessions, and the refused calls made none.
    for key in ["a", "b", "c"] {
        store.append_expected(key, &m, 0).unwrap();
    }
    assert!(matches!(
        store.append("d", &m),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput
    ));
    assert_eq!(sessions_in_memory(&store), 3);
}

/// The first append to a new key fails at each of its file-system steps in turn: the key is
/// never seen and holds no memory; after a reopen it is absent or holds that one message.
#[test]
fn a_first_append_that_fails_at_any_step_leaves_no_session() {
    for encrypted in [false, true] {
        let mut faults = 0;
        for n in 0.. {
            let (sim, fs, store) = faulty_store(encrypted);
            store.append("a", &ChatMessage::user("first")).unwrap();
            fs.fail_at(n, EIO);
            let result = store.append("new", &ChatMessage::user("hello"));
            if fs.failed().is_none() {
                result.unwrap();
                break;
            }
            let context = format!("encrypted {encrypted}, step {n}: {:?}", fs.failed());
            if result.is_ok() {
                continue; // the failed step was not one the append depends on
            }
            faults += 1;
            assert_unseen(&store, "new", &context);
            assert_eq!(sessions_in_memory(&store), 1, "{context}");
            drop(store);
            let store = LogStore::open_with_fs(SIM_DIR, options(encrypted), Arc::new(sim)).unwrap();
            let after = store.load("new");
            assert!(after.len() <= 1, "{context}: {after:?}");
            assert_eq!(store.load("a").len(), 1, "{context}");
        }
        assert!(
            faults > 2,
            "encrypted {encrypted}: only {faults} failing steps"
        );
    }
}

/// `fork_session` fails at each of its file-system steps in turn (plain: links and the Fork
/// record; encrypted: the fork's key and its copy): the fork is never seen and holds no memory;
/// after a reopen it is absent or a whole copy of its source.
#[test]
fn a_fork_that_fails_at_any_step_is_never_seen() {
    for encrypted in [false, true] {
        let mut faults = 0;
        for n in 0.. {
            let (sim, fs, store) = faulty_store(encrypted);
            for text in ["one", "two", "three"] {
                store.append("src", &ChatMessage::user(text)).unwrap();
            }
            let source = store.load("src");
            fs.fail_at(n, EIO);
            let result = store.fork_session("src", "fork", None);
            if fs.failed().is_none() {
                result.unwrap();
                fs.fail_at(1 << 40, EIO); // out of the way of the reads below
                assert_eq!(store.load("fork"), source);
                break;
            }
            let context = format!("encrypted {encrypted}, step {n}: {:?}", fs.failed());
            if result.is_ok() {
                continue;
            }
            faults += 1;
            assert_unseen(&store, "fork", &context);
            assert_eq!(sessions_in_memory(&store), 1, "{context}");
            assert_eq!(store.load("src"), source, "{context}");
            drop(store);
            let store = LogStore::open_with_fs(SIM_DIR, options(encrypted), Arc::new(sim)).unwrap();
            let fork = store.load("fork");
            assert!(
                fork.is_empty() || fork == source,
                "{context}: a partial fork {fork:?}"
            );
            assert_eq!(store.load("src"), source, "{context}");
        }
        assert!(
            faults > 3,
            "encrypted {encrypted}: only {faults} failing steps"
        );
    }
}
