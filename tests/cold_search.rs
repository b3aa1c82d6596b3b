//! Search over cold sessions: a query reads a cold session's entry, never warms more than
//! the sessions whose messages it reads, and keeps no checkpoint file open between queries.

mod common;

use common::user;
use sessionlog::{Durability, LogStore, MessageQuery, Options, SessionBackend};
use tempfile::TempDir;

fn options() -> Options {
    Options::with_durability(Durability::Never)
}

/// A store of 30 sessions `s00x`..`s29x`, the odd ones with the agent alias `helper`; three
/// (`s03x`, `s13x`, `s23x`) say "heron", the others "sparrow". The index is built and saved at close: the next open finds it covering every session.
fn indexed_store(dir: &std::path::Path) {
    let store = LogStore::open_with(dir, options()).unwrap();
    for i in 0..30 {
        let key = format!("s{i:02}x");
        let word = if i % 10 == 3 { "heron" } else { "sparrow" };
        store
            .append(&key, &user(&format!("a {word} at {i}")))
            .unwrap();
        if i % 2 == 1 {
            store.set_session_agent_alias(&key, "helper").unwrap();
        }
    }
    store.search_messages(&MessageQuery::new("heron")).unwrap();
    store.close().unwrap();
}

fn hit_keys(store: &LogStore, query: &MessageQuery) -> Vec<String> {
    let mut keys: Vec<String> = (store.search_messages(query).unwrap().into_iter())
        .map(|h| h.session)
        .collect();
    keys.sort();
    keys
}

fn helpers_herons() -> MessageQuery {
    MessageQuery {
        agent_alias: Some("helper".into()),
        ..MessageQuery::new("heron")
    }
}

#[test]
fn a_search_warms_only_the_cold_sessions_whose_messages_it_reads() {
    let dir = TempDir::new().unwrap();
    indexed_store(dir.path());
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.health().sessions_cold, 30);
    let keys = hit_keys(&store, &MessageQuery::new("heron"));
    assert_eq!(keys, ["s03x", "s13x", "s23x"]);
    assert_eq!(store.health().sessions_cold, 27, "the three read, no other");
    let found = store.search(&sessionlog::SessionQuery {
        keyword: Some("heron".into()),
        limit: Some(10),
    });
    assert_eq!(found.len(), 3);
    assert_eq!(store.health().sessions_cold, 27);
}

#[test]
fn an_alias_filter_over_cold_sessions_still_admits_them_once_a_sweep_warmed_them() {
    let dir = TempDir::new().unwrap();
    indexed_store(dir.path());
    let retention = std::time::Duration::from_millis(300);
    let options = Options {
        tombstone_retention: retention,
        ..options()
    };
    let store = LogStore::open_with(dir.path(), options).unwrap();
    store.delete_session("s04x").unwrap();
    let query = helpers_herons();
    assert_eq!(hit_keys(&store, &query), ["s03x", "s13x", "s23x"]);
    // (A tombstone's reclaim writes nothing to a live session: the catch-up's comparison of
    // every session stands, and the filter reads the rows it made cold.)
    assert_eq!(
        store.health().sessions_cold,
        26,
        "the delete and the three read warmed, no other"
    );
    // Once past its retention, the tombstone is reclaimed (here by the sweep before a
    // restore, or by the background's): an erasure that writes nothing to a live session,
    // which warms every cold session and closes the checkpoint's file the filter read them
    // from.
    std::thread::sleep(retention + std::time::Duration::from_millis(100));
    assert!(!store.restore_session("s04x").unwrap(), "reclaimed");
    assert_eq!(store.health().sessions_cold, 0);
    assert_eq!(hit_keys(&store, &query), ["s03x", "s13x", "s23x"]);
    // And the sessions filtered out stay out.
    let others = MessageQuery {
        agent_alias: Some("nobody".into()),
        ..MessageQuery::new("heron")
    };
    assert_eq!(hit_keys(&store, &others), Vec::<String>::new());
}

#[test]
#[cfg(target_os = "linux")]
fn a_search_keeps_no_handle_on_a_checkpoint_a_later_checkpoint_replaced() {
    let dir = TempDir::new().unwrap();
    indexed_store(dir.path());
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(hit_keys(&store, &helpers_herons()).len(), 3);
    // A checkpoint taken while the store runs moves the cold sessions to its new file.
    store.append("s05x", &user("one more sparrow")).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(
        store.health().sessions_cold,
        26,
        "still cold, in the new file"
    );
    let open = common::open_checkpoints(dir.path());
    assert!(
        open.iter().all(|name| !name.contains("deleted")),
        "the replaced checkpoint is still open: {open:?}"
    );
    // An erasure closes every checkpoint file: none keeps the erased session's bytes.
    store.erase_session("s07x").unwrap();
    assert!(!dir.path().join("CHECKPOINT").exists());
    assert_eq!(common::open_checkpoints(dir.path()), Vec::<String>::new());
    assert_eq!(
        hit_keys(&store, &helpers_herons()),
        ["s03x", "s13x", "s23x"]
    );
}
