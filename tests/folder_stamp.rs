//! A clean close stamps the store's folder (its times, and the checkpoint's, in the `LOCK`
//! file), and the next open trusts the checkpoint's list of segment files instead of listing
//! the folder; an entry made in the folder while it was closed moves the folder's times, so
//! that open lists it and finds the entry, as before.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sessionlog::fs::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode, StdFs};
use sessionlog::{ChatMessage, Finding, LogStore, Options, SessionBackend};

/// The real file system, counting the listings of one folder.
#[derive(Debug)]
struct Counting {
    dir: PathBuf,
    listed: Arc<AtomicUsize>,
}

impl FileSystem for Counting {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn folder_mode(&self, dir: &Path) -> io::Result<u32> {
        StdFs.folder_mode(dir)
    }
    fn is_dir(&self, path: &Path) -> bool {
        StdFs.is_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        StdFs.exists(path)
    }
    fn is_symlink(&self, path: &Path) -> bool {
        StdFs.is_symlink(path)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        StdFs.stat(path)
    }
    fn stat_changed(&self, path: &Path) -> io::Result<(FileStat, Option<i64>)> {
        StdFs.stat_changed(path)
    }
    fn folder_times_follow_entries(&self) -> bool {
        StdFs.folder_times_follow_entries()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        if dir == self.dir {
            self.listed.fetch_add(1, Ordering::SeqCst);
        }
        StdFs.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        StdFs.open(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn link_count(&self, path: &Path) -> io::Result<u64> {
        StdFs.link_count(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.hard_link(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn sync_file_system(&self, dir: &Path) -> io::Result<bool> {
        StdFs.sync_file_system(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        StdFs.lock(path)
    }
}

/// Opens the store in `dir` through a counting file system; returns it and the listings of
/// `dir` its open made.
fn open_counting(dir: &Path) -> (LogStore, usize) {
    let listed = Arc::new(AtomicUsize::new(0));
    let fs = Counting {
        dir: dir.to_path_buf(),
        listed: Arc::clone(&listed),
    };
    let options = Options {
        auto_compact: false,
        ..Options::default()
    };
    let store = LogStore::open_with_fs(dir, options, Arc::new(fs)).unwrap();
    let count = listed.load(Ordering::SeqCst);
    (store, count)
}

/// The open reported the file `name` as not the store's.
fn assert_reports_unknown(store: &LogStore, name: &str) {
    let findings = &store.recovery_report().findings;
    let found = (findings.iter())
        .any(|f| matches!(f, Finding::UnknownFile { path } if path.ends_with(name)));
    assert!(found, "{findings:?}");
}

fn written(dir: &Path) -> String {
    let store = LogStore::open(dir).unwrap();
    for i in 0..20 {
        store
            .append(&format!("s{}", i % 4), &ChatMessage::user(format!("m {i}")))
            .unwrap();
    }
    let before = format!("{:?}", store.list_sessions_with_metadata());
    store.close().unwrap();
    before
}

#[test]
fn a_clean_close_spares_the_next_open_a_listing_of_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let before = written(dir.path());
    let (store, listed) = open_counting(dir.path());
    assert_eq!(listed, 0, "the open listed the stamped folder");
    assert_eq!(format!("{:?}", store.list_sessions_with_metadata()), before);
    assert_eq!(store.load("s1").len(), 5);
    assert!(store.recovery_report().from_checkpoint);
    store.close().unwrap();
    // Opened and closed without a change: still stamped.
    let (store, listed) = open_counting(dir.path());
    assert_eq!(listed, 0);
    drop(store);
}

#[test]
fn a_file_made_while_the_store_was_closed_is_found_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    std::fs::write(dir.path().join("notes.txt"), b"not the store's").unwrap();
    let (store, listed) = open_counting(dir.path());
    assert!(listed > 0, "the folder changed: open must list it");
    assert_reports_unknown(&store, "notes.txt");
    drop(store);
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"not the store's"
    );
}

#[test]
fn a_segment_copied_in_while_the_store_was_closed_is_not_taken_on_trust() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    // Another session's file under a new id: the checkpoint does not record it.
    let source = dir.path().join("0000000000000001-00000001.seg");
    std::fs::copy(&source, dir.path().join("0000000000000009-00000001.seg")).unwrap();
    let (store, listed) = open_counting(dir.path());
    assert!(listed > 0);
    let ignored = store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::CheckpointIgnored { .. }));
    assert!(ignored, "{:?}", store.recovery_report().findings);
    drop(store);
}

#[test]
fn a_stamp_that_does_not_match_the_folder_makes_open_list_it() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    assert!(lock.len() > 32 && lock[32..40] == *b"SLSTAMP\0", "{lock:?}");
    // A stamp the bytes of another folder would give: the open lists.
    let mut other = lock.clone();
    other[40] ^= 1;
    std::fs::write(dir.path().join("LOCK"), &other).unwrap();
    let (store, listed) = open_counting(dir.path());
    assert!(listed > 0);
    assert_eq!(store.list_sessions().len(), 4);
    drop(store);
}

#[test]
fn a_store_reached_through_a_symbolic_link_is_never_stamped() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    written(&link);
    // The link's own times never move: a stamp taken through it would hide this file.
    std::fs::write(real.join("notes.txt"), b"not the store's").unwrap();
    let (store, listed) = open_counting(&link);
    assert!(listed > 0, "the open trusted a stamp taken through a link");
    assert_reports_unknown(&store, "notes.txt");
    drop(store);
}

#[test]
fn a_copied_store_opened_and_closed_without_a_change_is_stamped_for_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = written(dir.path());
    // A copy: its folder's times are its own, so the stamp copied with `LOCK` does not hold.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let (store, listed) = open_counting(copy.path());
    assert!(listed > 0, "the copy's folder is listed");
    assert_eq!(format!("{:?}", store.list_sessions_with_metadata()), before);
    store.close().unwrap();
    // Closed without a change (no checkpoint written), it stamped the folder it listed.
    let (store, listed) = open_counting(copy.path());
    assert_eq!(listed, 0, "listed again");
    assert_eq!(format!("{:?}", store.list_sessions_with_metadata()), before);
    drop(store);
    // A file made in it since is still found.
    std::fs::write(copy.path().join("stray"), b"x").unwrap();
    let (store, listed) = open_counting(copy.path());
    assert!(listed > 0);
    assert_reports_unknown(&store, "stray");
}
