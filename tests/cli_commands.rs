//! The `sessionlog` command, run as a real process on real stores: each command's output and
//! exit status, read-only commands beside an open store without changing a byte, `verify`
//! finding damage, and JSONL imports (bad lines, a second import).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use sessionlog::{ChatMessage, LogStore, SessionBackend};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn dir_arg(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// `sessionlog import STORE --from-jsonl FROM`.
fn import_jsonl(store: &Path, from: &Path) -> Output {
    run(&["import", dir_arg(store), "--from-jsonl", dir_arg(from)])
}

fn sample(dir: &Path) -> LogStore {
    let store = open(dir);
    store.set_session_name("alice", "trip").unwrap();
    store
        .append("alice", &user("find a cabin near the lake"))
        .unwrap();
    store
        .append("alice", &ChatMessage::assistant("three cabins are free"))
        .unwrap();
    store.append("bob", &user("build status?")).unwrap();
    store
}

#[test]
fn ls_and_show_read_a_store_that_is_open_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path());
    let before = snapshot_files(dir.path());
    let ls = run(&["ls", dir_arg(dir.path())]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let out = text(&ls);
    assert!(
        out.contains("alice") && out.contains("trip") && out.contains("bob"),
        "{out}"
    );
    let json = run(&["ls", dir_arg(dir.path()), "--json"]);
    let rows: Vec<serde_json::Value> = text(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .any(|r| r["key"] == "alice" && r["messages"] == 2));
    let show = run(&["show", dir_arg(dir.path()), "alice", "--tail", "1"]);
    assert!(show.status.success());
    assert!(text(&show).contains("three cabins are free"));
    assert!(!text(&show).contains("find a cabin"));
    let missing = run(&["show", dir_arg(dir.path()), "nobody"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        snapshot_files(dir.path()),
        before,
        "read-only commands change nothing"
    );
    drop(store);
}

#[test]
fn search_stats_and_export_answer_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path());
    store
        .update_last("bob", &user("build status, please"))
        .unwrap();
    let search = run(&["search", dir_arg(dir.path()), "cabin", "--sessions"]);
    assert!(search.status.success());
    assert!(text(&search).starts_with("alice\t"), "{}", text(&search));
    assert!(!text(&search).contains("bob"));
    // Without --sessions: the messages, with their position, score and snippet.
    let hits = text(&run(&["search", dir_arg(dir.path()), "cabin"]));
    let fields: Vec<&str> = hits
        .lines()
        .next()
        .unwrap_or_default()
        .split('\t')
        .collect();
    assert_eq!(fields.len(), 4, "{hits}");
    assert_eq!(fields[0], "alice");
    assert!(fields[3].to_lowercase().contains("cabin"), "{hits}");
    let json = text(&run(&["search", dir_arg(dir.path()), "cabin", "--json"]));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["session"], "alice");
    assert!(first["score"].as_f64().unwrap() > 0.0);
    // reindex (a writable open: the store is closed first) builds the index's files, which
    // the read-only search then reads.
    drop(store);
    let out = run(&["reindex", dir_arg(dir.path())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("index/STATE").exists());
    assert_eq!(text(&run(&["search", dir_arg(dir.path()), "cabin"])), hits);
    let stats = run(&["stats", dir_arg(dir.path()), "--json"]);
    let last: serde_json::Value =
        serde_json::from_str(text(&stats).lines().last().unwrap()).unwrap();
    assert_eq!(last["total"]["sessions"], 2);
    assert_eq!(last["total"]["messages"], 3);
    assert!(
        last["total"]["dead_bytes"].as_u64().unwrap() > 0,
        "the update left a dead record"
    );
    let export = run(&["export", dir_arg(dir.path())]);
    let lines: Vec<serde_json::Value> = text(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .any(|l| l["session"] == "bob" && l["content"] == "build status, please"));
    assert!(lines.iter().all(|l| l["created_at"].is_string()));
}

#[test]
fn export_writes_markdown_people_can_read_and_a_json_document_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path());
    // A message whose text would break a Markdown document left unfenced.
    let tricky = "# not a heading\n```\ncode\n```";
    store
        .append("bob", &ChatMessage::assistant(tricky))
        .unwrap();
    // A key, a name and a role that would too, left as they are.
    let key = "odd`key\n# Session fake";
    store
        .append(key, &ChatMessage::new("tool\n# Session fake", "x"))
        .unwrap();
    store.set_session_name(key, "line\n# Session fake").unwrap();
    drop(store);
    let markdown = run(&["export", dir_arg(dir.path()), "--format", "markdown"]);
    assert!(markdown.status.success());
    let markdown = text(&markdown);
    assert!(
        markdown.contains("# Session `alice`\n\n- name: trip\n"),
        "{markdown}"
    );
    assert!(markdown.contains("- messages: 2\n"));
    assert!(markdown.contains("## user · "));
    assert!(markdown.contains("\n```\nfind a cabin near the lake\n```\n"));
    // The fence around the tricky message is longer than any backtick run inside it, and no
    // line of the message reads as a heading of the document.
    assert!(
        markdown.contains(&format!("\n````\n{tricky}\n````\n")),
        "{markdown}"
    );
    let headings = markdown
        .lines()
        .filter(|l| l.starts_with("# Session"))
        .count();
    assert_eq!(headings, 3, "{markdown}");
    assert!(
        markdown.contains("# Session ``odd`key\\n# Session fake``\n"),
        "{markdown}"
    );
    assert!(markdown.contains("- name: line\\n# Session fake\n"));
    assert!(markdown.contains("## tool\\n# Session fake · "));
    let one = run(&[
        "export",
        dir_arg(dir.path()),
        "--format",
        "markdown",
        "--session",
        "bob",
    ]);
    assert!(!text(&one).contains("alice"));
    let json = run(&["export", dir_arg(dir.path()), "--format", "json"]);
    assert!(json.status.success());
    let documents: Vec<serde_json::Value> = text(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(documents.len(), 3);
    let alice = documents.iter().find(|d| d["session"] == "alice").unwrap();
    assert_eq!(alice["name"], "trip");
    assert_eq!(alice["messages"].as_array().unwrap().len(), 2);
    assert_eq!(alice["messages"][1]["content"], "three cabins are free");
    assert!(alice["messages"][0]["created_at"].is_string());
    let bob = documents.iter().find(|d| d["session"] == "bob").unwrap();
    assert_eq!(bob["messages"][1]["content"], tricky);
}

#[test]
fn verify_reports_a_sound_store_with_0_and_damage_with_1() {
    let dir = tempfile::tempdir().unwrap();
    drop(sample(dir.path()));
    let sound = run(&["verify", dir_arg(dir.path())]);
    assert_eq!(sound.status.code(), Some(0), "{}", text(&sound));
    assert!(text(&sound).contains("sound: 2 sessions, 4 events checked"));
    let seg = segments(dir.path())
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().windows(5).any(|w| w == b"cabin"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(5).position(|w| w == b"cabin").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let before = snapshot_files(dir.path());
    let damaged = run(&["verify", dir_arg(dir.path())]);
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    let out = text(&damaged);
    assert!(
        out.contains("alice") && out.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
    // The open and the history's check find the same record: one problem.
    assert!(out.contains("\n1 problem(s) found"), "{out}");
    assert_eq!(snapshot_files(dir.path()), before, "verify changes nothing");
    let usage = run(&["verify", "/nonexistent/sessionlog-store"]);
    assert_eq!(usage.status.code(), Some(2));
}

/// `compact` keeps as many ids per session as `--idempotency-window` says; too large a window
/// is refused before anything is written.
#[test]
fn compact_keeps_the_window_of_ids_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir_arg(dir.path());
    let options = sessionlog::Options {
        idempotency_window: 16,
        ..sessionlog::Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    for i in 1..=16 {
        assert!(store
            .append_once("k", &user(&format!("m{i}")), &format!("id-{i}"))
            .unwrap());
    }
    store.close().unwrap();
    let before = common::snapshot_files(dir.path());
    let out = run(&["--idempotency-window", "70000", "compact", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("idempotency_window"));
    assert_eq!(common::snapshot_files(dir.path()), before);
    // The default window (4,096) keeps all 16.
    assert!(run(&["compact", d]).status.success());
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    assert!(!store.append_once("k", &user("again"), "id-1").unwrap());
    store.close().unwrap();
    // A window of 4 keeps the newest 4: id-2 is forgotten, id-16 is not.
    assert!(run(&["--idempotency-window", "4", "compact", d])
        .status
        .success());
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert!(!store.append_once("k", &user("again"), "id-16").unwrap());
    assert!(store.append_once("k", &user("again"), "id-2").unwrap());
}

#[test]
fn archive_hides_a_session_from_ls_until_unarchive_and_export_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(sample(dir.path()));
    let d = dir_arg(dir.path());
    let out = run(&["archive", d, "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text(&out), "archived bob\n");
    let listed = text(&run(&["ls", d]));
    assert!(
        listed.contains("alice") && !listed.contains("bob"),
        "{listed}"
    );
    let archived = text(&run(&["ls", d, "--archived", "--json"]));
    assert_eq!(archived.lines().count(), 1);
    assert!(archived.contains("\"key\":\"bob\""), "{archived}");
    assert!(!text(&run(&["search", d, "status", "--sessions"])).contains("bob"));
    assert!(!text(&run(&["search", d, "status"])).contains("bob"));
    // Export writes every session, archived ones too.
    assert!(text(&run(&["export", d])).contains("build status?"));
    assert!(text(&run(&["replay", d])).contains("archive"));
    let out = run(&["unarchive", d, "bob"]);
    assert!(out.status.success());
    assert!(text(&run(&["ls", d])).contains("bob"));
    assert!(
        text(&run(&["ls", d, "--archived"])).lines().count() == 1,
        "the header only"
    );
    // A missing session: exit status 1, nothing written.
    let before = common::snapshot_files(dir.path());
    let out = run(&["archive", d, "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session"));
    assert_eq!(common::snapshot_files(dir.path()), before);
}

#[test]
fn replay_shows_the_ids_of_exactly_once_appends() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append_once("k", &user("hi"), "wamid.HBg1").unwrap();
        store.append_once("k", &user("hi"), "wamid.HBg1").unwrap();
    }
    let out = text(&run(&["replay", dir_arg(dir.path())]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("append_once user \"hi\" id \"wamid.HBg1\""),
        "{out}"
    );
    let json = text(&run(&["replay", dir_arg(dir.path()), "--json"]));
    assert!(json.contains("\"message_id\":\"wamid.HBg1\""), "{json}");
}

#[test]
fn compact_reclaims_dead_bytes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = sample(dir.path());
        for i in 0..20 {
            store
                .update_last("alice", &ChatMessage::assistant(format!("draft {i}")))
                .unwrap();
        }
    }
    let out = run(&["compact", dir_arg(dir.path())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("compacted 2 session(s)"));
    let store = open(dir.path());
    assert_eq!(store.dead_bytes("alice"), 0);
    assert_eq!(store.load("alice")[1], ChatMessage::assistant("draft 19"));
}

#[test]
fn jsonl_import_keeps_file_times_reports_bad_lines_and_never_duplicates() {
    let source = tempfile::tempdir().unwrap();
    let good = source.path().join("telegram_42.jsonl");
    std::fs::write(
        &good,
        "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"assistant\",\"content\":\"hello\"}\n",
    )
    .unwrap();
    let bad = source.path().join("broken.jsonl");
    std::fs::write(&bad, "{\"role\":\"user\",\"content\":\"ok\"}\nnot json\n").unwrap();
    let source_before = snapshot_files(source.path());
    let mtime: chrono::DateTime<chrono::Utc> =
        std::fs::metadata(&good).unwrap().modified().unwrap().into();

    let store_dir = tempfile::tempdir().unwrap();
    let store_arg = dir_arg(store_dir.path());
    let first = run(&["import", store_arg, "--from-jsonl", dir_arg(source.path())]);
    assert_eq!(first.status.code(), Some(1), "a bad line is a failure");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("broken.jsonl:2"), "{stderr}");
    assert!(text(&first).contains("telegram_42: 2 message(s) imported"));
    let second = run(&["import", store_arg, "--from-jsonl", dir_arg(source.path())]);
    assert!(text(&second).contains("telegram_42: 0 message(s) imported, 2 already there"));
    assert_eq!(
        snapshot_files(source.path()),
        source_before,
        "the source is untouched"
    );

    let store = open(store_dir.path());
    assert_eq!(store.list_sessions(), ["telegram_42"]);
    let messages = store.load_with_timestamps("telegram_42");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].message, ChatMessage::assistant("hello"));
    let at = messages[0].created_at.unwrap();
    assert_eq!(
        at.timestamp(),
        mtime.timestamp(),
        "the file's time, not the import's"
    );
}

#[test]
fn replay_prints_every_event_in_order_and_filters_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path());
    store
        .update_last("alice", &ChatMessage::assistant("two cabins are free"))
        .unwrap();
    let d = dir_arg(dir.path());
    let out = run(&["replay", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].contains("alice") && lines[0].contains("name \"trip\""));
    assert!(lines[4].contains("update_last") && lines[4].contains("was \"three cabins are free\""));

    let json = run(&["replay", d, "--session", "alice", "--json", "--since", "2"]);
    let events: Vec<serde_json::Value> = text(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["seq"], 2);
    assert_eq!(events[0]["kind"], "append");
    assert_eq!(
        events[0]["message"]["content"],
        "find a cabin near the lake"
    );
    assert_eq!(events[2]["kind"], "update_last");
    assert_eq!(events[2]["old"]["content"], "three cabins are free");
    assert!(events.iter().all(|e| e["session"] == "alice"));

    let until = run(&["replay", d, "--until", "2030-01-01T00:00:00Z"]);
    assert_eq!(text(&until).lines().count(), 5);
    let bad = run(&["replay", d, "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn at_shows_a_session_as_it_was_after_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path());
    store
        .update_last("alice", &ChatMessage::assistant("two cabins are free"))
        .unwrap();
    let d = dir_arg(dir.path());
    // Event 3 appended the first answer; event 5 replaced it.
    let at3 = run(&["at", d, "alice", "--seq", "3"]);
    assert!(
        at3.status.success(),
        "{}",
        String::from_utf8_lossy(&at3.stderr)
    );
    let out = text(&at3);
    assert!(
        out.contains("three cabins are free") && !out.contains("two cabins"),
        "{out}"
    );
    let now = run(&["at", d, "alice", "--time", "2030-01-01T00:00:00Z", "--json"]);
    let lines: Vec<serde_json::Value> = text(&now)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["name"], "trip");
    assert_eq!(lines[0]["seq"], 5);
    assert_eq!(lines[2]["content"], "two cabins are free");
    let before = run(&["at", d, "bob", "--seq", "1"]);
    assert_eq!(before.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&before.stderr).contains("did not exist"));
    let neither = run(&["at", d, "alice"]);
    assert_eq!(neither.status.code(), Some(2));
}

/// JSONL stores name a file after its key with the characters a file name cannot hold
/// replaced, so `a:b` and `a/b` both became `a_b.jsonl` there: one file, already merged. The
/// import takes each file's name as its key, byte for byte, so names that differ only in
/// punctuation, case or accents stay apart.
#[test]
fn jsonl_import_keeps_every_file_name_a_separate_session() {
    let source = tempfile::tempdir().unwrap();
    let names = ["a_b", "a.b", "A_b", "ü_b", "a_b.jsonl"];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(
            source.path().join(format!("{name}.jsonl")),
            format!("{{\"role\":\"user\",\"content\":\"from {i}\"}}\n"),
        )
        .unwrap();
    }
    let store_dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "import",
        dir_arg(store_dir.path()),
        "--from-jsonl",
        dir_arg(source.path()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = open(store_dir.path());
    let mut keys = store.list_sessions();
    keys.sort();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(keys, expected);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(store.load(name), vec![user(&format!("from {i}"))]);
    }
}

#[test]
fn verify_counts_an_unfinished_last_record_as_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    drop(sample(dir.path()));
    // A write in progress (or a crash's torn tail): half a record at the end of a segment.
    let seg = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&seg, &bytes).unwrap();
    let out = run(&["verify", dir_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("incomplete record"), "{}", text(&out));
}

#[test]
fn an_encrypted_store_works_with_its_key_from_a_file_or_the_environment_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let jsonl = dir.path().join("jsonl");
    std::fs::create_dir(&jsonl).unwrap();
    std::fs::write(
        jsonl.join("alice.jsonl"),
        "{\"role\":\"user\",\"content\":\"my secret plan\"}\n",
    )
    .unwrap();
    let keygen = run(&["keygen"]);
    assert!(keygen.status.success());
    let hex = text(&keygen).trim().to_owned();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let with_file = |args: &[&str]| {
        let mut all = vec!["--key-file", key_file.to_str().unwrap()];
        all.extend_from_slice(args);
        run(&all)
    };
    let store_arg = store_dir.to_str().unwrap();
    let import = with_file(&["import", store_arg, "--from-jsonl", jsonl.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(snapshot_files(&store_dir)
        .iter()
        .all(|(_, bytes)| !bytes.windows(6).any(|w| w == b"secret")));
    let show = with_file(&["show", store_arg, "alice"]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(text(&show).contains("my secret plan"));
    let verify = with_file(&["verify", store_arg]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let replay = with_file(&["replay", store_arg]);
    assert!(text(&replay).contains("my secret plan"));
    // The key in the environment.
    let ls = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(["ls", store_arg])
        .env("SESSIONLOG_KEY", &hex)
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(text(&ls).contains("alice"));
    // Without a key, or with another one: a clear error, exit status 2.
    let without = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(["ls", store_arg])
        .env_remove("SESSIONLOG_KEY")
        .env_remove("SESSIONLOG_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without.stderr).contains("encryption key"));
    let wrong = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(["ls", store_arg])
        .env("SESSIONLOG_KEY", "00".repeat(32))
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not this store's key"));
}

/// A folder that is not a store (no LOCK file): every command that needs a store refuses it
/// with exit 2, naming it, and writes nothing into it.
#[test]
fn a_folder_that_is_not_a_store_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let d = dir_arg(dir.path());
    for args in [
        vec!["ls", d],
        vec!["verify", d],
        vec!["stats", d],
        vec!["compact", d],
        vec!["archive", d, "x"],
        vec!["reindex", d],
        vec!["export", d],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a sessionlog store"), "{args:?}: {err}");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
}

/// A command that writes (here `archive`, `unarchive`, then `compact`) reclaims no deleted
/// session the application could still restore unless given an undo window it is past
/// (`--tombstone-retention-hours`), and keeps the compacted history when told the application
/// keeps it (`--keep-history`).
#[test]
fn writing_commands_reclaim_and_drop_history_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let options = sessionlog::Options {
        keep_history: true,
        tombstone_retention: std::time::Duration::from_secs(30 * 86_400),
        ..sessionlog::Options::default()
    };
    {
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        for key in ["gone", "gone too"] {
            store.append(key, &user("deleted but restorable")).unwrap();
            store.delete_session(key).unwrap();
        }
        store.append("kept", &user("one")).unwrap();
        store.update_last("kept", &user("two")).unwrap();
        store.close().unwrap();
    }
    let d = dir_arg(dir.path());
    assert!(run(&["archive", d, "kept"]).status.success());
    assert!(run(&["unarchive", d, "kept"]).status.success());
    let out = run(&["--keep-history", "compact", d, "kept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_dir(dir.path().join("archive"))
            .unwrap()
            .count()
            > 0,
        "the compaction's replaced segment is archived"
    );
    {
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        assert!(store.restore_session("gone").unwrap());
        assert_eq!(store.load("gone"), vec![user("deleted but restorable")]);
    }
    // Told an undo window of zero hours: the deleted session left goes for good.
    let out = run(&["--tombstone-retention-hours", "0", "archive", d, "kept"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert!(!store.restore_session("gone too").unwrap());
    assert_eq!(store.load("gone"), vec![user("deleted but restorable")]);
}

/// `compact KEY` and `export --session KEY` of a session the store does not hold say so, with
/// a failing exit status, instead of succeeding with nothing done.
#[test]
fn a_session_key_the_store_does_not_hold_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path()).close().unwrap();
    let d = dir_arg(dir.path());
    for args in [
        vec!["compact", d, "typo"],
        vec!["export", d, "--session", "typo"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no session \"typo\""), "{args:?}: {err}");
    }
    assert!(run(&["compact", d, "alice"]).status.success());
}

/// A JSONL file that cannot be read as text (a byte that is not UTF-8) is reported with its
/// name and skipped: the files after it are still imported, and the exit status is 1.
#[test]
fn jsonl_import_skips_an_unreadable_file_and_imports_the_rest() {
    let from = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let line = |text: &str| format!("{{\"role\":\"user\",\"content\":\"{text}\"}}\n");
    std::fs::write(from.path().join("a.jsonl"), line("first")).unwrap();
    std::fs::write(
        from.path().join("b.jsonl"),
        b"{\"role\":\"user\",\"content\":\"\xff\"}\n",
    )
    .unwrap();
    std::fs::write(from.path().join("c.jsonl"), line("last")).unwrap();
    let store_dir = dir.path().join("store");
    let out = import_jsonl(&store_dir, from.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.jsonl"), "{err}");
    let store = LogStore::open(&store_dir).unwrap();
    assert_eq!(store.load("a"), vec![user("first")]);
    assert_eq!(store.load("c"), vec![user("last")]);
    assert!(!store.session_exists("b"));
}

/// Arguments that are mistyped get a usage error naming what is wrong, never an answer about
/// the store: a root that is not 64 hexadecimal digits (not a rolled-back folder), a key that
/// is not a key (the error names where it came from).
#[test]
fn mistyped_roots_and_keys_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    sample(dir.path()).close().unwrap();
    let d = dir_arg(dir.path());
    let out = run(&["verify", d, "--root", "xyz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a root"));
    // Blanks alone ask for the root, as no value does.
    let out = run(&["verify", d, "--root", "  "]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("root "), "{}", text(&out));
    let key_file = dir.path().with_extension("key");
    std::fs::write(&key_file, "not a key").unwrap();
    let out = run(&["--key-file", key_file.to_str().unwrap(), "ls", d]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(key_file.to_str().unwrap()), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(["ls", d])
        .env("SESSIONLOG_KEY", "nope")
        .env_remove("SESSIONLOG_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SESSIONLOG_KEY"));
    std::fs::remove_file(&key_file).unwrap();
    // `search --sessions` answers through the call that returns read errors.
    let out = run(&["search", d, "cabin", "--sessions"]);
    assert!(out.status.success());
    assert!(text(&out).starts_with("alice\t"), "{}", text(&out));
}

/// An import from a folder with no `.jsonl` file says so and creates no store.
#[test]
fn jsonl_import_of_a_folder_without_jsonl_files_creates_nothing() {
    let from = tempfile::tempdir().unwrap();
    std::fs::write(from.path().join("notes.txt"), "not a history").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let out = import_jsonl(&store_dir, from.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no .jsonl file"));
    assert!(!store_dir.exists());
}
