//! Each durability mode keeps what it promises across a clean close and reopen, the interval
//! flusher runs, and a failed write poisons the store until it is reopened.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{Durability, Error, LogStore, Options, SessionBackend};

#[test]
fn every_mode_keeps_writes_across_close_and_reopen() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_with(dir.path(), Options::with_durability(durability)).unwrap();
        fill(&store, "k", "m", 20);
        store.update_last("k", &user("last")).unwrap();
        if let Durability::Interval(_) = durability {
            std::thread::sleep(Duration::from_millis(30)); // let the flusher run at least once
        }
        store.sync().unwrap();
        store.close().unwrap();
        let store = open(dir.path());
        assert_eq!(store.load("k").len(), 20, "{durability:?}");
        assert_eq!(store.load("k")[19], user("last"));
    }
}

#[test]
fn a_failed_write_poisons_the_store_until_reopen() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = open(&dir);
    store.append("existing", &user("x")).unwrap();
    // Take the folder away: creating the new session's segment fails.
    let moved = root.path().join("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let err = store.append("new", &user("y")).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Io { .. })), "{err:?}");
    std::fs::rename(&moved, &dir).unwrap();
    // Every later write is refused, even where the disk would accept it.
    let err = store.append("existing", &user("z")).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Poisoned)), "{err:?}");
    assert!(store.set_session_name("existing", "n").is_err());
    // Reads still work.
    assert_eq!(store.load("existing"), vec![user("x")]);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.load("existing"), vec![user("x")]);
    assert!(!store.session_exists("new"));
    store.append("existing", &user("after reopen")).unwrap();
}

#[test]
fn errors_convert_to_io_errors_with_fitting_kinds_and_the_original_as_source() {
    use std::io::ErrorKind;
    let cases = [
        (Error::Poisoned, ErrorKind::Other),
        (
            Error::RecordTooLarge { len: 2, max: 1 },
            ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidKey {
                len: 0,
                reason: "empty",
            },
            ErrorKind::InvalidInput,
        ),
        (
            Error::Corrupt {
                path: "p".into(),
                offset: 1,
                reason: "r".into(),
            },
            ErrorKind::InvalidData,
        ),
        (
            Error::ChecksumMismatch {
                path: "p".into(),
                offset: 1,
                expected: 1,
                actual: 2,
            },
            ErrorKind::InvalidData,
        ),
        (
            Error::UnsupportedVersion {
                path: "p".into(),
                found: 9,
                supported: 1,
            },
            ErrorKind::Unsupported,
        ),
        (Error::Locked { path: "p".into() }, ErrorKind::ResourceBusy),
    ];
    for (error, kind) in cases {
        let text = error.to_string();
        let io: std::io::Error = error.into();
        assert_eq!(io.kind(), kind, "{text}");
        let source = io
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .unwrap();
        assert_eq!(source.to_string(), text);
    }
    let io: std::io::Error = Error::Io {
        context: "c".into(),
        source: std::io::Error::from(ErrorKind::StorageFull),
    }
    .into();
    assert_eq!(io.kind(), ErrorKind::StorageFull);
}
