//! The store never follows a symbolic link inside its folder: a link in place of one of its
//! files or folders fails the open (or the one operation that would go through it) with
//! `Error::SymbolicLink`, and the file or folder it points to is neither read, written,
//! chmod-ed nor moved into. A link with a segment's name is reported and left alone.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use sessionlog::{Error, Finding, LogStore, SessionBackend};

/// A file outside the store, with the bytes and mode a link's victim would lose.
struct Victim {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("precious.txt");
        std::fs::write(&path, b"precious bytes").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Victim { path, _dir: dir }
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read(&self.path).unwrap(), b"precious bytes");
        let mode = std::fs::metadata(&self.path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }
}

/// A store with one session, closed.
fn store_with_alice(dir: &Path) {
    let store = open(dir);
    store.append("alice", &user("hello")).unwrap();
    store.close().unwrap();
}

fn replace_with_link(path: &Path, target: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).unwrap();
    }
    symlink(target, path).unwrap();
}

fn assert_link_refused(result: sessionlog::Result<LogStore>, link: &Path) {
    match result {
        Err(Error::SymbolicLink { path }) => assert_eq!(path, link),
        Err(other) => panic!(
            "expected Error::SymbolicLink for {}, got {other}",
            link.display()
        ),
        Ok(_) => panic!("opened a store whose {} is a link", link.display()),
    }
}

#[test]
fn a_linked_lock_fails_the_open_and_its_target_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    store_with_alice(dir.path());
    let victim = Victim::new();
    let lock = dir.path().join("LOCK");
    replace_with_link(&lock, &victim.path);
    assert_link_refused(LogStore::open(dir.path()), &lock);
    victim.assert_untouched();
    // A read-only open refuses it too.
    assert_link_refused(LogStore::open_read_only(dir.path()), &lock);
    victim.assert_untouched();
}

#[test]
fn a_linked_erasure_log_or_checkpoint_fails_the_open_and_its_target_is_untouched() {
    for name in ["ERASED", "CHECKPOINT"] {
        let dir = tempfile::tempdir().unwrap();
        store_with_alice(dir.path());
        let victim = Victim::new();
        let link = dir.path().join(name);
        replace_with_link(&link, &victim.path);
        let before = snapshot_files(dir.path());
        assert_link_refused(LogStore::open(dir.path()), &link);
        victim.assert_untouched();
        assert_eq!(
            snapshot_files(dir.path()),
            before,
            "{name}: nothing changed"
        );
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }
}

#[test]
fn a_linked_subfolder_fails_the_open() {
    for name in ["archive", "quarantine", "keys"] {
        let dir = tempfile::tempdir().unwrap();
        store_with_alice(dir.path());
        let outside = tempfile::tempdir().unwrap();
        let link = dir.path().join(name);
        replace_with_link(&link, outside.path());
        assert_link_refused(LogStore::open_with(dir.path(), keep_history()), &link);
        assert_link_refused(LogStore::open_read_only(dir.path()), &link);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}

/// `archive/` turned into a link while the store is open: the compaction that would move the
/// replaced segments into it fails, and nothing leaves the store.
#[test]
fn a_compaction_moves_nothing_into_an_archive_linked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    fill(&store, "alice", "m", 20);
    store.remove_last("alice").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let link = dir.path().join("archive");
    replace_with_link(&link, outside.path());
    let err = store.compact_session("alice").unwrap_err();
    assert!(
        matches!(&err, Error::SymbolicLink { path } if *path == link),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(store.load("alice").len(), 19);
}

/// A link named like a segment, pointing at another store's segment: reported as an unknown
/// file, never read (its session does not appear), never deleted.
#[test]
fn a_linked_segment_is_reported_never_read_and_never_deleted() {
    let other = tempfile::tempdir().unwrap();
    let store = open(other.path());
    store.append("bob", &user("bob's secret")).unwrap();
    store.close().unwrap();
    let bobs = segments(other.path()).remove(0);
    let bobs_bytes = std::fs::read(&bobs).unwrap();

    let dir = tempfile::tempdir().unwrap();
    store_with_alice(dir.path());
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let link = dir.path().join("0000000000000009-00000001.seg");
    symlink(&bobs, &link).unwrap();
    let store = open(dir.path());
    assert!(
        store
            .recovery_report()
            .findings
            .iter()
            .any(|f| matches!(f, Finding::UnknownFile { path } if *path == link)),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.list_sessions(), vec!["alice".to_string()]);
    assert!(store.load("bob").is_empty());
    store.append("carol", &user("new session")).unwrap();
    store.close().unwrap();
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&bobs).unwrap(), bobs_bytes);
}
