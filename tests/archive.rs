//! Archive, apart from delete: an archived session keeps everything and answers reads, but is
//! left out of listings and search until it is unarchived or appended to; archiving is an
//! event that replay, the checkpoint, compaction, delete and restore, and forks know.

mod common;

use sessionlog::{
    ChatMessage, EventFilter, EventKind, ListQuery, LogStore, SessionBackend, SessionQuery,
};

fn listed(store: &LogStore) -> Vec<String> {
    store.list_sessions()
}

fn archived(store: &LogStore) -> Vec<String> {
    let query = ListQuery {
        archived: Some(true),
        ..ListQuery::default()
    };
    let page = store.list_page(&query).unwrap();
    page.sessions.into_iter().map(|m| m.key).collect()
}

fn searched(store: &LogStore, word: &str) -> Vec<String> {
    let query = SessionQuery {
        keyword: Some(word.into()),
        limit: None,
    };
    store.search(&query).into_iter().map(|m| m.key).collect()
}

fn two_sessions(store: &LogStore) {
    store
        .append("kept", &ChatMessage::user("cabins by the lake"))
        .unwrap();
    store
        .append("old", &ChatMessage::user("cabins in the woods"))
        .unwrap();
    store.set_session_name("old", "Old trip").unwrap();
}

#[test]
fn an_archived_session_leaves_listings_and_search_but_answers_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    two_sessions(&store);
    let before = store.get_session_metadata("old").unwrap();
    assert!(store.archive_session("old").unwrap());
    assert!(store.is_archived("old"));
    assert_eq!(listed(&store), vec!["kept"]);
    let with_metadata: Vec<String> = store
        .list_sessions_with_metadata()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(with_metadata, vec!["kept"]);
    assert_eq!(searched(&store, "cabins"), vec!["kept"]);
    let page = store.list_page(&ListQuery::default()).unwrap();
    assert_eq!(page.sessions.len(), 1);
    let not_archived = ListQuery {
        archived: Some(false),
        ..ListQuery::default()
    };
    assert_eq!(store.list_page(&not_archived).unwrap().sessions.len(), 1);
    assert_eq!(archived(&store), vec!["old"]);
    // Reads and getters answer as before; archiving is not activity.
    assert_eq!(
        store.load("old"),
        vec![ChatMessage::user("cabins in the woods")]
    );
    assert!(store.session_exists("old"));
    let after = store.get_session_metadata("old").unwrap();
    assert_eq!(
        (after.message_count, after.last_activity, after.name),
        (before.message_count, before.last_activity, before.name)
    );
    assert_eq!(
        store.get_session_name("old").unwrap().as_deref(),
        Some("Old trip")
    );
    // Archiving twice writes nothing; a missing session is `false`.
    let seq = store.last_seq();
    assert!(store.archive_session("old").unwrap());
    assert_eq!(store.last_seq(), seq);
    assert!(!store.archive_session("missing").unwrap());
    assert!(!store.unarchive_session("missing").unwrap());
    assert!(!store.session_exists("missing"));
    // Unarchive brings it back.
    assert!(store.unarchive_session("old").unwrap());
    assert!(!store.is_archived("old"));
    assert_eq!(listed(&store).len(), 2);
    assert!(store.unarchive_session("old").unwrap());
    assert_eq!(store.last_seq(), seq + 1);
}

#[test]
fn an_append_of_any_kind_unarchives_and_other_writes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    two_sessions(&store);
    let m = ChatMessage::user("m");
    let appends: [&dyn Fn(); 4] = [
        &|| store.append("old", &m).unwrap(),
        &|| store.append_batch("old", std::slice::from_ref(&m)).unwrap(),
        &|| assert!(store.append_once("old", &m, "id-1").unwrap()),
        &|| assert!(store.append_if_exists("old", &m).unwrap()),
    ];
    for append in appends {
        store.archive_session("old").unwrap();
        store
            .update_last("old", &ChatMessage::assistant("a"))
            .unwrap();
        store.set_session_name("old", "still archived").unwrap();
        store.set_session_state("old", "idle", None).unwrap();
        assert!(store.is_archived("old"));
        append();
        assert!(!store.is_archived("old"));
    }
    // A duplicate `append_once` writes nothing, so it does not unarchive either.
    store.archive_session("old").unwrap();
    assert!(!store.append_once("old", &m, "id-1").unwrap());
    assert!(store.is_archived("old"));
}

#[test]
fn archive_survives_reopen_replay_compaction_delete_and_restore_but_not_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    two_sessions(&store);
    store.archive_session("old").unwrap();
    store.compact_session("old").unwrap();
    assert!(store.is_archived("old"));
    store.close().unwrap();
    let store = common::open_fast(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    assert!(store.is_archived("old"));
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = common::open_fast(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert!(
        store.is_archived("old"),
        "replayed from the compacted snapshot"
    );
    assert_eq!(archived(&store), vec!["old"]);
    // A fork of an archived session is a session of its own, listed.
    store.fork_session("old", "branch", None).unwrap();
    assert!(!store.is_archived("branch"));
    assert!(listed(&store).contains(&"branch".to_owned()));
    // Delete and restore keep the archive.
    store.delete_session("old").unwrap();
    assert!(archived(&store).is_empty());
    assert!(store.restore_session("old").unwrap());
    assert!(store.is_archived("old"));
    drop(store);
    let store = common::open_fast(dir.path());
    assert!(store.is_archived("old") && !store.is_archived("branch"));
}

#[test]
fn archive_and_unarchive_are_events_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_fast(dir.path());
    store.append("k", &ChatMessage::user("m")).unwrap();
    store.archive_session("k").unwrap();
    store.unarchive_session("k").unwrap();
    let kinds: Vec<EventKind> = store
        .events(EventFilter::session("k"))
        .unwrap()
        .map(|e| e.unwrap().kind)
        .skip(1)
        .collect();
    assert_eq!(kinds, vec![EventKind::Archive, EventKind::Unarchive]);
}
