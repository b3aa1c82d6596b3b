//! Listing, search and expiry behave as SEMANTICS.md says.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{SessionBackend, SessionQuery};

fn keys(rows: Vec<sessionlog::SessionMetadata>) -> Vec<String> {
    rows.into_iter().map(|m| m.key).collect()
}

#[test]
fn sessions_are_listed_most_recent_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for key in ["a", "b", "c"] {
        store.append(key, &user("x")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    store.append("a", &user("again")).unwrap();
    assert_eq!(store.list_sessions(), ["a", "c", "b"]);
    assert_eq!(keys(store.list_sessions_with_metadata()), ["a", "c", "b"]);
    store.delete_session("c").unwrap();
    assert_eq!(store.list_sessions(), ["a", "b"]);
}

#[test]
fn sessions_without_messages_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_name("named", "n").unwrap();
    assert_eq!(store.list_sessions(), ["named"]);
}

fn search(
    store: &sessionlog::LogStore,
    keyword: Option<&str>,
    limit: Option<usize>,
) -> Vec<String> {
    keys(store.search(&SessionQuery {
        keyword: keyword.map(str::to_owned),
        limit,
    }))
}

#[test]
fn search_matches_whole_tokens_in_content_key_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("s1", &user("The quick brown fox")).unwrap();
    store.append("s2", &user("a concatenated word")).unwrap();
    store.append("telegram_fox", &user("nothing here")).unwrap();
    store.set_session_name("s3", "Fox hunt").unwrap();
    let mut found = search(&store, Some("FOX"), None);
    found.sort();
    assert_eq!(found, ["s1", "s3", "telegram_fox"]);
    assert!(
        search(&store, Some("cat"), None).is_empty(),
        "tokens, not substrings"
    );
    assert_eq!(
        search(&store, Some("\"quick\""), None),
        ["s1"],
        "quotes are allowed"
    );
}

#[test]
fn search_words_are_alternatives_and_multi_token_words_are_phrases() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("a", &user("I love new york")).unwrap();
    store.append("b", &user("york is new")).unwrap();
    store.append("c", &user("zebra")).unwrap();
    assert_eq!(search(&store, Some("new-york"), None), ["a"]);
    let mut either = search(&store, Some("zebra new-york"), None);
    either.sort();
    assert_eq!(either, ["a", "c"]);
}

#[test]
fn search_ignores_dead_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("secret")).unwrap();
    store.update_last("k", &user("public")).unwrap();
    assert!(search(&store, Some("secret"), None).is_empty());
    store.append("j", &user("gone")).unwrap();
    store.remove_last("j").unwrap();
    assert!(search(&store, Some("gone"), None).is_empty());
}

#[test]
fn search_orders_by_activity_and_applies_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    for i in 0..60 {
        store
            .append(&format!("k{i:02}"), &user("common word"))
            .unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
    let found = search(&store, Some("common"), None);
    assert_eq!(found.len(), 50, "the default limit");
    assert_eq!(found[0], "k59");
    assert_eq!(
        search(&store, Some("common"), Some(3)),
        ["k59", "k58", "k57"]
    );
    assert_eq!(search(&store, None, Some(2)), ["k59", "k58"]);
    assert_eq!(search(&store, None, None).len(), 50);
}

#[test]
fn a_keyword_without_tokens_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("anything at all")).unwrap();
    assert!(search(&store, Some(""), None).is_empty());
    assert!(search(&store, Some("  \"\" !? "), None).is_empty());
}

#[test]
fn cleanup_stale_deletes_idle_sessions_past_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("idle", &user("x")).unwrap();
    store.append("busy", &user("x")).unwrap();
    store.set_session_state("busy", "running", None).unwrap();
    assert_eq!(store.cleanup_stale(1).unwrap(), 0, "nothing is an hour old");
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(
        store.cleanup_stale(0).unwrap(),
        1,
        "running sessions are kept"
    );
    assert!(!store.session_exists("idle"));
    assert!(store.session_exists("busy"));
    drop(store);
    let store = open(dir.path());
    assert!(!store.session_exists("idle"), "the delete is durable");
}

/// Sessions with the same `last_activity` (imported at one time) are listed by key, in every
/// listing and in search, also after reopening (where the listing reads the checkpoint).
#[test]
fn ties_in_activity_are_broken_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    for key in ["b", "c", "a"] {
        store.append_at(key, &user("same word"), at).unwrap();
    }
    store.append("newest", &user("same word")).unwrap();
    let check = |store: &sessionlog::LogStore, context: &str| {
        assert_eq!(
            store.list_sessions(),
            ["newest", "a", "b", "c"],
            "{context}"
        );
        let rows = keys(store.list_sessions_with_metadata());
        assert_eq!(rows, ["newest", "a", "b", "c"], "{context}");
        let found = search(store, Some("same"), None);
        assert_eq!(found, ["newest", "a", "b", "c"], "{context}");
        assert_eq!(
            search(store, Some("same"), Some(2)),
            ["newest", "a"],
            "{context}"
        );
    };
    check(&store, "open");
    store.close().unwrap();
    check(&open(dir.path()), "reopened");
}

#[test]
fn search_with_a_limit_of_zero_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("word")).unwrap();
    assert!(search(&store, Some("word"), Some(0)).is_empty());
    assert!(search(&store, None, Some(0)).is_empty());
}

/// Case is ignored beyond ASCII: a capital letter with a diacritic matches its small letter.
#[test]
fn search_ignores_case_beyond_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("fr", &user("une école à Genève")).unwrap();
    store.append("de", &user("ÜBER DIE BRÜCKE")).unwrap();
    assert_eq!(search(&store, Some("ÉCOLE"), None), ["fr"]);
    assert_eq!(search(&store, Some("genève"), None), ["fr"]);
    assert_eq!(search(&store, Some("brücke"), None), ["de"]);
    assert_eq!(search(&store, Some("über die"), None), ["de"]);
}

/// `cleanup_stale(ttl)` deletes a session last active more than `ttl` hours ago and keeps one
/// that is not yet that old, whatever their order of creation.
#[test]
fn cleanup_stale_keeps_sessions_inside_the_ttl_and_deletes_those_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    store
        .append_at(
            "past",
            &user("x"),
            now - hour - chrono::Duration::seconds(5),
        )
        .unwrap();
    store
        .append_at(
            "inside",
            &user("x"),
            now - hour + chrono::Duration::seconds(60),
        )
        .unwrap();
    assert_eq!(store.cleanup_stale(1).unwrap(), 1);
    assert!(!store.session_exists("past"));
    assert!(store.session_exists("inside"));
}
