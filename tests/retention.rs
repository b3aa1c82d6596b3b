//! Retention rules remove old histories, never a running session, and leave a trace: every
//! removal is an event in the log that names its rule.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sessionlog::{
    Durability, EventFilter, EventKind, LogStore, Options, Retention, RetentionRule, SessionBackend,
};

fn with_rules(dir: &Path, retention: Retention) -> LogStore {
    LogStore::open_with(
        dir,
        Options {
            retention,
            ..Options::with_durability(Durability::Never)
        },
    )
    .unwrap()
}

fn kinds(store: &LogStore, key: &str) -> Vec<EventKind> {
    store
        .events(EventFilter::session(key))
        .unwrap()
        .map(|e| e.unwrap().kind)
        .collect()
}

#[test]
fn max_age_deletes_idle_sessions_but_not_running_ones_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_rules(
        dir.path(),
        Retention {
            max_age: Some(Duration::from_millis(30)),
            check_every: Duration::from_secs(3600),
            ..Retention::default()
        },
    );
    fill(&store, "old", "m", 2);
    fill(&store, "busy", "m", 2);
    store
        .set_session_state("busy", "running", Some("t"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    fill(&store, "fresh", "m", 1);
    let report = store.apply_retention().unwrap();
    assert_eq!(report.expired, [("old".to_string(), RetentionRule::MaxAge)]);
    assert!(!store.session_exists("old"));
    assert!(store.session_exists("busy") && store.session_exists("fresh"));
    assert_eq!(
        kinds(&store, "old").last(),
        Some(&EventKind::Expired {
            rule: RetentionRule::MaxAge,
            removed: 2
        })
    );
    // Retention deletes like delete_session: restorable within the tombstone retention.
    assert!(store.restore_session("old").unwrap());
}

#[test]
fn max_messages_drops_the_oldest_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_rules(
        dir.path(),
        Retention {
            max_messages: Some(3),
            check_every: Duration::from_secs(3600),
            ..Retention::default()
        },
    );
    fill(&store, "long", "m", 5);
    fill(&store, "short", "m", 2);
    fill(&store, "busy", "m", 5);
    store
        .set_session_state("busy", "running", Some("t"))
        .unwrap();
    let report = store.apply_retention().unwrap();
    assert_eq!(report.trimmed, [("long".to_string(), 2)]);
    assert_eq!(
        store.load("long"),
        vec![user("m 2"), user("m 3"), user("m 4")]
    );
    assert_eq!(store.load("short").len(), 2);
    assert_eq!(
        store.load("busy").len(),
        5,
        "a running session is never touched"
    );
    assert_eq!(
        kinds(&store, "long").last(),
        Some(&EventKind::Trimmed {
            rule: RetentionRule::MaxMessages,
            removed: 2
        })
    );
    drop(store);
    let store = with_rules(dir.path(), Retention::default());
    assert_eq!(store.load("long").len(), 3, "the trim is in the log");
    assert!(store.verify().unwrap().is_sound());
}

#[test]
fn the_disk_budget_removes_the_least_recently_active_sessions_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_rules(dir.path(), Retention::default());
    for key in ["a", "b", "c", "d"] {
        store.append(key, &user(&"x".repeat(2000))).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    store.set_session_state("a", "running", Some("t")).unwrap();
    store.delete_session("d").unwrap(); // a tombstone: the first to go
    drop(store);
    let store = with_rules(
        dir.path(),
        Retention {
            disk_budget: Some(4500),
            check_every: Duration::from_secs(3600),
            ..Retention::default()
        },
    );
    let report = store.apply_retention().unwrap();
    assert_eq!(report.reclaimed, 1);
    // "a" is the least recently active but running: "b" goes.
    assert_eq!(
        report.expired,
        [("b".to_string(), RetentionRule::DiskBudget)]
    );
    assert!(store.session_exists("a") && store.session_exists("c"));
    assert!(!store.restore_session("b").unwrap(), "gone for good");
    assert!(!store.restore_session("d").unwrap());
    let leftover = snapshot_files(dir.path())
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .count();
    assert_eq!(leftover, 2);
}

#[test]
fn the_background_applies_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_rules(
        dir.path(),
        Retention {
            max_messages: Some(1),
            check_every: Duration::from_millis(20),
            ..Retention::default()
        },
    );
    fill(&store, "k", "m", 4);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.load("k").len() > 1 {
        assert!(std::time::Instant::now() < deadline, "never applied");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.load("k"), vec![user("m 3")]);
}

/// Counts the reads of the checkpoint.
#[derive(Debug, Default)]
struct CheckpointReads(std::sync::atomic::AtomicUsize);

impl common::hooked::Hooks for CheckpointReads {
    fn read(&self, path: &Path) {
        if path.ends_with("CHECKPOINT") {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[test]
fn a_pass_of_every_rule_over_cold_sessions_reads_them_as_one_listing_does() {
    let sim = sessionlog::testing::SimFs::new();
    let fs = common::hooked::Hooked::new(&sim, CheckpointReads::default());
    let dir = Path::new("/store");
    let open = |retention| {
        let options = Options {
            retention,
            ..Options::with_durability(Durability::Never)
        };
        LogStore::open_with_fs(dir, options, std::sync::Arc::new(fs.clone())).unwrap()
    };
    let store = open(Retention::default());
    // Enough sessions that a listing reads the checkpoint in several reads.
    for i in 0..3000 {
        store.append(&format!("keep/{i}"), &user("hello")).unwrap();
    }
    store.close().unwrap();
    let store = open(Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_messages: Some(100),
        disk_budget: Some(1 << 40),
        check_every: Duration::from_secs(3600),
    });
    let reads = || fs.hooks.0.swap(0, std::sync::atomic::Ordering::SeqCst);
    reads();
    assert_eq!(store.list_sessions_with_metadata().len(), 3000);
    let listing = reads();
    assert!(listing > 1, "{listing} read");
    let report = store.apply_retention().unwrap();
    assert_eq!(
        report,
        sessionlog::RetentionReport::default(),
        "nothing to remove"
    );
    assert_eq!(reads(), listing, "the three rules chose from one listing");
    assert_eq!(store.health().sessions_cold, 3000);
}
