//! `LogStore::open_read_only` reads a store that another store (in this or another process)
//! has open and is writing: it takes no lock, changes no byte, reports what a writable open would
//! repair, stops at the last complete record, and refuses every write.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::hooked::{Hooked, Hooks};
use common::*;
use sessionlog::fs::FileSystem;
use sessionlog::testing::SimFs;
use sessionlog::{ChatMessage, Error, Finding, LogStore, MessageQuery, Options, SessionBackend};

#[test]
fn a_reader_opens_beside_the_writer_and_sees_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path());
    fill(&writer, "k", "m", 5);
    writer.set_session_name("k", "n").unwrap();
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(observe(&reader), observe(&writer));
    fill(&writer, "k", "later", 1);
    assert_eq!(
        reader.load("k").len(),
        5,
        "a reader sees the folder as it was at open"
    );
}

#[test]
fn debug_shows_the_folder_the_mode_and_the_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path());
    fill(&writer, "k", "m", 1);
    fill(&writer, "j", "m", 1);
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    let folder = format!("{:?}", dir.path());
    for (store, read_only) in [(&writer, false), (&reader, true)] {
        let shown = format!("{store:?}");
        assert!(shown.starts_with("LogStore {"), "{shown}");
        assert!(shown.contains(&format!("dir: {folder}")), "{shown}");
        assert!(
            shown.contains(&format!("read_only: {read_only}")),
            "{shown}"
        );
        assert!(shown.contains("sessions: 2"), "{shown}");
    }
}

#[test]
fn a_reader_refuses_every_write_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, "k", "m", 3);
    }
    // Things a writable open would repair: a torn tail, a stray temporary file.
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[9, 9, 9]);
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(dir.path().join("0000000000000001-00000005.seg.tmp"), b"x").unwrap();
    let before = snapshot_files(dir.path());
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.load("k").len(), 3);
    assert!(reader
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::Unfinished { bytes: 3, .. })));
    for result in [
        reader.append("k", &user("x")).map(drop),
        reader.remove_last("k").map(drop),
        reader.set_session_name("new", "n"),
        reader.delete_session("k").map(drop),
        reader.compact("k"),
    ] {
        let err = result.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert!(matches!(inner, Some(Error::ReadOnly)), "{err:?}");
    }
    drop(reader);
    assert_eq!(snapshot_files(dir.path()), before, "not a byte changed");
}

#[test]
fn a_reader_reports_damage_and_keeps_the_sound_part() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, "k", "message", 4);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(9).position(|w| w == b"message 1").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let before = snapshot_files(dir.path());
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert!(reader.recovery_report().has_damage());
    assert_eq!(reader.load("k"), vec![user("message 0")]);
    drop(reader);
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn readers_see_consistent_prefixes_while_a_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(open_fast(dir.path()));
    writer.append("k", &user("0")).unwrap();
    let handle = {
        let writer = Arc::clone(&writer);
        std::thread::spawn(move || {
            for i in 1..400 {
                writer
                    .append("k", &ChatMessage::user(format!("{i}")))
                    .unwrap();
                if i % 50 == 0 {
                    writer.compact("k").unwrap();
                }
            }
        })
    };
    for _ in 0..30 {
        // A compaction may remove a segment between the listing and the reading: open lists
        // and reads again then, and a read after open reads the session again.
        read_a_prefix(dir.path());
    }
    handle.join().unwrap();
}

/// Opens the store in `dir` read-only and reads session `k`: the messages `0`, `1`, ... in
/// order (a prefix of what the writer writes), with no damage reported. Returns how many.
fn read_a_prefix(dir: &Path) -> usize {
    let reader = LogStore::open_read_only(dir).unwrap();
    let seen: Vec<String> = reader
        .read_messages("k")
        .unwrap()
        .into_iter()
        .map(|m| m.message.content)
        .collect();
    let expected: Vec<String> = (0..seen.len()).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "a prefix of what was written, in order");
    assert!(
        !reader.recovery_report().has_damage(),
        "{:?}, {} messages",
        reader.recovery_report(),
        seen.len()
    );
    seen.len()
}

/// Two sessions with dead bytes (each message replaced once) in small segments, written
/// through `fs`, without the background compactor: every compaction is the test's.
fn writer_with_dead_bytes(fs: &SimFs) -> Arc<LogStore> {
    let options = Options {
        auto_compact: false,
        ..small_segments(sessionlog::Durability::Always)
    };
    let writer = LogStore::open_with_fs(SIM_DIR, options, Arc::new(fs.clone())).unwrap();
    for key in ["k", "j"] {
        for i in 0..40 {
            writer
                .append(key, &user(&format!("{key} draft {i}")))
                .unwrap();
            let text = format!("{key} reply {i} {}", "x".repeat(100));
            writer
                .update_last(key, &ChatMessage::assistant(text))
                .unwrap();
        }
    }
    Arc::new(writer)
}

/// The segment files of the store in `fs`.
fn sim_segments(fs: &SimFs) -> Vec<String> {
    let mut names: Vec<String> = fs
        .list(Path::new(SIM_DIR))
        .unwrap()
        .into_iter()
        .filter_map(|e| e.name.into_string().ok())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_reader_reads_sessions_the_writer_compacted_after_it_opened() {
    let fs = SimFs::new();
    let writer = writer_with_dead_bytes(&fs);
    let reader = LogStore::open_read_only_with_fs(SIM_DIR, Arc::new(fs.clone())).unwrap();
    let before = sim_segments(&fs);
    writer.compact_session("k").unwrap();
    let after = sim_segments(&fs);
    assert!(
        before.iter().any(|name| !after.contains(name)),
        "the compaction removed a segment the reader read: {before:?} then {after:?}"
    );
    let timed = |store: &LogStore| -> Vec<_> {
        let read = store.read_messages("k").unwrap().into_iter();
        read.map(|m| (m.message, m.created_at)).collect()
    };
    assert_eq!(timed(&reader), timed(&writer));
    assert_eq!(reader.load_tail("k", 3), writer.load_tail("k", 3));
    let query = MessageQuery {
        limit: 100,
        ..MessageQuery::new("reply")
    };
    assert_eq!(reader.search_messages(&query).unwrap().len(), 80);
    assert_eq!(observe(&reader), observe(&writer));
    assert!(
        !reader.recovery_report().has_damage(),
        "{:?}",
        reader.recovery_report()
    );
}

/// Compacts sessions `k` and `j` of the writer once, right after the store's folder is listed
/// for the `at`th time (0: the first).
#[derive(Debug, Default)]
struct CompactAfterListing {
    writer: OnceLock<Arc<LogStore>>,
    at: usize,
    listings: AtomicUsize,
    done: AtomicBool,
}

impl CompactAfterListing {
    fn hooked(fs: &SimFs, writer: &Arc<LogStore>, at: usize) -> Hooked<CompactAfterListing> {
        let hooks = CompactAfterListing {
            at,
            ..CompactAfterListing::default()
        };
        let hooked = Hooked::new(fs, hooks);
        assert!(hooked.hooks.writer.set(Arc::clone(writer)).is_ok());
        hooked
    }
}

/// Panics unless the hook compacted, removing some of the segments listed `before` (those
/// the reader had listed when the hook ran).
fn assert_compacted_under(hooked: &Hooked<CompactAfterListing>, fs: &SimFs, before: &[String]) {
    assert!(
        hooked.hooks.done.load(Ordering::SeqCst),
        "the hook compacted"
    );
    let after = sim_segments(fs);
    assert!(
        before.iter().any(|name| !after.contains(name)),
        "the compaction removed a segment the reader listed: {before:?} then {after:?}"
    );
}

impl Hooks for CompactAfterListing {
    fn listed(&self, dir: &Path) {
        if dir == Path::new(SIM_DIR) && self.listings.fetch_add(1, Ordering::SeqCst) == self.at {
            let writer = self.writer.get().unwrap();
            writer.compact_session("k").unwrap();
            writer.compact_session("j").unwrap();
            self.done.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn a_reader_opens_while_a_compaction_removes_what_it_listed() {
    let fs = SimFs::new();
    let writer = writer_with_dead_bytes(&fs);
    let hooked = CompactAfterListing::hooked(&fs, &writer, 0);
    let before = sim_segments(&fs);
    let reader = LogStore::open_read_only_with_fs(SIM_DIR, Arc::new(hooked.clone())).unwrap();
    assert_compacted_under(&hooked, &fs, &before);
    assert_eq!(observe(&reader), observe(&writer));
    assert!(
        !reader.recovery_report().has_damage(),
        "{:?}",
        reader.recovery_report()
    );
}

#[test]
fn a_reader_verifies_while_a_compaction_removes_what_it_listed() {
    let fs = SimFs::new();
    let writer = writer_with_dead_bytes(&fs);
    // Listing 0 is open's; 1 is the verification's.
    let hooked = CompactAfterListing::hooked(&fs, &writer, 1);
    let reader = LogStore::open_read_only_with_fs(SIM_DIR, Arc::new(hooked.clone())).unwrap();
    let before = sim_segments(&fs);
    let report = reader.verify().unwrap();
    assert_compacted_under(&hooked, &fs, &before);
    assert!(report.is_sound(), "no problem: {:?}", report.problems);
    assert_eq!(
        report,
        writer.verify().unwrap(),
        "the files as they are now"
    );
}

/// Rebuilds the writer's search index once, right before the reader opens a run of it: the
/// writer's save replaces the run `STATE` named, and removes it.
#[derive(Debug, Default)]
struct ReindexBeforeRun {
    writer: OnceLock<Arc<LogStore>>,
    done: AtomicBool,
}

impl Hooks for ReindexBeforeRun {
    fn opening(&self, path: &Path) {
        let run = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("run-"));
        if run && !self.done.swap(true, Ordering::SeqCst) {
            self.writer.get().unwrap().reindex().unwrap();
        }
    }
}

#[test]
fn a_reader_searches_while_the_writer_saves_its_index() {
    let fs = SimFs::new();
    let writer = writer_with_dead_bytes(&fs);
    writer.reindex().unwrap(); // the index's files: a run and STATE
    let hooked = Hooked::new(&fs, ReindexBeforeRun::default());
    assert!(hooked.hooks.writer.set(Arc::clone(&writer)).is_ok());
    let reader = LogStore::open_read_only_with_fs(SIM_DIR, Arc::new(hooked.clone())).unwrap();
    let query = MessageQuery {
        limit: 100,
        ..MessageQuery::new("reply")
    };
    let found = reader.search_messages(&query).unwrap();
    assert!(
        hooked.hooks.done.load(Ordering::SeqCst),
        "the writer saved its index"
    );
    assert_eq!(found, writer.search_messages(&query).unwrap());
    assert_eq!(found.len(), 80);
    let findings = &reader.recovery_report().findings;
    assert!(
        !findings
            .iter()
            .any(|f| matches!(f, Finding::IndexRebuilt { .. })),
        "the writer's save is no damage: {findings:?}"
    );
}

const CHILD_DIR: &str = "SESSIONLOG_READER_CHILD_DIR";

/// The writer process of `a_reader_in_another_process_sees_consistent_prefixes`.
#[test]
#[ignore = "the child process of a_reader_in_another_process_sees_consistent_prefixes, \
            which runs it"]
fn child_appender() {
    let dir = std::env::var(CHILD_DIR).expect("run by the parent test");
    // Durability::Always: each append waits for the disk, so the reader overlaps many writes.
    let store = LogStore::open(&dir).unwrap();
    println!("ready");
    for i in 1..300 {
        store
            .append("k", &ChatMessage::user(format!("{i}")))
            .unwrap();
        if i % 50 == 0 {
            store.compact("k").unwrap();
        }
    }
}

#[test]
fn a_reader_in_another_process_sees_consistent_prefixes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_fast(dir.path());
        store.append("k", &user("0")).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept until the child exits: it writes to this pipe to the end.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("ready") {
            break;
        }
    }
    let mut reads = 0;
    let mut longest = 0;
    while child.try_wait().unwrap().is_none() || reads == 0 {
        // A compaction in the writer may remove a segment between the listing and the
        // reading: open lists and reads again then.
        reads += 1;
        longest = longest.max(read_a_prefix(dir.path()));
    }
    assert!(child.wait().unwrap().success());
    drop(lines);
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.load("k").len(), 300);
    assert!(reads > 0 && longest <= 300);
    eprintln!("{reads} reads beside the writer");
}
