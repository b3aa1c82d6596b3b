//! The search index (`index/`): `search` and `search_messages` agree with a brute-force scan
//! of what `load` returns, over random workloads, with the index warm, cold (reopened),
//! deleted and rebuilt; a damaged index is rebuilt and reported, never used; erasure and
//! encryption leave no marker in any index file.

mod common;

use std::path::Path;

use proptest::prelude::*;
use sessionlog::testing::{assert_hits, search_sessions_in, OracleSession};
use sessionlog::{
    ChatMessage, Durability, EncryptionKey, Finding, LogStore, MessageHit, MessageQuery, Options,
    SessionBackend, SessionQuery,
};

const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "new", "york", "Zeta"];
const KEYS: &[&str] = &["k0", "k1", "k2", "york-desk"];

/// Every searched session (live, not archived) as the oracle sees it, in listing order.
fn corpus(store: &LogStore) -> Vec<OracleSession> {
    store
        .list_sessions_with_metadata()
        .into_iter()
        .map(|m| {
            let texts = store
                .load(&m.key)
                .into_iter()
                .map(|msg| msg.content)
                .collect();
            (m.key, m.name, texts)
        })
        .collect()
}

fn queries() -> Vec<String> {
    let mut q: Vec<String> = WORDS.iter().map(|w| w.to_string()).collect();
    q.extend(
        [
            "\"new york\"",
            "alpha zeta",
            "new-york",
            "york desk",
            "nothing",
            "k1",
            "\"gamma delta\" beta",
        ]
        .map(String::from),
    );
    q
}

/// Both searches agree with brute force, for every query. The queries are asked first, so
/// that after an open from the checkpoint they find the sessions cold (the brute force then
/// reads every one).
fn check(store: &LogStore, when: &str) {
    let answers: Vec<(String, Vec<String>, Vec<MessageHit>)> = (queries().into_iter())
        .map(|q| {
            let found = (store.search(&SessionQuery {
                keyword: Some(q.clone()),
                limit: Some(3),
            }))
            .into_iter()
            .map(|m| m.key)
            .collect();
            let mut query = MessageQuery::new(q.clone());
            query.limit = 10_000;
            let hits = store.search_messages(&query).unwrap();
            (q, found, hits)
        })
        .collect();
    let sessions = corpus(store);
    for (q, found, hits) in answers {
        // The oracle's matches, most recent activity first (the listing's order), at most 3.
        let matching = search_sessions_in(&sessions, &q);
        let wanted: Vec<String> = sessions
            .iter()
            .map(|s| s.0.clone())
            .filter(|key| matching.contains(key))
            .take(3)
            .collect();
        assert_eq!(found, wanted, "search {q:?} ({when})");
        assert_hits(&hits, &sessions, &q, when);
        for hit in &hits {
            assert_eq!(store.load(&hit.session)[hit.index], hit.message, "{when}");
            assert!(!hit.snippet.is_empty(), "a snippet for {q:?} ({when})");
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Append(usize, Vec<usize>),
    Batch(usize, Vec<Vec<usize>>),
    UpdateLast(usize, Vec<usize>),
    RemoveLast(usize),
    Clear(usize),
    UndoClear(usize),
    Delete(usize),
    Restore(usize),
    Name(usize, usize),
    Archive(usize, bool),
    Fork(usize, usize),
    Compact(usize),
    Erase(usize),
    Check,
    Reopen,
}

fn text(words: &[usize]) -> String {
    words
        .iter()
        .map(|w| WORDS[*w % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn step() -> impl Strategy<Value = Step> {
    let k = 0..KEYS.len();
    let words = prop::collection::vec(0..WORDS.len(), 0..6);
    prop_oneof![
        6 => (k.clone(), words.clone()).prop_map(|(k, w)| Step::Append(k, w)),
        1 => (k.clone(), prop::collection::vec(words.clone(), 1..4)).prop_map(|(k, w)| Step::Batch(k, w)),
        2 => (k.clone(), words).prop_map(|(k, w)| Step::UpdateLast(k, w)),
        1 => k.clone().prop_map(Step::RemoveLast),
        1 => k.clone().prop_map(Step::Clear),
        1 => k.clone().prop_map(Step::UndoClear),
        1 => k.clone().prop_map(Step::Delete),
        1 => k.clone().prop_map(Step::Restore),
        1 => (k.clone(), 0..WORDS.len()).prop_map(|(k, w)| Step::Name(k, w)),
        1 => (k.clone(), any::<bool>()).prop_map(|(k, a)| Step::Archive(k, a)),
        1 => (k.clone(), k.clone()).prop_map(|(a, b)| Step::Fork(a, b)),
        1 => k.clone().prop_map(Step::Compact),
        1 => k.prop_map(Step::Erase),
        2 => Just(Step::Check),
        1 => Just(Step::Reopen),
    ]
}

fn options() -> Options {
    Options {
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    }
}

fn run(dir: &Path, steps: &[Step]) {
    let mut store = LogStore::open_with(dir, options()).unwrap();
    for step in steps {
        let key = |k: &usize| KEYS[*k];
        match step {
            Step::Append(k, w) => store.append(key(k), &ChatMessage::user(text(w))).unwrap(),
            Step::Batch(k, ws) => {
                let batch: Vec<ChatMessage> =
                    ws.iter().map(|w| ChatMessage::assistant(text(w))).collect();
                store.append_batch(key(k), &batch).unwrap()
            }
            Step::UpdateLast(k, w) => drop(
                store
                    .update_last(key(k), &ChatMessage::assistant(text(w)))
                    .unwrap(),
            ),
            Step::RemoveLast(k) => drop(store.remove_last(key(k)).unwrap()),
            Step::Clear(k) => drop(store.clear_messages(key(k)).unwrap()),
            Step::UndoClear(k) => drop(store.undo_clear(key(k)).unwrap()),
            Step::Delete(k) => drop(store.delete_session(key(k)).unwrap()),
            Step::Restore(k) => drop(store.restore_session(key(k))),
            Step::Name(k, w) => {
                if store.session_exists(key(k)) {
                    store
                        .set_session_name(key(k), &format!("name {}", WORDS[*w]))
                        .unwrap()
                }
            }
            Step::Archive(k, true) => drop(store.archive_session(key(k)).unwrap()),
            Step::Archive(k, false) => drop(store.unarchive_session(key(k)).unwrap()),
            Step::Fork(a, b) => drop(store.fork_session(key(a), key(b), None)),
            Step::Compact(k) => store.compact_session(key(k)).unwrap(),
            Step::Erase(k) => drop(store.erase_session(key(k)).unwrap()),
            Step::Check => check(&store, "warm"),
            Step::Reopen => {
                store.close().unwrap();
                store = LogStore::open_with(dir, options()).unwrap();
            }
        }
    }
    check(&store, "warm at the end");
    store.close().unwrap();
    let store = LogStore::open_with(dir, options()).unwrap();
    check(&store, "cold");
    store.close().unwrap();
    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let store = LogStore::open_with(dir, options()).unwrap();
    check(&store, "index deleted");
    store.reindex().unwrap();
    check(&store, "rebuilt");
    assert!(store
        .recovery_report()
        .findings
        .iter()
        .all(|f| !matches!(f, Finding::IndexRebuilt { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn searches_agree_with_a_scan_warm_cold_deleted_and_rebuilt(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &steps);
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn holds(path: &Path, marker: &[u8]) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(marker.len()).any(|w| w == marker)
}

#[test]
fn a_damaged_index_is_rebuilt_reported_and_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for i in 0..50 {
        store
            .append(
                &format!("s{i}"),
                &ChatMessage::user(format!("alpha word{i} beta")),
            )
            .unwrap();
    }
    assert_eq!(
        store
            .search(&SessionQuery {
                keyword: Some("word7".into()),
                limit: None
            })
            .len(),
        1
    );
    store.close().unwrap();
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    assert_eq!(runs.len(), 1, "the close saved one run");
    // Flipped bytes in the postings (the start of a run): found when a term is read.
    let mut bytes = std::fs::read(&runs[0]).unwrap();
    for b in &mut bytes[..100] {
        *b ^= 0x20;
    }
    std::fs::write(&runs[0], &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let all = MessageQuery {
        limit: 1000,
        ..MessageQuery::new("alpha")
    };
    assert_eq!(store.search_messages(&all).unwrap().len(), 50);
    let report = store.recovery_report();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::IndexRebuilt { .. })),
        "{report:?}"
    );
    assert!(
        report.is_clean(),
        "derived data: nothing of the log was lost"
    );
    let damaged = runs[0].with_file_name(format!(
        "{}.damaged",
        runs[0].file_name().unwrap().to_string_lossy()
    ));
    assert!(
        damaged.exists(),
        "the damaged run is kept aside, not removed"
    );
    store.close().unwrap();
    // A state cut short: the open of the index fails, and it is rebuilt.
    let state = dir.path().join("index/STATE");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(
        store
            .search(&SessionQuery {
                keyword: Some("word49 word3".into()),
                limit: None
            })
            .len(),
        2
    );
    assert!(store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::IndexRebuilt { .. })));
}

#[test]
fn an_erased_marker_is_in_no_file_and_an_encrypted_index_holds_no_word() {
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            encryption: encrypted.then(|| EncryptionKey::from_bytes([9; 32])),
            ..options()
        };
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..20 {
            store
                .append("keep", &ChatMessage::user(format!("ordinary words {i}")))
                .unwrap();
        }
        store
            .append(
                "secret",
                &ChatMessage::user("the marker qxzvmarker sits here"),
            )
            .unwrap();
        store.set_session_name("secret", "qxzvmarker name").unwrap();
        assert_eq!(
            store
                .search_messages(&MessageQuery::new("qxzvmarker"))
                .unwrap()
                .len(),
            1
        );
        store.close().unwrap();
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        assert_eq!(
            store
                .search_messages(&MessageQuery::new("qxzvmarker"))
                .unwrap()
                .len(),
            1
        );
        let mut index_files = Vec::new();
        files_under(&dir.path().join("index"), &mut index_files);
        assert!(!index_files.is_empty());
        for path in &index_files {
            assert!(
                !holds(path, b"qxzvmarker") && !holds(path, b"ordinary"),
                "{path:?} holds a word"
            );
        }
        store.erase_session("secret").unwrap();
        assert!(store
            .search_messages(&MessageQuery::new("qxzvmarker"))
            .unwrap()
            .is_empty());
        assert!(store
            .search(&SessionQuery {
                keyword: Some("qxzvmarker".into()),
                limit: None
            })
            .is_empty());
        assert_eq!(
            store
                .search_messages(&MessageQuery::new("ordinary"))
                .unwrap()
                .len(),
            20
        );
        store.close().unwrap();
        let mut all = Vec::new();
        files_under(dir.path(), &mut all);
        for path in &all {
            assert!(
                !holds(path, b"qxzvmarker"),
                "{path:?} holds the erased marker"
            );
        }
    }
}

#[test]
fn filters_limit_and_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store
        .append(
            "a",
            &ChatMessage::user("the order 42 shipped to New York today"),
        )
        .unwrap();
    store
        .append("b", &ChatMessage::user("york new is not the phrase"))
        .unwrap();
    store
        .append("b", &ChatMessage::user("order order order"))
        .unwrap();
    store.set_session_agent_alias("b", "helper").unwrap();
    let q = |text: &str| MessageQuery::new(text);
    let phrase = store.search_messages(&q("\"new york\"")).unwrap();
    assert_eq!(phrase.len(), 1);
    assert_eq!((phrase[0].session.as_str(), phrase[0].index), ("a", 0));
    assert_eq!(phrase[0].snippet, "the order 42 shipped to New York today");
    let words = store.search_messages(&q("new york")).unwrap();
    assert_eq!(words.len(), 2);
    let order = store.search_messages(&q("order")).unwrap();
    assert_eq!(
        order[0].session, "b",
        "three times in a short message ranks first"
    );
    let only_a = store
        .search_messages(&MessageQuery {
            session: Some("a".into()),
            ..q("order")
        })
        .unwrap();
    assert_eq!(only_a.len(), 1);
    let helper = store
        .search_messages(&MessageQuery {
            agent_alias: Some("helper".into()),
            ..q("order")
        })
        .unwrap();
    assert_eq!(helper.len(), 1);
    let one = store
        .search_messages(&MessageQuery {
            limit: 1,
            ..q("order york")
        })
        .unwrap();
    assert_eq!(one.len(), 1);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(store
        .search_messages(&MessageQuery {
            from_time: Some(later),
            ..q("order")
        })
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .search_messages(&MessageQuery {
                to_time: Some(later),
                ..q("order")
            })
            .unwrap()
            .len(),
        2
    );
    assert!(store.search_messages(&q("\"\" ,,")).unwrap().is_empty());
}

/// A retention trim and an undo between two queries leave the last message where it was with
/// others moved in front of it: the index must not take the front for unchanged.
#[test]
fn a_trim_then_an_undo_between_queries_is_indexed_again() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        retention: sessionlog::Retention {
            max_messages: Some(1),
            ..sessionlog::Retention::default()
        },
        ..options()
    };
    let store = LogStore::open_with(dir.path(), options).unwrap();
    for word in ["apple", "banana"] {
        store.append("s", &ChatMessage::user(word)).unwrap();
    }
    store.clear_messages("s").unwrap();
    for word in ["xylo", "yarrow", "zebra"] {
        store.append("s", &ChatMessage::user(word)).unwrap();
    }
    assert_eq!(
        store
            .search_messages(&MessageQuery::new("xylo"))
            .unwrap()
            .len(),
        1
    );
    store.apply_retention().unwrap();
    assert_eq!(store.load("s").len(), 1, "trimmed to zebra");
    store.undo_clear("s").unwrap();
    let words: Vec<String> = store.load("s").into_iter().map(|m| m.content).collect();
    assert_eq!(words, ["apple", "banana", "zebra"]);
    let at = |word: &str| -> Vec<usize> {
        store
            .search_messages(&MessageQuery::new(word))
            .unwrap()
            .into_iter()
            .map(|h| h.index)
            .collect()
    };
    assert_eq!(at("apple"), [0]);
    assert_eq!(at("banana"), [1]);
    assert!(at("xylo").is_empty() && at("yarrow").is_empty());
    assert_eq!(at("zebra"), [2]);
}

/// Waits (at most 30 s) until the store has indexed `sessions` sessions, with no query.
fn wait_until_indexed(store: &LogStore, sessions: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.health().sessions_indexed < sessions {
        assert!(
            std::time::Instant::now() < deadline,
            "the background never indexed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// An index in use is kept caught up by the background (the checkpointer's thread), with no
/// query: what a later query then finds needs no indexing of its own.
#[test]
fn the_background_keeps_an_index_in_use_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store
        .append("s", &ChatMessage::user("first words"))
        .unwrap();
    assert_eq!(
        store
            .search_messages(&MessageQuery::new("first"))
            .unwrap()
            .len(),
        1
    );
    let before = store.health().sessions_indexed;
    assert_eq!(before, 1);
    store.append("s", &ChatMessage::user("quokka")).unwrap();
    store.append("t", &ChatMessage::user("quokka too")).unwrap();
    wait_until_indexed(&store, before + 2);
    let hits = store.search_messages(&MessageQuery::new("quokka")).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        store.health().sessions_indexed,
        before + 2,
        "the query had nothing to index"
    );
    store.close().unwrap();
    // Reopened: the index's files are there, so it is in use from the start.
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store
        .append("u", &ChatMessage::user("quokka three"))
        .unwrap();
    wait_until_indexed(&store, 1);
    assert_eq!(
        store
            .search_messages(&MessageQuery::new("quokka"))
            .unwrap()
            .len(),
        3
    );
}

/// The numbers of the run files in `dir/index`, whatever follows the run's name.
fn run_numbers(dir: &Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir.join("index"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("run-")?.get(..16)?, 16).ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[test]
fn a_rebuilt_index_never_gives_a_run_name_to_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store
        .append("k0", &ChatMessage::user("alpha beta"))
        .unwrap();
    let query = MessageQuery::new("alpha");
    assert_eq!(store.search_messages(&query).unwrap().len(), 1);
    store.reindex().unwrap();
    let first = run_numbers(dir.path());
    assert!(!first.is_empty());
    // A rebuild, and a rebuild after a damaged run was set aside: each numbers its runs above
    // every run file the folder held, so a reader holding an older `STATE` never opens other
    // bytes under a name it names.
    store
        .append("k1", &ChatMessage::user("alpha gamma"))
        .unwrap();
    store.reindex().unwrap();
    let second = run_numbers(dir.path());
    assert!(
        second.iter().all(|n| *n > first[first.len() - 1]),
        "{first:?} then {second:?}"
    );
    drop(store);
    let newest = second[second.len() - 1];
    let run = dir.path().join(format!("index/run-{newest:016x}.idx"));
    std::fs::write(&run, b"not a run").unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.search_messages(&query).unwrap().len(), 2);
    store.close().unwrap();
    let third: Vec<u64> = run_numbers(dir.path());
    let damaged = third.iter().filter(|n| **n == newest).count();
    assert_eq!(
        damaged, 1,
        "the damaged run is kept aside, under its own name: {third:?}"
    );
    assert!(
        third.iter().filter(|n| **n != newest).all(|n| *n > newest),
        "{second:?} then {third:?}"
    );
}

/// A store's `index/` folder replaced by a link to another folder, while the store is open:
/// the search refuses it (`Error::SymbolicLink`), and nothing in the other folder is removed
/// or renamed, not even files named like the index's own.
#[test]
fn an_index_folder_replaced_by_a_link_is_refused_and_its_target_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let names = [
        "STATE",
        "STATE.tmp",
        "run-0000000000000001.idx",
        "notes.txt",
    ];
    for name in names {
        std::fs::write(other.path().join(name), name).unwrap();
    }
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("a", &ChatMessage::user("alpha")).unwrap();
    let index = dir.path().join("index");
    if index.exists() {
        std::fs::remove_dir_all(&index).unwrap();
    }
    std::os::unix::fs::symlink(other.path(), &index).unwrap();
    let searched = store.search_messages(&MessageQuery::new("alpha"));
    assert!(
        matches!(searched, Err(sessionlog::Error::SymbolicLink { .. })),
        "{searched:?}"
    );
    assert!(store.reindex().is_err());
    let mut left: Vec<String> = std::fs::read_dir(other.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(left, expected);
    for name in names {
        assert_eq!(
            std::fs::read(other.path().join(name)).unwrap(),
            name.as_bytes()
        );
    }
}

/// How many messages `search_messages` finds for `word`.
fn hits(store: &LogStore, word: &str) -> usize {
    store
        .search_messages(&MessageQuery::new(word))
        .unwrap()
        .len()
}

/// Whether the store's open rebuilt its search index.
fn rebuilt(store: &LogStore) -> bool {
    (store.recovery_report().findings.iter()).any(|f| matches!(f, Finding::IndexRebuilt { .. }))
}

/// An `index/STATE` whose next run number is at the numbers' limit (its CRC right), and an
/// empty file named like the highest run: the index is rebuilt and searches answer, with no
/// overflow when the next run is numbered.
#[test]
fn an_index_state_at_the_run_numbers_limit_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    for i in 0..20 {
        store
            .append(&format!("s{i}"), &ChatMessage::user(format!("alpha w{i}")))
            .unwrap();
    }
    assert_eq!(hits(&store, "w3"), 1);
    store.close().unwrap();
    let index = dir.path().join("index");
    std::fs::write(index.join("run-ffffffffffffffff.idx"), b"").unwrap();
    // The state as the store writes it, with its next run number set to u64::MAX: the field
    // after the magic (8), version (4), key check (8) and covered sequence number (8).
    let state = index.join("STATE");
    let mut bytes = std::fs::read(&state).unwrap();
    let body = bytes.len() - 4;
    bytes[28..36].copy_from_slice(&u64::MAX.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&state, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(hits(&store, "w3"), 1);
    assert!(rebuilt(&store));
    store.append("s3", &ChatMessage::user("w3 again")).unwrap();
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(hits(&store, "w3"), 2);
    assert!(!rebuilt(&store));
}
