//! Encryption at rest (`Options::encryption`): nothing readable on disk, a wrong or missing key
//! is a typed error that changes nothing, records cannot be moved unnoticed, compaction, verify
//! and the audit log work, and erasing a session destroys its data key first
//! (crypto-erasure).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sessionlog::{
    ChatMessage, EncryptionKey, Error, EventFilter, Finding, LogStore, Options, SessionBackend,
    SEALED_VERSION,
};

const SECRET: &[u8] = b"SECRET-4111-1111-1111";
const NAME: &[u8] = b"NAME-alice-addr";

fn key() -> EncryptionKey {
    EncryptionKey::from_bytes([0x42; 32])
}

fn secret(i: usize) -> ChatMessage {
    ChatMessage::user(format!("{} #{i}", std::str::from_utf8(SECRET).unwrap()))
}

/// Files under `dir` holding `needle` anywhere in their bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    snapshot_files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path)
        .collect()
}

/// Bytes of a segment header of an encrypted store, for a one-byte session key: 39 fixed
/// bytes, the key and the 28 bytes of its seal.
const SEALED_HEADER_1: usize = 39 + 1 + 28;

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// The lowest session id of the segments in `dir`, as its 16 hex digits.
fn first_id(dir: &Path) -> String {
    file_name(&segments(dir)[0])[..16].to_owned()
}

/// The data key files of the store in `dir`, sorted by session id.
fn key_file(dir: &Path) -> Vec<PathBuf> {
    files_named(&dir.join("keys"), "key")
}

/// Writes a session with messages, an update, a name and a compaction in between.
fn write_secrets(store: &LogStore, session: &str) -> Vec<ChatMessage> {
    for i in 0..6 {
        store.append(session, &secret(i)).unwrap();
    }
    store.update_last(session, &secret(99)).unwrap();
    store
        .set_session_name(session, std::str::from_utf8(NAME).unwrap())
        .unwrap();
    store.compact_session(session).unwrap();
    store.append(session, &secret(100)).unwrap();
    store.load(session)
}

#[test]
fn nothing_readable_on_disk_and_everything_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let messages = write_secrets(&store, "alice");
    assert_eq!(messages.len(), 7);
    assert!(files_holding(dir.path(), SECRET).is_empty());
    assert!(files_holding(dir.path(), NAME).is_empty());
    // Nor the session key, which the segment headers hold sealed.
    assert!(files_holding(dir.path(), b"alice").is_empty());
    // Every segment says it is sealed (format version 5), so a build without encryption
    // refuses it instead of taking it for damage.
    for seg in segments(dir.path()) {
        assert_eq!(u32::from(std::fs::read(seg).unwrap()[8]), SEALED_VERSION);
    }
    drop(store); // writes the checkpoint, sealed
    assert!(dir.path().join("CHECKPOINT").exists());
    assert!(files_holding(dir.path(), SECRET).is_empty());
    assert!(files_holding(dir.path(), NAME).is_empty());
    // The key itself is never written.
    assert!(files_holding(dir.path(), &[0x42; 32]).is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        for file in key_file(dir.path()) {
            assert_eq!(mode(&file), 0o600);
        }
        assert_eq!(mode(&dir.path().join("keys").join("STORE")), 0o600);
    }

    // From the checkpoint.
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(store.recovery_report().from_checkpoint);
    assert_eq!(store.load("alice"), messages);
    let name = std::str::from_utf8(NAME).unwrap().to_owned();
    assert_eq!(store.get_session_name("alice").unwrap(), Some(name.clone()));
    store.append("alice", &secret(101)).unwrap();
    drop(store);
    // By replay (no checkpoint).
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(!store.recovery_report().from_checkpoint);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    let mut expected = messages;
    expected.push(secret(101));
    assert_eq!(store.load("alice"), expected);
    assert_eq!(store.get_session_name("alice").unwrap(), Some(name));
    // Search sees the plaintext.
    let hits = store.search(&sessionlog::SessionQuery {
        keyword: Some("4111-1111".into()),
        limit: None,
    });
    assert_eq!(hits.len(), 1);
}

#[test]
fn a_wrong_or_missing_key_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    write_secrets(&store, "alice");
    drop(store);
    let before = snapshot_files(dir.path());

    let wrong = EncryptionKey::from_bytes([0x43; 32]);
    match LogStore::open_with(dir.path(), keep_history_encrypted(wrong.clone())) {
        Err(Error::WrongKey { .. }) => {}
        other => panic!("expected WrongKey, got {:?}", other.map(|_| ())),
    }
    match LogStore::open_with(dir.path(), Options::default()) {
        Err(Error::KeyRequired { .. }) => {}
        other => panic!("expected KeyRequired, got {:?}", other.map(|_| ())),
    }
    match LogStore::open_read_only(dir.path()) {
        Err(Error::KeyRequired { .. }) => {}
        other => panic!("expected KeyRequired, got {:?}", other.map(|_| ())),
    }
    match LogStore::open_read_only_with(dir.path(), keep_history_encrypted(wrong)) {
        Err(Error::WrongKey { .. }) => {}
        other => panic!("expected WrongKey, got {:?}", other.map(|_| ())),
    }
    assert_eq!(snapshot_files(dir.path()), before);
    // The right key reads, read-only too.
    let reader = LogStore::open_read_only_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert_eq!(reader.load("alice").len(), 7);
}

#[test]
fn a_key_is_refused_for_a_store_that_holds_unencrypted_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("plain", &user("hello")).unwrap();
    drop(store);
    let before = snapshot_files(dir.path());
    match LogStore::open_with(dir.path(), keep_history_encrypted(key())) {
        Err(Error::NotEncrypted { .. }) => {}
        other => panic!("expected NotEncrypted, got {:?}", other.map(|_| ())),
    }
    assert_eq!(snapshot_files(dir.path()), before);
    assert!(!dir.path().join("keys").exists());
    // An empty folder becomes an encrypted store.
    let empty = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(empty.path(), keep_history_encrypted(key())).unwrap();
    drop(store);
    assert!(empty.path().join("keys").join("STORE").exists());
}

#[test]
fn each_session_has_its_own_data_key_and_a_record_moved_between_sessions_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    store.append("a", &user("from a")).unwrap();
    store.append("b", &user("from b")).unwrap();
    store.append("b", &user("b again")).unwrap();
    drop(store);
    assert_eq!(key_file(dir.path()).len(), 2);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // Append a's record (CRC and all, intact) to the end of b's segment.
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    let a = std::fs::read(&segs[0]).unwrap();
    let header_a = SEALED_HEADER_1; // the segment header with a one-byte key
    let record = a[header_a..].to_vec();
    let mut b = std::fs::read(&segs[1]).unwrap();
    b.extend_from_slice(&record);
    std::fs::write(&segs[1], &b).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    // The foreign record does not open under b's key: never a message of a in b.
    assert_eq!(store.load("b"), vec![user("from b"), user("b again")]);
    assert_eq!(store.load("a"), vec![user("from a")]);
    let report = store.recovery_report();
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::TornTail { .. } | Finding::Damaged { .. })),
        "{report:?}"
    );
}

#[test]
fn compaction_verify_and_the_audit_log_work_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let messages = write_secrets(&store, "alice");
    store.clear_messages("alice").unwrap();
    assert_eq!(store.undo_clear("alice").unwrap(), 7);
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{report:?}");
    assert!(report.links > 0);
    let events: Vec<_> = store
        .events(EventFilter::session("alice"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(events.len() >= 10, "{events:?}");
    let first = events.first().unwrap().seq;
    let at = store.load_at("alice", first).unwrap().unwrap();
    assert_eq!(at.messages.len(), 1);
    assert_eq!(at.messages[0].message, secret(0));
    assert_eq!(store.load("alice"), messages);
    assert!(files_holding(dir.path(), SECRET).is_empty());
}

#[test]
fn a_fork_gets_its_own_copy_under_its_own_key_and_outlives_the_erased_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let messages = write_secrets(&store, "source");
    store.fork_session("source", "fork", None).unwrap();
    assert_eq!(store.load("fork"), messages);
    assert_eq!(
        store.fork_origin("fork").map(|(s, _)| s),
        Some("source".into())
    );
    store.append("fork", &user("only in the fork")).unwrap();
    assert_eq!(key_file(dir.path()).len(), 2);
    store.erase_session("source").unwrap();
    assert_eq!(key_file(dir.path()).len(), 1);
    assert_eq!(store.load("fork").len(), 8);
    drop(store);
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.load("fork").len(), 8);
    assert!(store.load("source").is_empty());
}

#[test]
fn erasing_destroys_the_data_key_so_copies_kept_elsewhere_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    write_secrets(&store, "alice");
    store.append("bob", &user("stays")).unwrap();
    // Someone copies alice's segments away (a backup, a stolen disk image). Alice was
    // created first: hers have the lowest session id.
    let alice = first_id(dir.path());
    let copies: Vec<(PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .filter(|p| file_name(p).starts_with(&alice))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(!copies.is_empty());
    let removed = store.erase_session("alice").unwrap();
    assert!(!removed.is_empty());
    assert_eq!(key_file(dir.path()).len(), 1, "only bob's key is left");
    drop(store);
    // The copies come back; with their key gone they are bytes nobody can read.
    for (path, bytes) in &copies {
        std::fs::write(path, bytes).unwrap();
    }
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(store.load("alice").is_empty());
    assert!(!store.list_sessions().contains(&"alice".to_owned()));
    assert_eq!(store.load("bob"), vec![user("stays")]);
    // The unreadable files are reported and kept, never deleted unasked.
    assert!(store.recovery_report().has_damage());
}

#[test]
fn open_finishes_an_erasure_a_crash_cut_short_after_the_key_went() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    write_secrets(&store, "alice");
    store.append("bob", &user("stays")).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // The state a crash leaves after the first step of an erasure: the marker written, the
    // key removed, the files not yet.
    let keys = key_file(dir.path());
    let alice_key = keys[0].clone();
    let id = alice_key.file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("keys").join(format!("{id}.erasing")), b"").unwrap();
    std::fs::remove_file(&alice_key).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let finished = store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::ErasureFinished { removed, .. } if !removed.is_empty()));
    assert!(finished, "{:?}", store.recovery_report());
    assert!(store.load("alice").is_empty());
    assert_eq!(store.load("bob"), vec![user("stays")]);
    assert!(segments(dir.path()).iter().all(|p| !p
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&id)));
    assert!(!dir
        .path()
        .join("keys")
        .join(format!("{id}.erasing"))
        .exists());
    assert!(
        !dir.path().join("archive").exists()
            || snapshot_files(&dir.path().join("archive"))
                .iter()
                .all(|(p, _)| !p.file_name().unwrap().to_str().unwrap().starts_with(&id))
    );
}

#[test]
fn a_reclaimed_delete_takes_the_data_key_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tombstone_retention: Duration::ZERO,
        ..keep_history_encrypted(key())
    };
    let store = LogStore::open_with(dir.path(), opts.clone()).unwrap();
    write_secrets(&store, "alice");
    store.append("bob", &user("stays")).unwrap();
    assert_eq!(key_file(dir.path()).len(), 2);
    store.delete_session("alice").unwrap();
    assert_eq!(key_file(dir.path()).len(), 1);
    assert!(std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .all(|e| !e.unwrap().path().to_str().unwrap().ends_with(".erasing")));
    drop(store);
    let store = LogStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(store.list_sessions(), vec!["bob".to_owned()]);
}

#[test]
fn a_record_over_the_limit_counts_its_seal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        record_bytes_max: 200,
        ..keep_history_encrypted(key())
    };
    let store = LogStore::open_with(dir.path(), opts).unwrap();
    // Sealed payload: 4 (event tag) + 8 + 4 ("user") + 8 + content, + 28 (nonce and AEAD tag).
    let fits = "x".repeat(200 - 24 - 28);
    store.append("k", &user(&fits)).unwrap();
    let one_more = "x".repeat(200 - 24 - 28 + 1);
    assert!(matches!(
        store.append("k", &user(&one_more)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput
    ));
    assert_eq!(store.load("k").len(), 1);
}

#[test]
fn every_writable_open_raises_the_nonce_epoch_and_a_reader_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = || {
        let bytes = std::fs::read(dir.path().join("keys").join("STORE")).unwrap();
        u32::from_le_bytes(bytes[12..16].try_into().unwrap())
    };
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert_eq!(epoch(), 1);
    store.append("a", &user("one")).unwrap();
    drop(store);
    // A key file a crash left half written (never renamed into place) goes at the next open.
    let stray = dir.path().join("keys").join("00000000000000ff.key.tmp");
    std::fs::write(&stray, b"half").unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert_eq!(epoch(), 2);
    assert!(!stray.exists());
    store.append("a", &user("two")).unwrap();
    drop(store);
    let reader = LogStore::open_read_only_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert_eq!(reader.load("a"), vec![user("one"), user("two")]);
    assert_eq!(epoch(), 2);
    // The two records' nonces (the 12 bytes after each 60-byte record header) differ in
    // their epoch.
    let seg = std::fs::read(&segments(dir.path())[0]).unwrap();
    let header = SEALED_HEADER_1;
    let first_len = u32::from_le_bytes(seg[header..header + 4].try_into().unwrap()) as usize;
    let second = header + 60 + first_len;
    assert_eq!(&seg[header + 60..header + 64], &1u32.to_le_bytes());
    assert_eq!(&seg[second + 60..second + 64], &2u32.to_le_bytes());
}

#[test]
fn erase_session_destroys_the_keys_of_earlier_sessions_kept_in_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    store.append("k", &secret(1)).unwrap();
    store.append("k", &secret(2)).unwrap();
    store.append("bob", &user("stays")).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // Damage k's first record (a good one follows): k has no good record left and goes to
    // quarantine whole, its data key still in keys/.
    // k was created first: its segment has the lowest session id.
    let seg = segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[SEALED_HEADER_1 + 70] ^= 0x55; // in the first record (record header 60 bytes)
    std::fs::write(&seg, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(store.recovery_report().has_damage());
    assert!(store.load("k").is_empty());
    assert_eq!(key_file(dir.path()).len(), 2);
    let removed = store.erase_session("k").unwrap();
    assert!(removed
        .iter()
        .any(|p| p.starts_with(dir.path().join("quarantine"))));
    assert_eq!(
        key_file(dir.path()).len(),
        1,
        "the quarantined session's key went too"
    );
    assert_eq!(store.load("bob"), vec![user("stays")]);
    // And the log says so.
    let k_id = u64::from_str_radix(&file_name(&seg)[..16], 16).unwrap();
    let logged = store
        .events(EventFilter::all())
        .unwrap()
        .filter_map(|e| match e.unwrap().kind {
            sessionlog::EventKind::Erased { session_id, .. } => Some(session_id),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(logged, vec![k_id]);
}

#[test]
fn a_reader_leaves_out_a_session_whose_erasure_a_crash_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    store.append("alice", &secret(1)).unwrap();
    store.append("bob", &user("stays")).unwrap();
    drop(store);
    let keys = key_file(dir.path());
    let id = keys[0].file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("keys").join(format!("{id}.erasing")), b"").unwrap();
    std::fs::remove_file(&keys[0]).unwrap();
    let reader = LogStore::open_read_only_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(reader.load("alice").is_empty());
    let events: Vec<_> = reader
        .events(EventFilter::all())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(events.iter().all(|e| e.session == "bob"), "{events:?}");
    assert!(reader.verify().unwrap().is_sound());
}

#[test]
fn a_torn_sealed_record_is_cut_off_as_without_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    for i in 0..3 {
        store.append("alice", &secret(i)).unwrap();
    }
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    // A crash mid-write: the last record's sealed payload cut short.
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let torn: Vec<&Finding> = store
        .recovery_report()
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::TornTail { .. }))
        .collect();
    assert_eq!(torn.len(), 1, "{:?}", store.recovery_report());
    assert!(!store.recovery_report().has_damage());
    assert_eq!(store.load("alice"), vec![secret(0), secret(1)]);
    // Writes go on after the cut, sealed, and read back.
    store.append("alice", &secret(3)).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.load("alice"), vec![secret(0), secret(1), secret(3)]);
}

#[test]
fn a_segment_of_an_unknown_version_stops_an_encrypted_open_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    store.append("k", &user("x")).unwrap();
    drop(store);
    let seg = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8] = 6; // a sound header of version 6 (its CRC fixed up)
    let crc_at = SEALED_HEADER_1 - 4;
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..SEALED_HEADER_1].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let before = snapshot_files(dir.path());
    match LogStore::open_with(dir.path(), keep_history_encrypted(key())) {
        Err(Error::UnsupportedVersion { found: 6, .. }) => {}
        other => panic!("expected UnsupportedVersion, got {:?}", other.map(|_| ())),
    }
    // Not even the nonce epoch in keys/STORE moved.
    assert_eq!(snapshot_files(dir.path()), before);
}

#[test]
fn an_erasure_marker_the_store_did_not_write_erases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    let messages = write_secrets(&store, "alice");
    store.close().unwrap();
    // An empty `.erasing` marker beside an intact data key, with no erasure logged: a stray
    // file (a restored backup's, a hand's), not an erasure a crash cut short.
    let marker = dir
        .path()
        .join("keys")
        .join(format!("{}.erasing", first_id(dir.path())));
    std::fs::write(&marker, b"").unwrap();
    // Without a checkpoint, as after a crash: open replays, and finishes erasures cut short.
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_encrypted(key())).unwrap();
    assert_eq!(
        store.load("alice"),
        messages,
        "nothing of the session is erased"
    );
    assert_eq!(key_file(dir.path()).len(), 1, "its data key is kept");
    let findings = &store.recovery_report().findings;
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::UnknownFile { path } if path == &marker)),
        "the marker is reported, and left alone: {findings:?}"
    );
    assert!(marker.exists());
}
