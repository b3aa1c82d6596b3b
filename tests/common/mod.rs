//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod hooked;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sessionlog::fs::FileSystem;
use sessionlog::testing::{run_op, Model, Op};
use sessionlog::{ChatMessage, Durability, EncryptionKey, LogStore, Options, SessionBackend};

/// A store with default options (`Durability::Always`).
pub fn open(dir: &Path) -> LogStore {
    LogStore::open(dir).expect("open")
}

/// A store that never syncs: for tests whose subject is not durability.
pub fn open_fast(dir: &Path) -> LogStore {
    LogStore::open_with(dir, Options::with_durability(Durability::Never)).expect("open")
}

/// Small segments (4 KiB), so that short workloads roll them over; every other option at its
/// default.
pub fn small_segments(durability: Durability) -> Options {
    Options {
        durability,
        segment_bytes_max: 4096,
        ..Options::default()
    }
}

/// [`small_segments`] without the background compactor, so that every file-system operation
/// comes from a call the test made: what the crash, fault and damage sweeps use.
pub fn sweep_options(durability: Durability) -> Options {
    Options {
        auto_compact: false,
        ..small_segments(durability)
    }
}

/// Keeps the history of compacted and deleted sessions (`keep_history`) and never syncs.
pub fn keep_history() -> Options {
    Options {
        keep_history: true,
        ..Options::with_durability(Durability::Never)
    }
}

/// [`keep_history`], keeping deleted sessions restorable for `retention`.
pub fn keep_history_retaining(retention: Duration) -> Options {
    Options {
        tombstone_retention: retention,
        ..keep_history()
    }
}

/// [`keep_history`], encrypted at rest with `key`.
pub fn keep_history_encrypted(key: EncryptionKey) -> Options {
    Options {
        encryption: Some(key),
        ..keep_history()
    }
}

/// The folder the tests on a simulated file system keep their store in.
pub const SIM_DIR: &str = "/store";

/// What [`run_until_error`] left.
pub struct Run {
    /// The model of every acknowledged call.
    pub acked: Model,
    /// The model after each acknowledged call, from the empty one on.
    pub history: Vec<Model>,
    /// The call that failed, if one did (`Op::Reopen` also when the first open failed).
    pub failed: Option<Op>,
    /// The store, still open, when a call other than an open failed.
    pub store: Option<LogStore>,
}

/// Cuts the power with `store` open on `fs`: nothing more reaches the disk, not even its
/// drop's.
pub fn cut_power(fs: &sessionlog::testing::SimFs, store: LogStore) {
    fs.cut_power_after(0);
    drop(store);
    fs.crash(None);
}

/// What a replay of every segment of the store in [`SIM_DIR`] on `fs` gives (a read-only open
/// never uses the checkpoint).
pub fn full_replay(fs: &sessionlog::testing::SimFs) -> Model {
    let store = LogStore::open_read_only_with_fs(SIM_DIR, Arc::new(fs.clone())).unwrap();
    assert!(!store.recovery_report().from_checkpoint);
    Model::observe(&store)
}

/// Opens a store in [`SIM_DIR`] on `fs` and runs `ops` (`Op::Reopen` closes and opens it
/// again) until the first error.
pub fn run_until_error(fs: Arc<dyn FileSystem>, options: &Options, ops: &[Op]) -> Run {
    let mut run = Run {
        acked: Model::default(),
        history: vec![Model::default()],
        failed: None,
        store: None,
    };
    let open = || LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::clone(&fs));
    let Ok(mut store) = open() else {
        run.failed = Some(Op::Reopen);
        return run;
    };
    for op in ops {
        let result = if *op == Op::Reopen {
            drop(store);
            match open() {
                Ok(reopened) => {
                    store = reopened;
                    Ok(())
                }
                Err(_) => {
                    run.failed = Some(op.clone());
                    return run;
                }
            }
        } else {
            run_op(&store, op)
        };
        if result.is_err() {
            run.failed = Some(op.clone());
            run.store = Some(store);
            return run;
        }
        run.acked.apply(op);
        run.history.push(run.acked.clone());
    }
    run
}

/// Segment files in `dir`, sorted by name.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "seg")
}

/// Files in `dir` with the extension `extension`, sorted by name.
/// The segment of the store in `dir` that holds `needle`.
pub fn segment_holding(dir: &Path, needle: &[u8]) -> PathBuf {
    segments(dir)
        .into_iter()
        .find(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .unwrap()
}

pub fn files_named(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    out.sort();
    out
}

/// A copy, in a new temporary folder, of the fixture store `tests/fixtures/{name}`.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy_folder(&fixture, dir.path());
    dir
}

fn copy_folder(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively, with its bytes.
pub fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

pub fn user(text: &str) -> ChatMessage {
    ChatMessage::user(text)
}

/// Appends `n` user messages `"{prefix} {i}"`.
pub fn fill(store: &LogStore, key: &str, prefix: &str, n: usize) {
    for i in 0..n {
        store.append(key, &user(&format!("{prefix} {i}"))).unwrap();
    }
}

/// Everything the read side of the trait says about the store, in a comparable form.
pub fn observe(store: &LogStore) -> String {
    let mut out = String::new();
    for meta in store.list_sessions_with_metadata() {
        out.push_str(&format!("{meta:?}\n"));
        let key = &meta.key;
        out.push_str(&format!("  exists={}\n", store.session_exists(key)));
        out.push_str(&format!("  get={:?}\n", store.get_session_metadata(key)));
        out.push_str(&format!(
            "  name={:?}\n",
            store.get_session_name(key).unwrap()
        ));
        out.push_str(&format!(
            "  alias={:?}\n",
            store.get_session_agent_alias(key).unwrap()
        ));
        out.push_str(&format!(
            "  state={:?}\n",
            store.get_session_state(key).unwrap()
        ));
        for m in store.load_with_timestamps(key) {
            out.push_str(&format!("  {m:?}\n"));
        }
        out.push_str(&format!("  tail={:?}\n", store.load_tail(key, 2)));
    }
    out.push_str(&format!("keys={:?}\n", store.list_sessions()));
    out.push_str(&format!("running={:?}\n", store.list_running_sessions()));
    out.push_str(&format!("stuck={:?}\n", store.list_stuck_sessions(0)));
    out
}

/// CRC-32 as the format uses it (IEEE), computed bit by bit so the test does not share code
/// with the crate.
pub fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A command that runs this test binary's ignored test `name` alone, in a process of its own
/// (a child a test kills).
pub fn child_test(name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    command
}

/// The number in the environment variable `name` (a longer opt-in run), or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (a linear congruential one) for tests that choose at random
/// from a seed.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number below `below`.
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs the `sessionlog` command with `args` and the environment variables `env`; it must
/// succeed. Returns its standard output.
pub fn sessionlog(args: &[&str], env: &[(&str, String)]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sessionlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The checkpoint files under `dir` this process holds open, by name ("(deleted)" marks a
/// removed one).
#[cfg(target_os = "linux")]
pub fn open_checkpoints(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let name = target
                .strip_prefix(dir)
                .ok()?
                .to_string_lossy()
                .into_owned();
            name.contains("CHECKPOINT").then_some(name)
        })
        .collect()
}
