//! ZeroClaw's attribution methods (`clear_agent_attribution`, `rename_agent_attribution`,
//! `count_agent_attribution`) as `shared/contract/SEMANTICS.md` says: the exact predicate on
//! live sessions, one alias record per changed session, `last_activity` unchanged.

use sessionlog::{
    ChatMessage, EventFilter, EventKind, ListQuery, LogStore, SessionBackend, SessionMetadata,
};

/// Sessions `a`, `b` (alias "x"), `c` ("X"), `d` ("x "), `e` ("y"), `f` (none) and `g` ("x",
/// deleted).
fn store_with_aliases(dir: &std::path::Path) -> LogStore {
    let store = LogStore::open(dir).unwrap();
    for (key, alias) in [
        ("a", "x"),
        ("b", "x"),
        ("c", "X"),
        ("d", "x "),
        ("e", "y"),
        ("f", ""),
        ("g", "x"),
    ] {
        store.append(key, &ChatMessage::user(key)).unwrap();
        store.set_session_agent_alias(key, alias).unwrap();
    }
    assert!(store.delete_session("g").unwrap());
    store
}

fn metadata(store: &LogStore, key: &str) -> SessionMetadata {
    store.get_session_metadata(key).unwrap()
}

fn alias_events(store: &LogStore) -> Vec<(String, Option<String>)> {
    store
        .events(EventFilter::all())
        .unwrap()
        .map(Result::unwrap)
        .filter_map(|event| match event.kind {
            EventKind::Alias { alias } => Some((event.session, alias)),
            _ => None,
        })
        .collect()
}

#[test]
fn count_matches_live_sessions_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_aliases(dir.path());
    assert_eq!(store.count_agent_attribution("x").unwrap(), 2);
    assert_eq!(store.count_agent_attribution("X").unwrap(), 1);
    assert_eq!(store.count_agent_attribution("x ").unwrap(), 1);
    assert_eq!(store.count_agent_attribution("z").unwrap(), 0);
    assert_eq!(store.count_agent_attribution("").unwrap(), 0);
}

#[test]
fn clear_detaches_exactly_the_matching_live_sessions_and_keeps_their_activity() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_aliases(dir.path());
    let before_a = metadata(&store, "a");
    let before_b = metadata(&store, "b");
    let events_before = alias_events(&store).len();
    assert_eq!(store.clear_agent_attribution("x").unwrap(), 2);
    for (key, before) in [("a", before_a), ("b", before_b)] {
        let after = metadata(&store, key);
        assert_eq!(after.agent_alias, None);
        assert_eq!(after.last_activity, before.last_activity);
        assert_eq!(after.message_count, 1);
    }
    for (key, alias) in [("c", "X"), ("d", "x "), ("e", "y")] {
        assert_eq!(metadata(&store, key).agent_alias.as_deref(), Some(alias));
    }
    assert_eq!(store.count_agent_attribution("x").unwrap(), 0);
    // One alias record per changed session, the same one the setter writes.
    let events = alias_events(&store);
    assert_eq!(events.len(), events_before + 2);
    let mut new: Vec<_> = events[events_before..].to_vec();
    new.sort();
    assert_eq!(new, [("a".into(), None), ("b".into(), None)]);
    // Nothing left to clear: nothing written.
    assert_eq!(store.clear_agent_attribution("x").unwrap(), 0);
    assert_eq!(alias_events(&store).len(), events_before + 2);
    // The deleted session was neither counted nor changed: restored, it has its alias.
    assert!(store.restore_session("g").unwrap());
    assert_eq!(metadata(&store, "g").agent_alias.as_deref(), Some("x"));
}

#[test]
fn rename_moves_the_matching_sessions_and_list_page_agrees_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_aliases(dir.path());
    let before = metadata(&store, "a").last_activity;
    assert_eq!(store.rename_agent_attribution("x", "z").unwrap(), 2);
    assert_eq!(store.count_agent_attribution("x").unwrap(), 0);
    assert_eq!(store.count_agent_attribution("z").unwrap(), 2);
    assert_eq!(metadata(&store, "a").last_activity, before);
    let page = |store: &LogStore, alias: &str| -> Vec<String> {
        let query = ListQuery {
            agent_alias: Some(alias.into()),
            ..ListQuery::default()
        };
        let mut keys: Vec<String> = store
            .list_page(&query)
            .unwrap()
            .sessions
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(page(&store, "z"), ["a", "b"]);
    assert!(page(&store, "x").is_empty());
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(page(&store, "z"), ["a", "b"]);
    assert_eq!(store.count_agent_attribution("z").unwrap(), 2);
    // An empty `to` clears, as the setter does.
    assert_eq!(store.rename_agent_attribution("z", "").unwrap(), 2);
    assert_eq!(metadata(&store, "a").agent_alias, None);
    assert_eq!(store.count_agent_attribution("z").unwrap(), 0);
}

#[test]
fn an_empty_alias_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_aliases(dir.path());
    let events = alias_events(&store).len();
    assert_eq!(store.clear_agent_attribution("").unwrap(), 0);
    assert_eq!(store.rename_agent_attribution("", "z").unwrap(), 0);
    assert_eq!(alias_events(&store).len(), events);
    assert_eq!(store.count_agent_attribution("x").unwrap(), 2);
    assert_eq!(metadata(&store, "f").agent_alias, None);
}

/// A rename onto the same alias returns how many sessions match, as the SQLite and JSONL
/// stores do, and writes what the alias setter would for each: the aliases stay.
#[test]
fn a_rename_onto_itself_counts_the_sessions_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_aliases(dir.path());
    let events = alias_events(&store).len();
    assert_eq!(store.rename_agent_attribution("x", "x").unwrap(), 2);
    assert_eq!(alias_events(&store).len(), events + 2);
    assert_eq!(store.count_agent_attribution("x").unwrap(), 2);
    assert_eq!(store.rename_agent_attribution("none", "none").unwrap(), 0);
}

#[test]
fn a_read_only_store_refuses_to_change_attribution() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_aliases(dir.path()));
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.count_agent_attribution("x").unwrap(), 2);
    let error = reader.clear_agent_attribution("x").unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(reader.count_agent_attribution("x").unwrap(), 2);
}

/// A power cut at every point of a rename leaves each session either moved or not (never lost,
/// never with another alias, its activity unchanged); `count_agent_attribution(from)` says how
/// many remain, and running the rename again finishes it.
#[test]
fn a_rename_cut_by_a_crash_at_any_point_is_finished_by_running_it_again() {
    use sessionlog::testing::SimFs;
    use sessionlog::Options;
    use std::sync::Arc;

    const SESSIONS: usize = 6;
    let setup = |fs: &SimFs| {
        let store =
            LogStore::open_with_fs("/store", Options::default(), Arc::new(fs.clone())).unwrap();
        for i in 0..SESSIONS {
            let key = format!("s{i}");
            store.append(&key, &ChatMessage::user("hi")).unwrap();
            store.set_session_agent_alias(&key, "old-agent").unwrap();
        }
        // An archived session is live: it is renamed too.
        store.archive_session("s0").unwrap();
        store.append("other", &ChatMessage::user("hi")).unwrap();
        store.set_session_agent_alias("other", "another").unwrap();
        drop(store);
    };
    let open = |fs: &SimFs| {
        LogStore::open_with_fs("/store", Options::default(), Arc::new(fs.clone())).unwrap()
    };
    let activity = |store: &LogStore| -> Vec<_> {
        (0..SESSIONS)
            .map(|i| metadata(store, &format!("s{i}")).last_activity)
            .collect()
    };
    // The operations a whole rename takes.
    let fs = SimFs::new();
    setup(&fs);
    let before = fs.mutations();
    {
        let store = open(&fs);
        assert_eq!(
            store
                .rename_agent_attribution("old-agent", "new-agent")
                .unwrap(),
            SESSIONS
        );
    }
    let total = fs.mutations() - before;
    assert!(total >= SESSIONS as u64, "a record per session");
    let mut partial = 0;
    for cut in 0..=total {
        let fs = SimFs::new();
        setup(&fs);
        let store = open(&fs);
        let active = activity(&store);
        fs.cut_power_after(cut);
        let _ = store.rename_agent_attribution("old-agent", "new-agent");
        drop(store);
        fs.crash(Some(7));
        let store = open(&fs);
        let left = store.count_agent_attribution("old-agent").unwrap();
        let moved = store.count_agent_attribution("new-agent").unwrap();
        assert_eq!(
            left + moved,
            SESSIONS,
            "cut after {cut}: every session is one or the other"
        );
        partial += usize::from(left > 0 && moved > 0);
        assert_eq!(store.count_agent_attribution("another").unwrap(), 1);
        assert_eq!(
            activity(&store),
            active,
            "cut after {cut}: activity unchanged"
        );
        assert!(store.is_archived("s0"), "cut after {cut}");
        assert_eq!(
            store
                .rename_agent_attribution("old-agent", "new-agent")
                .unwrap(),
            left,
            "cut after {cut}: the rename again moves what is left"
        );
        assert_eq!(store.count_agent_attribution("old-agent").unwrap(), 0);
        assert_eq!(
            store.count_agent_attribution("new-agent").unwrap(),
            SESSIONS
        );
    }
    assert!(
        partial >= SESSIONS - 1,
        "cuts left renames half done ({partial})"
    );
}

/// ZeroClaw's own scenario for `rename_agent_attribution`, through the trait: of two sessions
/// attributed to different agents, only the one whose alias matches is re-pointed; a rename of
/// an agent no session names changes nothing. Then its attribution lifecycle: count, rename,
/// clear, each over both sessions.
#[test]
fn zeroclaws_rename_scenario_repoints_only_matching_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    let backend: &dyn SessionBackend = &store;
    backend.append("s1", &ChatMessage::user("hi")).unwrap();
    backend.set_session_agent_alias("s1", "scout").unwrap();
    backend.append("s2", &ChatMessage::user("yo")).unwrap();
    backend.set_session_agent_alias("s2", "other").unwrap();
    assert_eq!(
        backend.rename_agent_attribution("scout", "ranger").unwrap(),
        1
    );
    let alias = |key: &str| backend.get_session_agent_alias(key).unwrap();
    assert_eq!(alias("s1").as_deref(), Some("ranger"));
    assert_eq!(alias("s2").as_deref(), Some("other"));
    assert_eq!(backend.rename_agent_attribution("ghost", "x").unwrap(), 0);
    // The history stays with the renamed attribution.
    assert_eq!(backend.load("s1"), vec![ChatMessage::user("hi")]);

    for key in ["s1", "s2"] {
        backend.set_session_agent_alias(key, "rowan").unwrap();
    }
    assert_eq!(backend.count_agent_attribution("rowan").unwrap(), 2);
    assert_eq!(
        backend.rename_agent_attribution("rowan", "sable").unwrap(),
        2
    );
    assert_eq!(backend.count_agent_attribution("rowan").unwrap(), 0);
    assert_eq!(backend.count_agent_attribution("sable").unwrap(), 2);
    assert_eq!(backend.clear_agent_attribution("sable").unwrap(), 2);
    assert_eq!(backend.count_agent_attribution("sable").unwrap(), 0);
}
