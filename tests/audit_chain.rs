//! The hash chain: `verify` catches a record edited by hand (its CRC fixed up to match), a
//! record removed, and checks the chain through compaction and the archive. And stores written
//! by format version 1 (`tests/fixtures/v1-store`) open and read exactly as before.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sessionlog::{
    ChatMessage, Durability, ListQuery, LogStore, Options, SessionBackend, FORMAT_VERSION,
};

fn keep_history() -> Options {
    Options {
        keep_history: true,
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    }
}

/// The byte range of the version 2 record holding `needle` in a segment of session key `key`.
fn record_holding(bytes: &[u8], key: &str, needle: &[u8]) -> (usize, usize) {
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in segment");
    let mut offset = 39 + key.len(); // the segment header
    loop {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let end = offset + 60 + len;
        if at < end {
            return (offset, end);
        }
        offset = end;
    }
}

/// Recomputes a record's CRC (bytes 8..12) over everything else, as a careful forger would.
fn fix_crc(record: &mut [u8]) {
    let mut covered = record[..8].to_vec();
    covered.extend_from_slice(&record[12..]);
    let crc = crc32fast_hash(&covered);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn every_record_links_to_the_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    fill(&store, "k", "m", 10);
    store.compact_session("k").unwrap();
    fill(&store, "k", "n", 5);
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    // 10 appends, the compacted generation (10 restated + snapshot), 5 appends: every record
    // has a link, and each was checked.
    assert_eq!(report.links, 10 + 11 + 5);
}

#[test]
fn a_hand_edited_record_with_its_crc_fixed_is_caught_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "k", "message", 10);
    drop(store);
    let path = segment_holding(dir.path(), b"message 4");
    let mut bytes = std::fs::read(&path).unwrap();
    let (start, end) = record_holding(&bytes, "k", b"message 4");
    let at = start
        + bytes[start..end]
            .windows(9)
            .position(|w| w == b"message 4")
            .unwrap();
    bytes[at + 8] = b'5'; // "message 4" becomes "message 5"
    fix_crc(&mut bytes[start..end]);
    std::fs::write(&path, &bytes).unwrap();

    // The checksums all pass: open sees nothing wrong and serves the forgery.
    let store = LogStore::open_read_only(dir.path()).unwrap();
    assert!(!store.recovery_report().has_damage());
    assert_eq!(store.load("k")[4].content, "message 5");
    // The chain does not: the next record's link names the original bytes.
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.session.as_deref(), Some("k"));
    assert_eq!(problem.path, path);
    assert_eq!(problem.offset, start as u64, "the edited record is named");
    assert!(problem.reason.contains("hash chain"), "{}", problem.reason);
}

#[test]
fn a_record_cut_out_of_the_middle_is_caught_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "k", "message", 10);
    drop(store);
    let path = segment_holding(dir.path(), b"message 4");
    let mut bytes = std::fs::read(&path).unwrap();
    let (start, end) = record_holding(&bytes, "k", b"message 4");
    bytes.drain(start..end);
    std::fs::write(&path, &bytes).unwrap();
    let store = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(store.load("k").len(), 9, "every CRC passes");
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].reason.contains("hash chain"));
}

#[test]
fn an_edit_in_the_archive_is_caught_by_the_link_the_compaction_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    fill(&store, "k", "message", 5);
    store
        .update_last("k", &ChatMessage::assistant("final"))
        .unwrap();
    store.compact_session("k").unwrap();
    drop(store);
    // The last archived record is superseded history; nothing live points at it. Only the
    // compacted generation's first link vouches for it.
    let archived = segments(&dir.path().join("archive"))[0].clone();
    let mut bytes = std::fs::read(&archived).unwrap();
    let (start, end) = record_holding(&bytes, "k", b"final");
    let at = start
        + bytes[start..end]
            .windows(5)
            .position(|w| w == b"final")
            .unwrap();
    bytes[at] = b'F';
    fix_crc(&mut bytes[start..end]);
    std::fs::write(&archived, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    assert_eq!(store.load("k").last().unwrap().content, "final");
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].path, archived);
    assert_eq!(report.problems[0].offset, start as u64);
}

fn fixture_copy(version: u32) -> tempfile::TempDir {
    common::fixture_copy(&format!("v{version}-store"))
}

fn cli(args: &[&str]) -> String {
    cli_with_key(args, None)
}

/// The command's output; with `key`, for an encrypted store (through `SESSIONLOG_KEY`).
fn cli_with_key(args: &[&str], key: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessionlog"));
    command.args(args).env_remove("SESSIONLOG_KEY");
    command.env_remove("SESSIONLOG_KEY_FILE");
    if let Some(key) = key {
        command.env("SESSIONLOG_KEY", key);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fixture_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// Each fixture store reads exactly as the build that wrote it printed it
/// (`tests/fixtures/v{N}-*.jsonl`, from `sessionlog ls --json`, `export`, `replay --json`).
#[test]
fn a_store_of_every_format_version_reads_exactly_as_its_own_version_read_it() {
    assert_eq!(FORMAT_VERSION, 4, "add a fixture for the new version");
    // (Versions 3 and 5 are those of encrypted stores: tests/encryption.rs reads them.)
    for version in [1, 2, 4] {
        let dir = fixture_copy(version);
        let before = snapshot_files(dir.path());
        let d = dir.path().to_str().unwrap();
        let expected = |what: &str| fixture_text(&format!("v{version}-{what}.jsonl"));
        assert_eq!(cli(&["ls", d, "--json"]), expected("ls"), "v{version}");
        assert_eq!(cli(&["export", d]), expected("export"), "v{version}");
        assert_eq!(
            cli(&["replay", d, "--json"]),
            expected("replay"),
            "v{version}"
        );
        assert!(cli(&["verify", d]).contains("sound"));
        assert_eq!(
            snapshot_files(dir.path()),
            before,
            "read-only commands change nothing"
        );
        // A writable open reads the same (the archived sessions too).
        let store = open(dir.path());
        let archived = ListQuery {
            archived: Some(true),
            ..ListQuery::default()
        };
        let keys = store.list_sessions().into_iter().chain(
            (store.list_page(&archived).unwrap().sessions)
                .into_iter()
                .map(|m| m.key),
        );
        let messages: usize = keys.map(|k| store.load(&k).len()).sum();
        assert_eq!(messages, expected("export").lines().count());
    }
}

/// The key of `tests/fixtures/v3-store`, an encrypted store written by format version 3 (the
/// demo), with what that build printed for it.
const V3_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

#[test]
fn an_encrypted_store_of_version_3_reads_as_its_own_version_read_it_and_takes_writes() {
    let dir = fixture_copy(3);
    let before = snapshot_files(dir.path());
    let d = dir.path().to_str().unwrap();
    let expected = |what: &str| fixture_text(&format!("v3-{what}.jsonl"));
    let key = Some(V3_KEY);
    assert_eq!(cli_with_key(&["ls", d, "--json"], key), expected("ls"));
    assert_eq!(cli_with_key(&["export", d], key), expected("export"));
    assert_eq!(
        cli_with_key(&["replay", d, "--json"], key),
        expected("replay")
    );
    assert!(cli_with_key(&["verify", d], key).contains("sound"));
    assert_eq!(snapshot_files(dir.path()), before);
    // A writable open takes new writes in version 5 segments, chained to the old ones.
    let options = Options {
        encryption: Some(sessionlog::EncryptionKey::from_hex(V3_KEY).unwrap()),
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    let key = store.list_sessions()[0].clone();
    let held = store.load(&key).len();
    assert!(store.append_once(&key, &user("one more"), "v5-1").unwrap());
    store.archive_session(&key).unwrap();
    drop(store);
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.load(&key).len(), held + 1);
    assert!(store.is_archived(&key));
    assert!(!store.append_once(&key, &user("one more"), "v5-1").unwrap());
    assert!(store.verify().unwrap().is_sound());
    let versions: Vec<u8> = segments(dir.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap()[8])
        .collect();
    assert!(
        versions.contains(&3) && versions.contains(&5),
        "{versions:?}"
    );
}

#[test]
fn a_version_1_store_takes_new_writes_in_new_version_segments_with_a_linked_chain() {
    let dir = fixture_copy(1);
    let v1_segments: Vec<(PathBuf, Vec<u8>)> = segments(dir.path())
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let store = open(dir.path());
    let before = store.load("telegram_alice");
    assert_eq!(before.len(), 3);
    store
        .append("telegram_alice", &user("and a boat?"))
        .unwrap();
    store
        .update_last(
            "discord.clamps/room-7/bob",
            &ChatMessage::assistant("All green!"),
        )
        .unwrap();
    store.append("new", &user("hello")).unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.load("telegram_alice")[..3], before[..]);
    assert_eq!(store.load("telegram_alice").len(), 4);
    assert_eq!(
        store
            .load("discord.clamps/room-7/bob")
            .last()
            .unwrap()
            .content,
        "All green!"
    );
    // The version 1 segments were not appended to: new records went to new segments.
    for (path, bytes) in &v1_segments {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    for path in segments(dir.path()) {
        let version = u32::from_le_bytes(std::fs::read(&path).unwrap()[8..12].try_into().unwrap());
        let is_old = v1_segments.iter().any(|(p, _)| *p == path);
        let expected = if is_old { 1 } else { FORMAT_VERSION };
        assert_eq!(version, expected, "{}", path.display());
    }
    // The first new record of each old session links to its last version 1 record.
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert_eq!(
        report.links, 3,
        "two links over the version boundary, one new session"
    );
    // Compaction rewrites an old session wholly in the new version.
    store.compact_session("telegram_alice").unwrap();
    assert_eq!(store.load("telegram_alice").len(), 4);
    assert!(store.verify().unwrap().is_sound());
}
