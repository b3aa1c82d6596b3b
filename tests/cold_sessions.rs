//! Cold sessions: an open from a checkpoint written at a clean close leaves every live session
//! in the checkpoint's bytes until it is first read or written. Listings read them there;
//! every answer is the one the store gave before it closed.

mod common;

#[cfg(target_os = "linux")]
use common::open_checkpoints;
use common::{observe, user};
use sessionlog::{ChatMessage, Durability, ListQuery, LogStore, Options, SessionBackend};
use tempfile::TempDir;

fn options() -> Options {
    Options::with_durability(Durability::Never)
}

/// A store of `n` sessions with every kind of metadata, some archived, cleared, running or
/// deleted, and a fork; closed. Returns what it answered before closing.
fn varied_store(dir: &std::path::Path, n: usize) -> String {
    let store = LogStore::open_with(dir, options()).unwrap();
    for i in 0..n {
        let key = format!("sender/{i}/ü");
        for j in 0..=(i % 4) {
            store.append(&key, &user(&format!("{i} says {j}"))).unwrap();
        }
        match i % 7 {
            0 => store.set_session_name(&key, &format!("name {i}")).unwrap(),
            1 => store.set_session_agent_alias(&key, "helper").unwrap(),
            2 => store
                .set_session_state(&key, "running", Some(&format!("turn {i}")))
                .unwrap(),
            3 => {
                store.clear_messages(&key).unwrap();
            }
            4 => {
                store.archive_session(&key).unwrap();
            }
            5 => {
                store.delete_session(&key).unwrap();
            }
            _ => {}
        }
    }
    store.fork_session("sender/6/ü", "fork", None).unwrap();
    store
        .append("fork", &ChatMessage::assistant("after the fork"))
        .unwrap();
    let seen = observe(&store);
    store.close().unwrap();
    seen
}

#[test]
fn a_clean_open_leaves_every_live_session_cold_and_listing_them_keeps_them_so() {
    let dir = TempDir::new().unwrap();
    varied_store(dir.path(), 40);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let cold = store.health().sessions_cold;
    assert!(cold >= 30, "{cold} cold sessions");
    // The listings, the search without a keyword, the running and stuck sessions and the
    // statistics read the cold sessions where they are.
    let metadata = store.list_sessions_with_metadata();
    assert!(!metadata.is_empty());
    store.list_running_sessions();
    store.list_stuck_sessions(0);
    store.stats();
    store.search(&sessionlog::SessionQuery::default());
    assert_eq!(
        store.health().sessions_cold,
        cold,
        "listing warmed a session"
    );
    // One load warms one session.
    store.load(&metadata[0].key);
    assert_eq!(store.health().sessions_cold, cold - 1);
}

#[test]
fn every_answer_from_cold_sessions_is_the_one_given_before_the_close() {
    let dir = TempDir::new().unwrap();
    let before = varied_store(dir.path(), 60);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert!(store.health().sessions_cold > 0);
    // `observe` lists first (from the cold bytes), then reads each session (warming it).
    assert_eq!(observe(&store), before);
    // Left cold: the archived sessions (i % 7 == 4), which no listing shows.
    assert_eq!(store.health().sessions_cold, 8);
    // Listed again, from the warm slots: the same.
    assert_eq!(observe(&store), before);
}

/// Every page of `store`'s sessions, `limit` at a time, following the cursors.
fn all_pages(store: &LogStore, limit: usize) -> Vec<String> {
    pages_between(store, limit, None, None)
}

#[test]
fn pages_of_cold_sessions_keep_them_cold_and_follow_writes_and_deletes() {
    let dir = TempDir::new().unwrap();
    varied_store(dir.path(), 30);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let cold = store.health().sessions_cold;
    let listed: Vec<String> = store
        .list_sessions_with_metadata()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(all_pages(&store, 4), listed);
    assert_eq!(
        store.health().sessions_cold,
        cold,
        "paging warmed a session"
    );
    // A write moves a cold session to the front; a delete takes one out; a warmed one that
    // was not written stays where it was.
    let (last, second) = (listed[listed.len() - 1].clone(), listed[1].clone());
    store.load(&listed[2]);
    store.append(&last, &user("back again")).unwrap();
    store.delete_session(&second).unwrap();
    let mut expected: Vec<String> = listed
        .iter()
        .filter(|k| **k != last && **k != second)
        .cloned()
        .collect();
    expected.insert(0, last);
    assert_eq!(all_pages(&store, 3), expected);
    let listed_now: Vec<String> = (store.list_sessions_with_metadata().into_iter())
        .map(|m| m.key)
        .collect();
    assert_eq!(listed_now, expected);
    assert_eq!(store.health().sessions_cold, cold - 3);
}

#[test]
fn a_checkpoint_leaves_cold_sessions_cold_and_records_every_one() {
    let dir = TempDir::new().unwrap();
    let before = varied_store(dir.path(), 30);
    // A write to one session, a read of another, and a checkpoint taken while the store
    // runs: the sessions left cold are recorded from their entries, and stay cold.
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let cold = store.health().sessions_cold;
    store.append("newcomer", &user("hello")).unwrap();
    store.load("sender/1/ü");
    // Every session's metadata but the one written between the rounds.
    let others = |store: &LogStore| -> Vec<String> {
        (store.list_sessions_with_metadata().into_iter())
            .filter(|m| m.key != "newcomer")
            .map(|m| format!("{m:?}"))
            .collect()
    };
    let listed = others(&store);
    for round in 0..2 {
        store.checkpoint().unwrap();
        assert_eq!(store.health().sessions_cold, cold - 1);
        // They are read from the new checkpoint: the one it replaced is closed.
        #[cfg(target_os = "linux")]
        assert_eq!(open_checkpoints(dir.path()), ["CHECKPOINT".to_string()]);
        assert_eq!(others(&store), listed, "round {round}");
        // A write after it, to the warm session: the next checkpoint moves them again.
        store.append("newcomer", &user("again")).unwrap();
        store.remove_last("newcomer").unwrap();
    }
    store.delete_session("newcomer").unwrap();
    assert_eq!(observe(&store), before);
    store.close().unwrap();
    // The close's checkpoint (every session warm by then) gives the same answers.
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(observe(&store), before);
}

#[test]
fn a_session_written_after_its_listing_from_the_cold_bytes_is_listed_as_written() {
    let dir = TempDir::new().unwrap();
    varied_store(dir.path(), 10);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let key = "sender/8/ü";
    let listed = |store: &LogStore| {
        store
            .list_sessions_with_metadata()
            .into_iter()
            .find(|m| m.key == key)
            .unwrap()
    };
    let before = listed(&store);
    store.append(key, &user("one more")).unwrap();
    store.set_session_name(key, "renamed").unwrap();
    let after = listed(&store);
    assert_eq!(after.message_count, before.message_count + 1);
    assert_eq!(after.name.as_deref(), Some("renamed"));
    assert_eq!(
        store.list_sessions_with_metadata()[0].key,
        key,
        "most recent first"
    );
}

#[test]
fn a_folder_rolled_back_under_a_newer_anchor_log_is_reported_at_open_while_cold() {
    let dir = TempDir::new().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for key in ["alice", "bob", "carol"] {
        store.append(key, &user("first")).unwrap();
    }
    store.close().unwrap();
    // A copy of every file but the anchor log, then more writes to bob and a clean close,
    // which anchors bob's new point.
    let old = TempDir::new().unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "ANCHORS")
        .collect();
    for name in &names {
        let from = dir.path().join(name);
        if from.is_file() {
            std::fs::copy(&from, old.path().join(name)).unwrap();
        }
    }
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("bob", &user("second")).unwrap();
    store.close().unwrap();
    // The old files put back: the checkpoint and segments say bob ends at his first message.
    for name in &names {
        let from = old.path().join(name);
        if from.is_file() {
            std::fs::copy(&from, dir.path().join(name)).unwrap();
        }
    }
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let rolled: Vec<_> = (store.recovery_report().findings.iter())
        .filter_map(|f| match f {
            sessionlog::Finding::RolledBack { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rolled, vec![Some("bob".to_string())]);
    assert_eq!(store.health().sessions_cold, 3, "found without a slot");
}

#[test]
fn cold_sessions_with_one_last_activity_are_listed_by_key_among_warm_ones() {
    let dir = TempDir::new().unwrap();
    let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for key in ["delta", "bravo", "echo", "alpha", "charlie"] {
        store.append_at(key, &user("same time"), at).unwrap();
    }
    let before: Vec<String> = store.list_sessions();
    assert_eq!(before, ["alpha", "bravo", "charlie", "delta", "echo"]);
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.list_sessions(), before);
    // Two warm, three cold: the same order.
    store.load("bravo");
    store.load("echo");
    assert_eq!(store.health().sessions_cold, 3);
    assert_eq!(store.list_sessions(), before);
    let listed: Vec<String> = (store.list_sessions_with_metadata().into_iter())
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, before);
}

/// A store of 20 sessions `k{i}`, one message each, named `marker-{i:02}`; closed.
fn marked_store(dir: &std::path::Path) {
    let store = LogStore::open_with(dir, options()).unwrap();
    for i in 0..20 {
        let key = format!("k{i}");
        store.append(&key, &user("hello")).unwrap();
        store
            .set_session_name(&key, &format!("marker-{i:02}"))
            .unwrap();
    }
    store.close().unwrap();
}

/// Changes `marker-{from}` to `marker-{to}` in the checkpoint of `dir`, in place: under a
/// store that has it open, the entry no longer matches what open read.
fn change_cold_name(dir: &std::path::Path, from: &str, to: &str) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("CHECKPOINT");
    let bytes = std::fs::read(&path).unwrap();
    let from = format!("marker-{from}");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("the name is in the checkpoint");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    (file.write_all_at(format!("marker-{to}").as_bytes(), at as u64)).unwrap();
}

/// The findings that say a session was replayed from its files instead of its entry.
fn replayed_instead(store: &LogStore) -> usize {
    (store.recovery_report().findings.iter())
        .filter(|f| {
            matches!(f, sessionlog::Finding::CheckpointIgnored { reason }
                if reason.contains("replayed from its files instead"))
        })
        .count()
}

#[test]
fn a_cold_entry_changed_in_the_checkpoint_while_open_is_never_served() {
    // Listed whole, and by a page, which walks the activity index: the session is replayed
    // in the middle of the walk.
    for paged in [false, true] {
        let dir = TempDir::new().unwrap();
        marked_store(dir.path());
        let store = LogStore::open_with(dir.path(), options()).unwrap();
        assert_eq!(store.health().sessions_cold, 20);
        // The name of k7 changed in the checkpoint under the open store.
        change_cold_name(dir.path(), "07", "09");
        let rows = match paged {
            true => store.list_page(&ListQuery::default()).unwrap().sessions,
            false => store.list_sessions_with_metadata(),
        };
        let names: Vec<Option<String>> = rows.into_iter().map(|m| m.name).collect();
        assert_eq!(
            names.len(),
            20,
            "paged {paged}: k7 is listed, replayed from its files"
        );
        for marker in ["marker-07", "marker-09"] {
            let found = names.iter().filter(|n| n.as_deref() == Some(marker));
            let what = "the changed entry is never served";
            assert_eq!(found.count(), 1, "paged {paged}: {marker}: {what}");
        }
        assert_eq!(replayed_instead(&store), 1);
        assert_eq!(store.health().sessions_cold, 19, "k7 alone was warmed");
        assert_eq!(store.read_messages("k7").unwrap().len(), 1);
        assert_eq!(store.read_messages("k8").unwrap().len(), 1);
        assert_eq!(store.health().read_errors, 0);
    }
}

#[test]
fn an_erasure_and_a_checkpoint_go_through_a_cold_entry_that_cannot_be_read_again() {
    let dir = TempDir::new().unwrap();
    marked_store(dir.path());
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let listing = |store: &LogStore| {
        let rows = store.list_sessions_with_metadata().into_iter();
        format!("{:?}", rows.filter(|m| m.key != "k3").collect::<Vec<_>>())
    };
    let before = listing(&store);
    change_cold_name(dir.path(), "07", "09");
    // The erasure warms every session (k7 from its files), then removes the checkpoint.
    store.erase_session("k3").unwrap();
    assert!(!dir.path().join("CHECKPOINT").exists());
    assert_eq!(replayed_instead(&store), 1);
    let health = store.health();
    assert!(!health.poisoned);
    assert_eq!((health.read_errors, health.sessions_cold), (0, 0));
    assert_eq!(listing(&store), before);
    // Checkpoints are taken again, and hold k7 as its files do.
    store.append("k7", &user("after the erasure")).unwrap();
    store.checkpoint().unwrap();
    assert!(
        dir.path().join("CHECKPOINT").exists(),
        "a checkpoint is put in place"
    );
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let k7 = store.list_sessions_with_metadata();
    let k7 = k7.iter().find(|m| m.key == "k7").unwrap();
    assert_eq!(
        (k7.name.as_deref(), k7.message_count),
        (Some("marker-07"), 2)
    );
}

#[test]
fn a_cold_entry_changed_while_its_files_changed_too_is_refused_and_poisons_nothing() {
    let dir = TempDir::new().unwrap();
    marked_store(dir.path());
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    change_cold_name(dir.path(), "07", "09");
    // k7's segment grew too: its files are not those the checkpoint claims, so a replay of
    // them is not taken in the entry's place.
    let files = files_of(dir.path(), "marker-07");
    let [(segment, _)] = &files[..] else {
        panic!("k7's segment, by its name: {files:?}")
    };
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(segment)
            .unwrap();
        file.write_all(b"appended while the store ran").unwrap();
    }
    let err = store.read_messages("k7").unwrap_err();
    assert!(
        matches!(&err, sessionlog::Error::Corrupt { reason, .. } if reason.contains("\"k7\"")),
        "{err:?}"
    );
    assert_eq!(
        store.list_sessions_with_metadata().len(),
        19,
        "k7 is left out"
    );
    assert!(store.health().read_errors >= 1, "and counted");
    // In a store that has held no fork, an erasure has no fork to look for: it goes through.
    store.erase_session("k2").unwrap();
    // With a fork in the store, an erasure, which must find every fork of the session
    // first, is refused: k7 cannot be read. It changes nothing, and the store stays writable.
    store.fork_session("k5", "k5-fork", None).unwrap();
    let err = store.erase_session("k3").unwrap_err();
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(!store.health().poisoned);
    assert_eq!(store.read_messages("k3").unwrap().len(), 1);
    store.append("k4", &user("after the refusal")).unwrap();
    assert_eq!(store.read_messages("k4").unwrap().len(), 2);
    drop(store);
    // A reopen replays k7 from its files (the bytes appended are cut off as a torn tail);
    // then the erasure goes through.
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.read_messages("k7").unwrap().len(), 1);
    store.erase_session("k3").unwrap();
    assert_eq!(store.read_messages("k4").unwrap().len(), 2);
    assert_eq!(store.list_sessions().len(), 19);
}

#[test]
fn every_flipped_byte_of_the_checkpoint_is_refused_or_harmless_and_open_answers_the_same() {
    let dir = TempDir::new().unwrap();
    let before = varied_store(dir.path(), 7);
    let path = dir.path().join("CHECKPOINT");
    let original = std::fs::read(&path).unwrap();
    // The header and the body (the location section is read per session, and checked by its
    // own CRC at that read).
    let body_end = {
        let len = |at: usize| u64::from_le_bytes(original[at..at + 8].try_into().unwrap());
        32 + len(12) as usize
    };
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    for at in 0..body_end {
        let mut bytes = original.clone();
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        // The stamp would trust the folder's listing; the flipped file is what is tested.
        std::fs::write(dir.path().join("LOCK"), &lock).unwrap();
        let store = LogStore::open_with(dir.path(), options()).unwrap();
        assert_eq!(observe(&store), before, "byte {at} flipped");
        drop(store);
        std::fs::write(&path, &original).unwrap();
    }
}

/// Every page of `store`'s sessions active in `[since, before)`, `limit` at a time.
fn pages_between(
    store: &LogStore,
    limit: usize,
    since: Option<chrono::DateTime<chrono::Utc>>,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_page(&ListQuery {
                limit,
                cursor: cursor.take(),
                active_since: since,
                active_before: before,
                ..ListQuery::default()
            })
            .unwrap();
        keys.extend(page.sessions.into_iter().map(|m| m.key));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return keys,
        }
    }
}

#[test]
fn pages_merge_warm_and_cold_sessions_in_listing_order_through_random_writes() {
    let seeds = common::env_number("SESSIONLOG_COLD_PAGE_SEEDS", 3);
    for seed in 0..seeds {
        let dir = TempDir::new().unwrap();
        varied_store(dir.path(), 40);
        let store = LogStore::open_with(dir.path(), options()).unwrap();
        let mut rng = common::Lcg(seed * 7919 + 1);
        // The index is built while every session is cold, then follows the writes.
        assert_eq!(all_pages(&store, 5).len(), store.list_sessions().len());
        let cold_at_start = store.health().sessions_cold;
        // Steps that listed warm and cold sessions together.
        let mut mixed = 0;
        for step in 0..60 {
            if step == 40 {
                // A checkpoint leaves the cold sessions cold.
                let cold = store.health().sessions_cold;
                store.checkpoint().unwrap();
                assert_eq!(store.health().sessions_cold, cold);
            }
            if step == 50 {
                // Every session warmed (`verify` checks each): the index is built again from
                // the slots.
                assert!(store.verify().unwrap().is_sound());
                assert_eq!(store.health().sessions_cold, 0);
            }
            // Most of the keys the store holds, and some new ones.
            let key = format!("sender/{}/ü", rng.next(60));
            match rng.next(7) {
                0 | 1 => store.append(&key, &user(&format!("step {step}"))).unwrap(),
                2 => {
                    store.delete_session(&key).unwrap();
                }
                3 => {
                    store.load(&key); // warms it, and it keeps its place
                }
                4 => store.set_session_name(&key, &format!("n{step}")).unwrap(),
                5 => {
                    store.clear_messages(&key).unwrap();
                }
                _ => {
                    // Refused while a live session holds the key.
                    let _ = store.restore_session(&key);
                }
            }
            // (A second delete under one key erases the older session for good, which warms
            // them all: see `mixed`.)
            let cold = store.health().sessions_cold;
            mixed += usize::from(0 < cold && cold < cold_at_start);
            let listed: Vec<(String, chrono::DateTime<chrono::Utc>)> = store
                .list_sessions_with_metadata()
                .into_iter()
                .map(|m| (m.key, m.last_activity))
                .collect();
            let keys: Vec<String> = listed.iter().map(|(k, _)| k.clone()).collect();
            let limit = 1 + rng.next(6) as usize;
            assert_eq!(
                all_pages(&store, limit),
                keys,
                "seed {seed}, step {step}: pages of {limit}"
            );
            if listed.len() > 2 {
                // A window of activity: the sessions listed in it, in order.
                let a = listed[rng.next(listed.len() as u64) as usize].1;
                let b = listed[rng.next(listed.len() as u64) as usize].1;
                let (before, since) = (a.max(b), a.min(b));
                let inside: Vec<String> = (listed.iter())
                    .filter(|(_, at)| *at >= since && *at < before)
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(
                    pages_between(&store, limit, Some(since), Some(before)),
                    inside,
                    "seed {seed}, step {step}: pages in a window"
                );
            }
        }
        assert!(
            mixed >= 10,
            "seed {seed}: {mixed} steps with warm and cold sessions"
        );
    }
}

/// Copies every file of `from` into `to`, but `skip`.
fn copy_files(from: &std::path::Path, to: &std::path::Path, skip: &str) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != skip && entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_cold_session_with_another_history_to_its_anchored_number_is_reported_at_open() {
    let dir = TempDir::new().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for key in ["alice", "bob", "carol"] {
        store.append(key, &user("first")).unwrap();
    }
    store.close().unwrap();
    let other = TempDir::new().unwrap();
    copy_files(dir.path(), other.path(), "");
    // The same next write in both folders, with other words: bob ends at one number in
    // both, with two chain heads.
    for (folder, words) in [(dir.path(), "second"), (other.path(), "another second")] {
        let store = LogStore::open_with(folder, options()).unwrap();
        store.append("bob", &user(words)).unwrap();
        store.close().unwrap();
    }
    // The other folder's files under the first one's anchors.
    copy_files(other.path(), dir.path(), "ANCHORS");
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let rolled: Vec<_> = (store.recovery_report().findings.iter())
        .filter_map(|f| match f {
            sessionlog::Finding::RolledBack {
                key,
                anchored_seq,
                found_seq,
                ..
            } => Some((key.clone(), anchored_seq == found_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(rolled, vec![(Some("bob".to_string()), true)]);
    assert_eq!(store.health().sessions_cold, 3, "found without a slot");
}

#[test]
#[cfg(target_os = "linux")]
fn an_erasure_after_a_page_of_cold_sessions_leaves_no_handle_on_the_removed_checkpoint() {
    let dir = TempDir::new().unwrap();
    varied_store(dir.path(), 20);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    // The page's index is built over the cold sessions' entries.
    assert_eq!(all_pages(&store, 3).len(), store.list_sessions().len());
    store.erase_session("sender/8/ü").unwrap();
    assert!(!dir.path().join("CHECKPOINT").exists());
    // No handle keeps the removed checkpoint's bytes (the erased session's key and name).
    assert_eq!(open_checkpoints(dir.path()), Vec::<String>::new());
    // Pages are built again, from the slots.
    assert_eq!(all_pages(&store, 3).len(), store.list_sessions().len());
}

/// Counts the reads of the checkpoint by the thread named `lister`, and holds the first one
/// once armed until the test says go.
#[derive(Debug, Default)]
struct HoldListing {
    armed: std::sync::atomic::AtomicBool,
    reads: std::sync::atomic::AtomicUsize,
    held: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    go: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl common::hooked::Hooks for HoldListing {
    fn read(&self, path: &std::path::Path) {
        use std::sync::atomic::Ordering;
        let lister = std::thread::current().name() == Some("lister");
        if !lister || !path.ends_with("CHECKPOINT") {
            return;
        }
        self.reads.fetch_add(1, Ordering::SeqCst);
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(held) = self.held.lock().unwrap().take() {
            held.send(()).unwrap();
        }
        if let Some(go) = self.go.lock().unwrap().take() {
            go.recv().unwrap();
        }
    }
}

/// Waits until the thread whose id `tid` names sleeps (Linux's `/proc`) and stays asleep
/// for 50 ms: blocked on a lock no one lets go of soon (another, held a moment by a
/// background thread, would wake it before).
#[cfg(target_os = "linux")]
fn until_asleep(tid: &str) {
    let stat = format!("/proc/self/task/{tid}/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut asleep = 0;
    loop {
        let text = std::fs::read_to_string(&stat).unwrap();
        // The state follows the command's closing parenthesis.
        let state = text.rsplit(')').next().unwrap().trim_start().chars().next();
        asleep = if state == Some('S') { asleep + 1 } else { 0 };
        if asleep == 10 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never blocked: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_listing_that_overlaps_the_first_erasure_leaves_out_no_cold_session() {
    use std::sync::atomic::Ordering;
    let sim = sessionlog::testing::SimFs::new();
    let fs = common::hooked::Hooked::new(&sim, HoldListing::default());
    let dir = std::path::Path::new("/store");
    let open = || LogStore::open_with_fs(dir, options(), std::sync::Arc::new(fs.clone())).unwrap();
    let store = open();
    for i in 0..3000 {
        store.append(&format!("keep/{i}"), &user("hello")).unwrap();
    }
    store.append("gone", &user("to erase")).unwrap();
    store.close().unwrap();
    let store = open();
    assert_eq!(store.health().sessions_cold, 3001);
    let list_as_lister = |store: &LogStore| {
        std::thread::scope(|s| {
            let lister = std::thread::Builder::new().name("lister".into());
            let lister = lister.spawn_scoped(s, || store.list_sessions_with_metadata());
            lister.unwrap().join().unwrap()
        })
    };
    // A listing reads the checkpoint in more than one read.
    assert_eq!(list_as_lister(&store).len(), 3001);
    let reads = fs.hooks.reads.swap(0, Ordering::SeqCst);
    assert!(reads > 1, "{reads} read");
    let (held_tx, held) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    *fs.hooks.held.lock().unwrap() = Some(held_tx);
    *fs.hooks.go.lock().unwrap() = Some(go_rx);
    fs.hooks.armed.store(true, Ordering::SeqCst);
    std::thread::scope(|s| {
        let lister = std::thread::Builder::new()
            .name("lister".into())
            .spawn_scoped(s, || store.list_sessions_with_metadata())
            .unwrap();
        // The listing holds the cold sessions' checkpoint, and its first read of it holds
        // the file. The erasure warms every session, then waits to close that file, which
        // no read then begun can be made from: the listing's next reads fail.
        held.recv().unwrap();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let store = &store;
        let eraser = s.spawn(move || {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tid_tx.send(me.file_name().unwrap().to_owned()).unwrap();
            store.erase_session("gone")
        });
        until_asleep(&tid.recv().unwrap().to_string_lossy());
        go.send(()).unwrap();
        eraser.join().unwrap().unwrap();
        let rows = lister.join().unwrap();
        let kept = rows.iter().filter(|m| m.key.starts_with("keep/")).count();
        assert_eq!(kept, 3000);
    });
    assert_eq!(
        fs.hooks.reads.load(Ordering::SeqCst),
        1,
        "the listing's reads after the first failed: its rows were warmed instead"
    );
    assert_eq!(store.health().sessions_cold, 0);
    assert_eq!(store.health().read_errors, 0);
}

/// The segment files holding key `key` (which no other key contains), with their bytes.
fn files_of(dir: &std::path::Path, key: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    (common::segments(dir).into_iter())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .filter(|(_, bytes)| bytes.windows(key.len()).any(|w| w == key.as_bytes()))
        .collect()
}

/// The keys a reopened store reports rolled back, once every session was read.
fn rolled_back_keys(dir: &std::path::Path) -> Vec<String> {
    let store = LogStore::open_with(dir, options()).unwrap();
    for key in store.list_sessions() {
        store.load(&key);
    }
    let mut keys: Vec<String> = (store.recovery_report().findings.iter())
        .filter_map(|f| match f {
            sessionlog::Finding::RolledBack { key, .. } => key.clone(),
            _ => None,
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn an_anchor_after_a_write_leaves_cold_sessions_cold_and_still_catches_their_rollback() {
    let dir = TempDir::new().unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("s{i:02}x")).collect();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for key in &keys {
        store.append(key, &user("first")).unwrap();
    }
    store.close().unwrap();
    let older = [files_of(dir.path(), "s00x"), files_of(dir.path(), "s05x")];
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for key in &keys {
        store.append(key, &user("second")).unwrap();
    }
    store.close().unwrap();
    // One write, then an anchor (as a close takes): the other 29 sessions stay cold.
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("s00x", &user("third")).unwrap();
    let root = store.root_hash().unwrap();
    assert_eq!(store.health().sessions_cold, 29);
    store.close().unwrap();
    assert!(rolled_back_keys(dir.path()).is_empty());
    // The anchors hold s00x at its third record and s05x, cold then, at its second: both
    // rolled back to their first are caught.
    for (path, bytes) in older.iter().flatten() {
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(rolled_back_keys(dir.path()), ["s00x", "s05x"]);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert!(store.holds_root(&root).unwrap());
}

#[test]
fn an_anchor_warms_the_cold_sessions_the_anchor_log_does_not_hold_and_anchors_them() {
    let dir = TempDir::new().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for i in 0..10 {
        store.append(&format!("s{i:02}x"), &user("first")).unwrap();
    }
    store.close().unwrap();
    let older = files_of(dir.path(), "s03x");
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("s03x", &user("second")).unwrap();
    store.close().unwrap();
    std::fs::remove_file(dir.path().join("ANCHORS")).unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.health().sessions_cold, 10);
    store.root_hash().unwrap();
    assert_eq!(store.health().sessions_cold, 0, "none was anchored");
    store.close().unwrap();
    for (path, bytes) in &older {
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(rolled_back_keys(dir.path()), ["s03x"]);
}

#[test]
fn retention_warms_only_the_cold_sessions_it_removes_from() {
    let dir = TempDir::new().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for i in 0..20 {
        for j in 0..=(i % 4) {
            store
                .append(&format!("s{i:02}x"), &user(&format!("{j}")))
                .unwrap();
        }
    }
    store.close().unwrap();
    let retention = sessionlog::Retention {
        max_age: Some(std::time::Duration::from_secs(3600)),
        max_messages: Some(3),
        // Above every session's bytes: counted, nothing removed for it.
        disk_budget: Some(1 << 30),
        check_every: std::time::Duration::from_secs(3600),
    };
    let store = LogStore::open_with(
        dir.path(),
        Options {
            retention,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(store.health().sessions_cold, 20);
    let report = store.apply_retention().unwrap();
    // The five sessions with four messages lose one each; none is old.
    let trimmed: Vec<_> = report
        .trimmed
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        trimmed,
        [
            ("s19x", 1),
            ("s15x", 1),
            ("s11x", 1),
            ("s07x", 1),
            ("s03x", 1)
        ]
    );
    assert!(report.expired.is_empty() && report.reclaimed == 0);
    assert_eq!(
        store.health().sessions_cold,
        15,
        "only those five were warmed"
    );
    assert_eq!(store.read_messages("s07x").unwrap().len(), 3);
}

#[test]
fn a_checkpoint_copying_cold_entries_writes_the_bytes_it_writes_once_they_are_warm() {
    let dir = TempDir::new().unwrap();
    varied_store(dir.path(), 60);
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("sender/3/ü", &user("one more")).unwrap();
    let cold = store.health().sessions_cold;
    // Every cold session's entry and block copied as they are (by a full checkpoint: with the
    // clean close's one gone from the folder, not a delta after it; the cold entries are read
    // through the store's open handle to it).
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    store.checkpoint().unwrap();
    let copied = std::fs::read(dir.path().join("CHECKPOINT")).unwrap();
    assert_eq!(store.health().sessions_cold, cold);
    // The same sessions, every one warmed (`verify`) and the listed ones read (their
    // locations in memory), encoded.
    assert!(store.verify().unwrap().is_sound());
    for key in store.list_sessions() {
        store.load(&key);
    }
    assert_eq!(store.health().sessions_cold, 0);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    store.checkpoint().unwrap();
    let encoded = std::fs::read(dir.path().join("CHECKPOINT")).unwrap();
    assert!(
        copied == encoded,
        "{} and {} bytes",
        copied.len(),
        encoded.len()
    );
}
