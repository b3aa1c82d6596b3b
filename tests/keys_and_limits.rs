//! Keys are stored byte for byte and never become paths; bad keys and oversized records are
//! refused with a clear error and change nothing.

mod common;

use std::io::ErrorKind;

use common::*;
use sessionlog::{ChatMessage, Error, LogStore, Options, SessionBackend, SessionContext};

const KEYS: &[&str] = &[
    "a.b",
    "a_b",
    "a:b",
    "a/b",
    "../x",
    "A",
    "a",
    "with space",
    "nul\0byte",
    "new\nline",
    "emoji 🦀",
    "日本語",
    "..",
    ".",
    "/",
    "\\",
    "LOCK",
    "0000000000000001-00000001.seg",
];

#[test]
fn similar_keys_are_distinct_sessions_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    for key in KEYS {
        store.append(key, &user(key)).unwrap();
    }
    let check = |store: &LogStore| {
        let mut listed = store.list_sessions();
        listed.sort();
        let mut expected: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        expected.sort();
        assert_eq!(listed, expected);
        for key in KEYS {
            assert_eq!(store.load(key), vec![user(key)], "{key:?}");
        }
    };
    check(&store);
    drop(store);
    check(&open(dir.path()));
    // Nothing was written outside the folder.
    let parent = dir.path().parent().unwrap();
    assert!(!parent.join("x").exists());
}

#[test]
fn a_key_of_1024_bytes_is_accepted_and_1025_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let longest = "k".repeat(1024);
    store.append(&longest, &user("x")).unwrap();
    let too_long = "k".repeat(1025);
    let err = store.append(&too_long, &user("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    drop(store);
    assert_eq!(open(dir.path()).load(&longest), vec![user("x")]);
}

#[test]
fn creating_calls_refuse_invalid_keys_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = snapshot_files(dir.path());
    for key in ["", &"x".repeat(1025)] {
        let results = [
            store.append(key, &user("x")).map(|_| ()),
            store.set_session_name(key, "n"),
            store.set_session_agent_alias(key, "a"),
            store.set_session_context(
                key,
                SessionContext {
                    room_id: Some("r"),
                    ..Default::default()
                },
            ),
            store.set_session_state(key, "running", None),
        ];
        for result in results {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
            assert!(matches!(inner, Some(Error::InvalidKey { .. })), "{err:?}");
        }
    }
    assert_eq!(snapshot_files(dir.path()), before);
    assert!(store.list_sessions().is_empty());
}

#[test]
fn other_calls_treat_invalid_keys_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for key in ["", &"x".repeat(2000)] {
        assert!(store.load(key).is_empty());
        assert!(!store.remove_last(key).unwrap());
        assert!(!store.update_last(key, &user("x")).unwrap());
        assert_eq!(store.clear_messages(key).unwrap(), 0);
        assert!(!store.delete_session(key).unwrap());
        assert!(!store.session_exists(key));
        assert!(store.get_session_metadata(key).is_none());
        assert_eq!(store.get_session_name(key).unwrap(), None);
        store.compact(key).unwrap();
    }
}

#[test]
fn oversized_records_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        record_bytes_max: 1000,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options).unwrap();
    store.append("k", &user("small")).unwrap();
    let before = snapshot_files(dir.path());
    let big = ChatMessage::assistant("y".repeat(2000));
    let err = store.append("k", &big).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::RecordTooLarge { max: 1000, .. })),
        "{err:?}"
    );
    assert!(store.update_last("k", &big).is_err());
    assert!(store.append("new", &big).is_err());
    assert!(store.set_session_name("k", &"n".repeat(2000)).is_err());
    assert_eq!(snapshot_files(dir.path()), before);
    assert_eq!(store.load("k"), vec![user("small")]);
    assert!(!store.session_exists("new"));
    // The store is not poisoned by refused input.
    store.append("k", &user("still writable")).unwrap();
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for options in [
        Options {
            record_bytes_max: 0,
            ..Options::default()
        },
        Options {
            record_bytes_max: (1 << 30) + 1,
            ..Options::default()
        },
        Options {
            segment_bytes_max: 10,
            ..Options::default()
        },
        Options::with_durability(sessionlog::Durability::Interval(std::time::Duration::ZERO)),
    ] {
        let result = LogStore::open_with(dir.path(), options);
        assert!(matches!(result, Err(Error::InvalidOptions { .. })));
    }
}

#[test]
fn segments_roll_over_at_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes_max: 4096,
        durability: sessionlog::Durability::Never,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    fill(&store, "k", &"z".repeat(300), 50);
    store
        .append("k", &ChatMessage::user("w".repeat(10_000)))
        .unwrap();
    let files = segments(dir.path());
    assert!(files.len() > 3, "{files:?}");
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(len <= 4096 || len > 10_000, "{file:?} is {len} bytes");
    }
    let before = observe(&store);
    drop(store);
    assert_eq!(
        observe(&LogStore::open_with(dir.path(), options).unwrap()),
        before
    );
}

#[test]
fn a_record_at_the_limit_is_taken_and_one_byte_more_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        record_bytes_max: 1000,
        durability: sessionlog::Durability::Never,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options).unwrap();
    // An append's payload: tag 4, role 8 + 4 ("user"), content 8 + n.
    let at_limit = user(&"a".repeat(1000 - 24));
    store.append("k", &at_limit).unwrap();
    let one_more = user(&"a".repeat(1000 - 23));
    assert!(matches!(
        store.append("k", &one_more).map_err(|e| e.into_inner()),
        Err(Some(e))
            if matches!(
                e.downcast_ref::<Error>(),
                Some(Error::RecordTooLarge { len: 1001, max: 1000 })
            )
    ));
    assert_eq!(store.load("k"), vec![at_limit]);
}

#[test]
fn the_session_limit_is_enforced_at_the_limit_and_one_past() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sessions_max: 3,
        durability: sessionlog::Durability::Never,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    for key in ["a", "b", "c"] {
        store.append(key, &user("x")).unwrap();
    }
    let err = store.append("d", &user("x")).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::TooManySessions { max: 3 })),
        "{err:?}"
    );
    assert!(!store.session_exists("d"));
    // Existing sessions still take writes; a delete makes room.
    store.append("a", &user("more")).unwrap();
    assert!(matches!(
        store.fork_session("a", "e", None),
        Err(Error::TooManySessions { max: 3 })
    ));
    drop(store);
    let store = LogStore::open_with(
        dir.path(),
        Options {
            tombstone_retention: std::time::Duration::ZERO,
            ..options
        },
    )
    .unwrap();
    store.delete_session("c").unwrap();
    store.append("d", &user("x")).unwrap();
    assert_eq!(store.list_sessions().len(), 3);
}

#[test]
fn the_segment_size_limit_is_enforced_at_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    for (size, ok) in [
        (4096, true),
        (4095, false),
        (512 << 30, true),
        ((512 << 30) + 1, false),
    ] {
        let result = LogStore::open_with(
            dir.path(),
            Options {
                segment_bytes_max: size,
                ..Options::default()
            },
        );
        assert_eq!(result.is_ok(), ok, "segment_bytes_max {size}");
        if !ok {
            assert!(matches!(result, Err(Error::InvalidOptions { .. })));
        }
    }
}

#[test]
fn more_sessions_than_open_files_all_take_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        open_files_max: 2,
        durability: sessionlog::Durability::Never,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    for round in 0..3 {
        for s in 0..10 {
            store
                .append(&format!("s{s}"), &user(&format!("{round}")))
                .unwrap();
        }
    }
    drop(store);
    let store = LogStore::open_with(dir.path(), options).unwrap();
    for s in 0..10 {
        assert_eq!(store.load(&format!("s{s}")).len(), 3);
    }
}

#[test]
fn forks_count_toward_the_session_limit_and_deletes_free_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        Options {
            sessions_max: 3,
            durability: sessionlog::Durability::Never,
            ..Options::default()
        },
    )
    .unwrap();
    store.append("a", &user("x")).unwrap();
    store.fork_session("a", "b", None).unwrap();
    store.fork_session("a", "c", None).unwrap();
    assert!(matches!(
        store.append("d", &user("x")).map_err(|e| e.into_inner()),
        Err(Some(e)) if matches!(e.downcast_ref::<Error>(), Some(Error::TooManySessions { max: 3 }))
    ));
    for key in ["a", "b", "c"] {
        store.delete_session(key).unwrap();
    }
    for key in ["d", "e", "f"] {
        store.append(key, &user("x")).unwrap();
    }
    assert!(
        store.append("g", &user("x")).is_err(),
        "the count never wraps"
    );
}
