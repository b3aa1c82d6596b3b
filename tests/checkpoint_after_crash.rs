//! Checkpoints taken while the store runs: after a crash, open takes every session whose files
//! did not change from the last checkpoint and replays only the others (a session whose newest
//! segment only grew from where the checkpoint left it), with the same answers as a replay of
//! every segment. The running marker tells such a checkpoint from a clean close's.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hooked::{Hooked, Hooks};
use common::{cut_power, full_replay};
use sessionlog::testing::{Model, SimFs};
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

const DIR: &str = common::SIM_DIR;

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        checkpoint_bytes: 0,
        checkpoint_interval: None,
        ..Options::with_durability(Durability::Always)
    }
}

fn open(fs: &SimFs, options: &Options) -> LogStore {
    LogStore::open_with_fs(DIR, options.clone(), Arc::new(fs.clone())).unwrap()
}

fn exists(fs: &SimFs, name: &str) -> bool {
    let path = Path::new(DIR).join(name);
    fs.files().iter().any(|(p, _)| *p == path)
}

fn say(store: &LogStore, key: &str, text: &str) {
    store.append(key, &ChatMessage::user(text)).unwrap();
}

/// A store of 30 sessions of 3 messages each.
fn thirty_sessions(fs: &SimFs, options: &Options) -> LogStore {
    let store = open(fs, options);
    for i in 0..30 {
        for m in 0..3 {
            say(&store, &format!("s{i}"), &format!("message {m} of s{i}"));
        }
    }
    store
}

#[test]
fn an_open_after_a_crash_replays_only_the_sessions_written_since_the_checkpoint() {
    let fs = SimFs::new();
    let options = options();
    let store = thirty_sessions(&fs, &options);
    store.checkpoint().unwrap();
    // After it: appends (one rolling over to a new segment), a change of the last message, a
    // delete, a compaction, and a new session.
    say(&store, "s1", "after the checkpoint");
    for m in 0..40 {
        say(
            &store,
            "s2",
            &format!("{m} a message long enough to fill a segment soon"),
        );
    }
    store
        .update_last("s4", &ChatMessage::assistant("changed"))
        .unwrap();
    store.delete_session("s3").unwrap();
    store.compact("s5").unwrap();
    say(&store, "new", "born after the checkpoint");
    let before = Model::observe(&store);
    cut_power(&fs, store);

    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint, "{report:?}");
    assert_eq!(report.replayed_sessions, 6, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(Model::observe(&store), before);
    drop(store);
    assert_eq!(full_replay(&fs), before);
}

#[test]
fn after_a_clean_close_the_first_change_marks_the_checkpoint_and_a_crash_replays_that_session() {
    let fs = SimFs::new();
    let options = options();
    let store = open(&fs, &options);
    for i in 0..10 {
        say(&store, &format!("s{i}"), "hello");
    }
    store.close().unwrap();
    assert!(exists(&fs, "CHECKPOINT"));
    assert!(!exists(&fs, "CHECKPOINT.running"));

    let store = open(&fs, &options);
    assert_eq!(store.recovery_report().replayed_sessions, 0);
    store.load("s0"); // reading changes nothing
    assert!(!exists(&fs, "CHECKPOINT.running"));
    say(&store, "s7", "after the open");
    assert!(exists(&fs, "CHECKPOINT.running"));
    let before = Model::observe(&store);
    cut_power(&fs, store);

    let store = open(&fs, &options);
    let report = store.recovery_report();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, 1);
    assert_eq!(Model::observe(&store), before);
    // A clean close puts a checkpoint of its own in place, and the marker goes.
    store.close().unwrap();
    assert!(!exists(&fs, "CHECKPOINT.running"));
    let store = open(&fs, &options);
    assert_eq!(store.recovery_report().replayed_sessions, 0);
    assert_eq!(Model::observe(&store), before);
    drop(store);
    assert_eq!(full_replay(&fs), before);
}

#[test]
fn writes_not_yet_synced_when_the_power_goes_are_replayed_from_what_the_disk_kept() {
    // Under `Never` a checkpoint syncs what it describes first; what came after may be lost,
    // and each session is then what its files hold, never what the checkpoint recorded of
    // more than that.
    let fs = SimFs::new();
    let options = Options {
        durability: Durability::Never,
        ..options()
    };
    let store = open(&fs, &options);
    for i in 0..8 {
        say(&store, &format!("s{i}"), "synced by the checkpoint");
    }
    store.checkpoint().unwrap();
    let at_checkpoint = Model::observe(&store);
    for i in 0..4 {
        say(&store, &format!("s{i}"), "never synced");
    }
    cut_power(&fs, store);
    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint && !report.has_damage(), "{report:?}");
    assert_eq!(Model::observe(&store), at_checkpoint);
    drop(store);
    assert_eq!(full_replay(&fs), at_checkpoint);
}

#[test]
fn a_tail_that_does_not_link_to_the_checkpoint_is_damage_not_served() {
    // A record after the checkpoint's last one of a session must name it as its previous:
    // one from elsewhere (here, the session's own records, written again) is damage.
    let fs = SimFs::new();
    let options = options();
    let store = open(&fs, &options);
    let segment = || {
        fs.files()
            .into_iter()
            .find(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
            .unwrap()
    };
    say(&store, "a", "one");
    let one_ends = segment().1.len();
    say(&store, "a", "two");
    store.checkpoint().unwrap();
    let checkpointed = store.load("a");
    cut_power(&fs, store);
    // The record of "two" appended again: the file only grew, but the copy links to "one".
    let (path, mut bytes) = segment();
    let two = bytes[one_ends..].to_vec();
    bytes.extend_from_slice(&two);
    fs.put_file(&path, &bytes);
    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.has_damage(), "{report:?}");
    assert_eq!(store.load("a"), checkpointed);
}

#[test]
fn the_background_thread_takes_a_checkpoint_after_checkpoint_bytes() {
    let fs = SimFs::new();
    let options = Options {
        checkpoint_bytes: 2048,
        ..options()
    };
    let store = open(&fs, &options);
    for i in 0..20 {
        say(
            &store,
            &format!("s{i}"),
            "a message of some length, written twenty times",
        );
    }
    // The checkpointer is woken by the bytes; it looks again every second at most.
    let started = Instant::now();
    while !exists(&fs, "CHECKPOINT") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no checkpoint was taken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(exists(&fs, "CHECKPOINT.running"));
    // Nothing is written while the crash is set up: what the checkpoint holds stays.
    let before = Model::observe(&store);
    cut_power(&fs, store);
    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint, "{report:?}");
    assert!(report.replayed_sessions < 20, "{report:?}");
    assert_eq!(Model::observe(&store), before);
}

#[test]
fn a_checkpoint_of_format_6_written_by_the_previous_build_is_read() {
    let dir = common::fixture_copy("checkpoint-v6-store");
    let version = std::fs::read(dir.path().join("CHECKPOINT")).unwrap()[8..12].to_vec();
    assert_eq!(version, 6u32.to_le_bytes());
    let from_checkpoint = {
        let store = common::open(dir.path());
        let report = store.recovery_report();
        assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
        assert_eq!(report.replayed_sessions, 0);
        Model::observe(&store)
    };
    // What a replay of every segment gives.
    assert_eq!(
        Model::observe(&LogStore::open_read_only(dir.path()).unwrap()),
        from_checkpoint
    );
    // A build that reads only version 6 would trust it whatever the marker says: the first
    // change removes it instead of marking it.
    {
        let store = common::open(dir.path());
        store.append("user_0", &ChatMessage::user("more")).unwrap();
        assert!(!dir.path().join("CHECKPOINT").exists());
        std::mem::forget(store); // a crash
        std::fs::remove_file(dir.path().join("LOCK")).ok();
    }
    let store = common::open(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(store.load("user_0").len(), 5);
    assert_eq!(store.list_sessions().len(), 3);
    drop(store);
    let store = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(store.load("user_1").len(), 4);
}

#[test]
fn an_erasure_takes_the_checkpoint_that_holds_the_erased_session_with_it() {
    const KEY: &str = "secret-key-5d1e";
    let fs = SimFs::new();
    let options = options();
    let store = open(&fs, &options);
    say(&store, KEY, "hello");
    store.set_session_name(KEY, "a name to forget").unwrap();
    say(&store, "other", "stays");
    store.checkpoint().unwrap();
    let holding = |needle: &[u8]| -> Vec<std::path::PathBuf> {
        fs.files()
            .into_iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(path, _)| path)
            .collect()
    };
    assert!(holding(KEY.as_bytes()).contains(&Path::new(DIR).join("CHECKPOINT")));
    store.erase_session(KEY).unwrap();
    assert_eq!(holding(KEY.as_bytes()), Vec::<std::path::PathBuf>::new());
    assert!(holding(b"a name to forget").is_empty());
    // The next checkpoint describes the store without it; after a crash all is as it was.
    store.checkpoint().unwrap();
    assert!(holding(KEY.as_bytes()).is_empty());
    let before = Model::observe(&store);
    cut_power(&fs, store);
    let store = open(&fs, &options);
    assert!(store.recovery_report().from_checkpoint);
    assert_eq!(Model::observe(&store), before);
    assert!(!store.session_exists(KEY));
}

/// A file system that keeps no change time (the simulated one, through hooks that change
/// nothing: their `stat_changed` is the trait's default).
#[derive(Debug, Default)]
struct NoChangeTimes;

impl Hooks for NoChangeTimes {}

#[test]
fn without_change_times_an_open_after_a_crash_agrees_with_a_full_replay() {
    // A session whose newest segment grew is replayed whole there (its older files matched
    // on length and time alone); the answers are a full replay's either way.
    let sim = SimFs::new();
    let fs = Hooked::new(&sim, NoChangeTimes);
    let options = options();
    let open = || LogStore::open_with_fs(DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    let store = open();
    for m in 0..30 {
        say(
            &store,
            "long",
            &format!("{m} a message that fills segments in a while"),
        );
        say(&store, &format!("s{}", m % 5), "short");
    }
    store.checkpoint().unwrap();
    say(&store, "long", "after the checkpoint");
    say(&store, "s1", "after the checkpoint");
    let before = Model::observe(&store);
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    let store = open();
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, 2);
    assert_eq!(Model::observe(&store), before);
    drop(store);
    assert_eq!(full_replay(&sim), before);
}

#[test]
fn a_zero_checkpoint_interval_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        checkpoint_interval: Some(Duration::ZERO),
        ..Options::default()
    };
    let opened = LogStore::open_with(dir.path().join("store"), options);
    assert!(
        matches!(opened, Err(sessionlog::Error::InvalidOptions { .. })),
        "{:?}",
        opened.err()
    );
    assert!(!dir.path().join("store").exists());
}

/// Every file under `dir` in `fs` whose bytes hold `marker`.
fn files_holding(fs: &SimFs, dir: &Path, marker: &[u8]) -> Vec<std::path::PathBuf> {
    use sessionlog::fs::{FileSystem, OpenMode};
    let mut found = Vec::new();
    for entry in fs.list(dir).unwrap() {
        let path = dir.join(&entry.name);
        if !entry.is_file {
            found.extend(files_holding(fs, &path, marker));
            continue;
        }
        let file = fs.open(&path, OpenMode::Read).unwrap();
        let mut bytes = vec![0; file.size().unwrap() as usize];
        file.read_at(&mut bytes, 0).unwrap();
        if bytes.windows(marker.len()).any(|w| w == marker) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_delete_restored_at_open_leaves_nothing_of_the_old_session_in_the_checkpoint() {
    const MARKER: &str = "old-session-marker";
    let options = Options {
        durability: Durability::Never,
        ..options()
    };
    let mut restored = 0;
    for seed in 0..64 {
        let fs = SimFs::new();
        let store = open(&fs, &options);
        store.append("k", &ChatMessage::user("old")).unwrap();
        store.set_session_name("k", MARKER).unwrap();
        store.append("other", &ChatMessage::user("kept")).unwrap();
        // A checkpoint taken while the store runs holds the old session, its name included.
        store.checkpoint().unwrap();
        // Its delete, then a new session under its key, neither synced: a disk that writes
        // back in any order may keep the new session and lose the delete.
        store.delete_session("k").unwrap();
        store.append("k", &ChatMessage::user("new")).unwrap();
        fs.cut_power_after(0);
        drop(store);
        fs.crash_reordering(seed);
        let store = open(&fs, &options);
        let report = store.recovery_report().clone();
        let twin = report
            .findings
            .iter()
            .any(|f| matches!(f, sessionlog::Finding::DeleteRestored { .. }));
        if !(twin && report.from_checkpoint) {
            continue;
        }
        restored += 1;
        assert_eq!(store.load("k"), vec![ChatMessage::user("new")]);
        assert_eq!(store.load("other"), vec![ChatMessage::user("kept")]);
        // The old session was erased at open: no file keeps its name, the checkpoint included.
        let holding = files_holding(&fs, Path::new(DIR), MARKER.as_bytes());
        assert!(
            holding.is_empty(),
            "seed {seed}: {holding:?} hold the erased session's name"
        );
        drop(store);
        let store = open(&fs, &options);
        assert_eq!(store.load("other"), vec![ChatMessage::user("kept")]);
    }
    assert!(
        restored > 0,
        "no seed kept the new session and lost the delete"
    );
}

#[test]
fn a_checkpoint_taken_while_sessions_are_cold_records_them_and_an_open_after_a_crash_agrees() {
    let fs = SimFs::new();
    let options = options();
    let store = thirty_sessions(&fs, &options);
    store.set_session_name("s9", "nine").unwrap();
    store.close().unwrap();

    // Every session cold; two written, one read, then a checkpoint: the 27 others are
    // recorded from their entries and stay cold.
    let store = open(&fs, &options);
    assert_eq!(store.health().sessions_cold, 30);
    say(&store, "s1", "after the open");
    say(&store, "new", "born after the open");
    store.load("s2");
    store.checkpoint().unwrap();
    assert_eq!(store.health().sessions_cold, 28);
    // After it: one more write to a cold session, then the crash.
    say(&store, "s3", "after the checkpoint");
    let before = Model::observe(&store);
    cut_power(&fs, store);

    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, 1, "{report:?}");
    assert_eq!(Model::observe(&store), before);
    drop(store);
    assert_eq!(full_replay(&fs), before);
}
