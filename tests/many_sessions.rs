//! 100,000 sessions open, list and take writes with a bounded number of open files, and
//! reopen (from the checkpoint and by replay) to the same sessions.

use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

const SESSIONS: usize = 100_000;

/// Open files of this process, from `/proc/self/fd`.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn a_hundred_thousand_sessions_open_list_and_append_with_bounded_files() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::Never,
        auto_compact: false,
        ..Options::default()
    };
    let before = open_files();
    {
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        let hello = ChatMessage::user("hello");
        for s in 0..SESSIONS {
            store.append(&format!("user_{s}"), &hello).unwrap();
        }
        // The append handles the store keeps are bounded by open_files_max (256), whatever
        // other tests of this process hold meanwhile (a generous margin).
        assert!(
            open_files() < before + 256 + 64,
            "{} files open",
            open_files()
        );
        assert_eq!(store.list_sessions().len(), SESSIONS);
    }
    for replay in [false, true] {
        if replay {
            std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
        }
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        assert_eq!(store.recovery_report().from_checkpoint, !replay);
        assert_eq!(store.list_sessions_with_metadata().len(), SESSIONS);
        store
            .append("user_99999", &ChatMessage::assistant("hi"))
            .unwrap();
        assert_eq!(store.load("user_99999").len(), 2 + usize::from(replay));
    }
}
