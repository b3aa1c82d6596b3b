//! The comparison harness: the same workload, in one process and one run, against sessionlog,
//! the SQLite store and the JSONL store agents use today, and the disk's own limits.
//!
//! ```sh
//! cargo run --release --example compare            # full sizes (a few minutes)
//! cargo run --release --example compare -- --smoke # tiny sizes (what CI runs)
//! cargo run --release --example compare -- --million # 1,000,000 sessions × 2 (opt-in: ~5 GB
//!                                                     # of disk, several minutes)
//! ```
//!
//! It prints one Markdown table: each figure for each store, and our ratio to each peer and to
//! the disk. `docs/PERFORMANCE.md` holds the latest table.

mod jsonl;
mod replication;
mod sqlite;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonl::JsonlStore;
use sessionlog::{
    AsyncLogStore, ChatMessage, Durability, ListQuery, LogStore, MessageQuery, Options,
    SessionBackend, SessionQuery,
};
use sqlite::SqliteStore;

/// Workload sizes.
#[derive(Clone, Copy)]
struct Sizes {
    durable_appends: usize,
    threads_appends: usize,
    buffered_appends: usize,
    updates: usize,
    loads: usize,
    tail_session: usize,
    list_sessions: usize,
    list_messages: usize,
    memory_messages: usize,
    page_sessions: usize,
    /// The crash row: bytes a child writes over `crash_sessions` sessions before it is killed.
    crash_bytes: u64,
    crash_sessions: usize,
    /// Messages written after the search index was saved, before a crash.
    index_catch_up: usize,
}

const FULL: Sizes = Sizes {
    durable_appends: 2000,
    threads_appends: 500,
    buffered_appends: 50_000,
    updates: 300,
    loads: 50,
    tail_session: 10_000,
    list_sessions: 10_000,
    list_messages: 20,
    memory_messages: 1_000_000,
    page_sessions: 100_000,
    crash_bytes: 1 << 30,
    crash_sessions: 10_000,
    index_catch_up: 100_000,
};

const SMOKE: Sizes = Sizes {
    durable_appends: 30,
    threads_appends: 10,
    buffered_appends: 300,
    updates: 10,
    loads: 3,
    tail_session: 1000,
    list_sessions: 100,
    list_messages: 5,
    memory_messages: 10_000,
    page_sessions: 500,
    crash_bytes: 2 << 20,
    crash_sessions: 100,
    index_catch_up: 200,
};

/// A fixed-seed generator, so every run writes the same messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the", "agent", "session", "reply", "tool", "result", "user", "asked", "about", "weather",
    "in", "paris", "and", "then", "booked", "a", "table", "for", "two", "at", "eight", "please",
    "confirm", "order", "status", "shipping", "delayed", "refund", "issued", "thanks",
];
/// A word that occurs in about one message in a thousand.
const RARE: &str = "zygomorphic";
/// A word in nearly every message.
const COMMON: &str = "the";

/// Messages of 200 to 800 bytes (80%) and 2 to 8 KiB (20%).
struct Messages(Rng);

impl Messages {
    fn new() -> Messages {
        Messages(Rng(0x05e5_510c))
    }

    fn next(&mut self) -> ChatMessage {
        let rng = &mut self.0;
        let size = if rng.below(100) < 80 {
            200 + rng.below(600)
        } else {
            2048 + rng.below(6144)
        } as usize;
        let mut text = String::with_capacity(size + 16);
        if rng.below(1000) == 0 {
            text.push_str(RARE);
            text.push(' ');
        }
        while text.len() < size {
            text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            text.push(' ');
        }
        text.truncate(size);
        if rng.below(2) == 0 {
            ChatMessage::user(text)
        } else {
            ChatMessage::assistant(text)
        }
    }

    fn batch(&mut self, n: usize) -> Vec<ChatMessage> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn payload_bytes(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| (m.role.len() + m.content.len()) as u64)
        .sum()
}

fn ours(dir: &Path, durability: Durability) -> LogStore {
    let options = Options {
        durability,
        ..Options::default()
    };
    LogStore::open_with(dir, options).expect("open sessionlog")
}

/// Our store with encryption at rest (a fixed key: the figure is the cost of sealing).
fn ours_encrypted(dir: &Path, durability: Durability) -> LogStore {
    let options = Options {
        durability,
        encryption: Some(sessionlog::EncryptionKey::from_bytes([7; 32])),
        ..Options::default()
    };
    LogStore::open_with(dir, options).expect("open sessionlog, encrypted")
}

/// Appends `messages` to `key` one call at a time; returns calls per second.
fn appends_per_sec(store: &dyn SessionBackend, key: &str, messages: &[ChatMessage]) -> f64 {
    let start = Instant::now();
    for m in messages {
        store.append(key, m).expect("append");
    }
    messages.len() as f64 / start.elapsed().as_secs_f64()
}

/// `threads` threads each appending to their own session; total calls per second.
fn threaded_appends_per_sec(
    store: Arc<dyn SessionBackend>,
    threads: usize,
    messages: &[ChatMessage],
) -> f64 {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                for m in messages {
                    store.append(&format!("thread-{t}"), m).expect("append");
                }
            });
        }
    });
    (threads * messages.len()) as f64 / start.elapsed().as_secs_f64()
}

/// `tasks` Tokio tasks (on a two-worker runtime) each appending `messages` to their own session
/// through `AsyncLogStore`, durably; total calls per second.
fn async_appends_per_sec(dir: &Path, tasks: usize, messages: &[ChatMessage]) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let messages: Arc<Vec<ChatMessage>> = Arc::new(messages.to_vec());
    runtime.block_on(async {
        let store = AsyncLogStore::from(ours(dir, Durability::Always));
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (store, messages) = (store.clone(), Arc::clone(&messages));
                tokio::spawn(async move {
                    for m in messages.iter() {
                        store.append(&format!("task-{t}"), m).await.expect("append");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
        (tasks * messages.len()) as f64 / start.elapsed().as_secs_f64()
    })
}

/// Raw disk: 512-byte appends, each followed by fdatasync; per second.
fn raw_fdatasync_per_sec(dir: &Path, n: usize) -> f64 {
    let path = dir.join("raw-sync");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let block = [7u8; 512];
    let start = Instant::now();
    for i in 0..n {
        file.write_all_at(&block, (i * 512) as u64).unwrap();
        file.sync_data().unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).ok();
    rate
}

/// Raw disk: buffered appends of the workload's message sizes, no sync; per second.
fn raw_buffered_per_sec(dir: &Path, messages: &[ChatMessage]) -> f64 {
    let path = dir.join("raw-buffered");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let start = Instant::now();
    for m in messages {
        file.write_all(m.content.as_bytes()).unwrap();
    }
    let rate = messages.len() as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).ok();
    rate
}

fn median_of(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// A checkpoint while the store runs (`sessions` of them, every one written since open): the
/// first, a full one, then a delta, with a hundred sessions written since. What was written
/// is synced before each, so that each times the checkpoint alone.
fn checkpoint_row(store: &LogStore, dir: &Path, sessions: usize) -> Row {
    let len = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    store.sync().unwrap();
    let start = Instant::now();
    store.checkpoint().unwrap();
    let full = start.elapsed();
    let full_bytes = len("CHECKPOINT");
    let written = 100.min(sessions);
    for s in (0..sessions)
        .step_by((sessions / written).max(1))
        .take(written)
    {
        store
            .append(
                &format!("user_{s}"),
                &ChatMessage::user("after the checkpoint"),
            )
            .unwrap();
    }
    store.sync().unwrap();
    let start = Instant::now();
    store.checkpoint().unwrap();
    let delta = start.elapsed();
    let delta_bytes = len("CHECKPOINT.delta");
    Row {
        figure: format!(
            "checkpoint while the store runs, {sessions} sessions: full / delta of {written} written since"
        ),
        ours: format!("{} / {}", dur(full), dur(delta)),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} of the full one's time; {:.1} MB / {:.1} KB written",
            ratio(delta.as_secs_f64() / full.as_secs_f64()),
            full_bytes as f64 / 1e6,
            delta_bytes as f64 / 1e3
        ),
        goal: "measured: a checkpoint costs what changed",
    }
}

fn time_per_call(calls: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed() / calls.max(1) as u32
}

fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// One row of the table.
struct Row {
    figure: String,
    ours: String,
    sqlite: String,
    jsonl: String,
    disk: String,
    ratios: String,
    goal: &'static str,
}

fn ops(rate: f64) -> String {
    if rate >= 10_000.0 {
        format!("{:.0}k/s", rate / 1000.0)
    } else {
        format!("{rate:.0}/s")
    }
}

fn dur(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 10_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else if micros >= 10.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{micros:.2} µs")
    }
}

fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// Runs a child copy of this program for a figure that needs a fresh process.
fn child(args: &[&str]) -> f64 {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .args(args)
        .output()
        .expect("run child");
    assert!(
        output.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("child prints a number")
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The peak resident set of this process so far (`VmHWM` in `/proc/self/status`), in bytes.
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Open + `list_sessions_with_metadata` of our store and SQLite's, each in new processes
/// taking turns (the VM's speed drifts between runs): the median time of 5 and the median of
/// the 5 pairs' ratios; and the peak resident bytes per message over a process that opened
/// nothing (median of 3). Returns the two rows.
fn open_list_rows(
    label: &str,
    ours_dir: &Path,
    sqlite_dir: &Path,
    messages: usize,
    goal: &'static str,
) -> [Row; 2] {
    let median = |args: &[&str]| median_of((0..3).map(|_| child(args)).collect());
    let (ours_path, sqlite_path) = (ours_dir.to_str().unwrap(), sqlite_dir.to_str().unwrap());
    let (mut ours_times, mut sqlite_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let ours_run = child(&["open-list-ours", ours_path]);
        let sqlite_run = child(&["open-list-sqlite", sqlite_path]);
        ours_times.push(ours_run);
        sqlite_times.push(sqlite_run);
        ratios.push(ours_run / sqlite_run);
    }
    let (ours_time, sqlite_time) = (median_of(ours_times), median_of(sqlite_times));
    let paired = median_of(ratios);
    let empty = median(&["peak-none", ours_path]);
    let per_message = |peak: f64| (peak - empty).max(0.0) / messages as f64;
    let ours_peak = per_message(median(&["peak-ours", ours_path]));
    let sqlite_peak = per_message(median(&["peak-sqlite", sqlite_path]));
    [
        Row {
            figure: format!("open + list_sessions_with_metadata, {label}, new process"),
            ours: format!("{} (checkpoint)", dur(Duration::from_secs_f64(ours_time))),
            sqlite: dur(Duration::from_secs_f64(sqlite_time)),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!("{} of SQLite's time (median of the pairs)", ratio(paired)),
            goal,
        },
        Row {
            figure: format!("peak resident memory of that process per message, {label}"),
            ours: format!("{ours_peak:.0} B"),
            sqlite: format!("{sqlite_peak:.0} B"),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!(
                "{} of SQLite's (VmHWM less a process that opened nothing: {:.1} MB)",
                ratio(ours_peak / sqlite_peak),
                empty / 1e6
            ),
            goal: "≤ 1.0× SQLite's",
        },
    ]
}

/// Open + list after a crash: a child writes `crash_bytes` over `crash_sessions` sessions with
/// the default checkpoints and is killed (SIGKILL); new processes open and list it as it is
/// (median of 3, none closing it), then one closes it and the same is timed from the clean
/// close's checkpoint.
fn crash_open_row(dir: &Path, sizes: &Sizes) -> Row {
    let path = dir.to_str().unwrap();
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args(["--child", "write-until-killed", path])
        .arg(sizes.crash_bytes.to_string())
        .arg(sizes.crash_sessions.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(writer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "written");
    writer.kill().unwrap(); // SIGKILL
    writer.wait().unwrap();
    let bytes = folder_bytes(dir);
    let crashed = median_of(
        (0..3)
            .map(|_| child(&["open-list-crashed", path]))
            .collect(),
    );
    // The system calls an open after this crash cannot do without, as a floor.
    let floor = median_of((0..3).map(|_| child(&["crash-floor", path])).collect());
    child(&["open-list-ours", path]); // closes cleanly
    let clean = median_of((0..3).map(|_| child(&["open-list-ours", path])).collect());
    Row {
        figure: format!(
            "open + list after SIGKILL, {} MB over {} sessions, new process",
            bytes / 1_000_000,
            sizes.crash_sessions
        ),
        ours: format!(
            "{} (clean: {})",
            dur(Duration::from_secs_f64(crashed)),
            dur(Duration::from_secs_f64(clean))
        ),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} of a clean open; its floor {} ({} of a clean open: the folder listed, then each segment's stat, open, stat, 4 KiB read and close)",
            ratio(crashed / clean),
            dur(Duration::from_secs_f64(floor)),
            ratio(floor / clean)
        ),
        goal: "≤ 3× a clean open",
    }
}

/// The child modes: each prints one number.
fn run_child(args: &[String]) {
    let dir = PathBuf::from(&args[1]);
    let value = match args[0].as_str() {
        // Seconds to open the store and list every session with metadata.
        // Appends `n` messages after the saved index, then exits without closing: the index's
        // delta is lost, the segments are not (a process crash).
        "write-then-exit" => {
            let n: usize = args[2].parse().unwrap();
            let store = ours(&dir, Durability::Never);
            let mut gen = Messages::new();
            for i in 0..n {
                store
                    .append(&format!("telegram_{}", i % 10_000), &gen.next())
                    .unwrap();
            }
            store.sync().unwrap();
            println!("0");
            std::process::exit(0);
        }
        "open-list-ours" => {
            let start = Instant::now();
            let store = ours(&dir, Durability::Never);
            let listed = store.list_sessions_with_metadata().len();
            assert!(listed > 0);
            start.elapsed().as_secs_f64()
        }
        "open-list-sqlite" => {
            let start = Instant::now();
            let store = SqliteStore::open(&dir, false).unwrap();
            let listed = store.list_sessions_with_metadata().len();
            assert!(listed > 0);
            start.elapsed().as_secs_f64()
        }
        "open-list-jsonl" => {
            let start = Instant::now();
            let store = JsonlStore::open(&dir, false);
            let listed = store.list_sessions_with_metadata().len();
            assert!(listed > 0);
            start.elapsed().as_secs_f64()
        }
        // As "open-list-ours", but the process then exits without closing the store (a
        // crashed store stays crashed for the next run).
        "open-list-crashed" => {
            let start = Instant::now();
            let store = ours(&dir, Durability::Never);
            let listed = store.list_sessions_with_metadata().len();
            assert!(listed > 0);
            let elapsed = start.elapsed().as_secs_f64();
            eprintln!(
                "replayed {} sessions",
                store.recovery_report().replayed_sessions
            );
            std::mem::forget(store);
            elapsed
        }
        // Writes `args[2]` bytes of messages over `args[3]` sessions with the default
        // checkpoints, says so, and waits to be killed.
        "write-until-killed" => {
            let (bytes, sessions): (u64, usize) =
                (args[2].parse().unwrap(), args[3].parse().unwrap());
            let store = ours(&dir, Durability::Never);
            let text =
                "a message of an agent's conversation, long enough to be typical. ".repeat(15);
            let message = ChatMessage::user(text.as_str());
            let (mut written, mut i) = (0u64, 0usize);
            while written < bytes {
                store
                    .append(&format!("user_{}", i % sessions), &message)
                    .unwrap();
                written += text.len() as u64;
                i += 1;
            }
            println!("written");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        // Seconds of the system calls an open after a crash of a writer that wrote to every
        // session since the last checkpoint cannot do without: the folder listed, then for
        // each segment a look at its length and times by name, and its tail read (open, its
        // length, one 4 KiB read, close).
        "crash-floor" => {
            let start = Instant::now();
            let mut names: Vec<PathBuf> = (std::fs::read_dir(&dir).unwrap().flatten())
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|e| e == "seg"))
                .collect();
            names.sort();
            const TAIL: u64 = 4096;
            let mut tail = vec![0u8; TAIL as usize];
            let mut read = 0;
            for name in &names {
                assert!(std::fs::symlink_metadata(name).unwrap().len() > 0);
                let file = std::fs::File::open(name).unwrap();
                let len = file.metadata().unwrap().len();
                read += file.read_at(&mut tail, len.saturating_sub(TAIL)).unwrap();
            }
            assert!(read > 0);
            start.elapsed().as_secs_f64()
        }
        // Seconds to open the store and read the first page of 50 sessions by activity.
        "open-page-ours" => {
            let start = Instant::now();
            let store = ours(&dir, Durability::Never);
            let page = store.list_page(&first_page()).unwrap();
            assert!(!page.sessions.is_empty());
            start.elapsed().as_secs_f64()
        }
        "peak-page-ours" => {
            let store = ours(&dir, Durability::Never);
            assert!(!store.list_page(&first_page()).unwrap().sessions.is_empty());
            peak_resident_bytes() as f64
        }
        // The process's peak resident bytes (`VmHWM`) after opening and listing, or after
        // nothing (the baseline every other peak is measured against).
        "peak-none" => peak_resident_bytes() as f64,
        "peak-ours" => {
            let store = ours(&dir, Durability::Never);
            assert!(!store.list_sessions_with_metadata().is_empty());
            peak_resident_bytes() as f64
        }
        "peak-sqlite" => {
            let store = SqliteStore::open(&dir, false).unwrap();
            assert!(!store.list_sessions_with_metadata().is_empty());
            peak_resident_bytes() as f64
        }
        // Resident bytes the open store added, per message.
        // (Every session is read, so that its message locations are in memory: open reads
        // none of them.)
        "memory-ours" => {
            let messages: f64 = args[2].parse().unwrap();
            let before = resident_bytes();
            let store = ours(&dir, Durability::Never);
            let keys = store.list_sessions();
            assert!(!keys.is_empty());
            for key in &keys {
                assert_eq!(store.load_tail(key, 1).len(), 1);
            }
            let after = resident_bytes();
            (after.saturating_sub(before)) as f64 / messages
        }
        other => panic!("unknown child mode {other}"),
    };
    println!("{value}");
}

fn first_page() -> ListQuery {
    ListQuery {
        limit: 50,
        ..ListQuery::default()
    }
}

/// The opt-in row of 1,000,000 sessions × 2 messages: the store is written (under `Never`)
/// and closed, then new processes open it and read the first page of 50 sessions (median of 3),
/// and their peak resident memory is measured over a process that opened nothing.
fn million_rows(dir: &Path, sessions: usize) {
    let started = Instant::now();
    let store = ours(dir, Durability::Never);
    let message = ChatMessage::user("hello, a short message");
    for s in 0..sessions {
        let key = format!("user_{s}");
        store.append(&key, &message).unwrap();
        store.append(&key, &message).unwrap();
    }
    let written = started.elapsed();
    let start = Instant::now();
    store.close().unwrap();
    let close = start.elapsed();
    let path = dir.to_str().unwrap();
    let median = |args: &[&str]| median_of((0..3).map(|_| child(args)).collect());
    let open_page = median(&["open-page-ours", path]);
    let peak = median(&["peak-page-ours", path]) - median(&["peak-none", path]);
    println!(
        "| figure | sessionlog | goal |\n|---|---|---|\n\
         | {sessions} sessions × 2: open + first list_page(50), new process | {} | under 1 s |\n\
         | peak resident memory of that process (less a process that opened nothing) | {:.0} MB | under 300 MB |\n\
         | writing the store / its close() (Never) | {} / {} | |",
        dur(Duration::from_secs_f64(open_page)),
        peak / 1e6,
        dur(written),
        dur(close),
    );
    println!(
        "\n(store: {:.2} GB on disk)",
        folder_bytes(dir) as f64 / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        run_child(&args[1..]);
        return;
    }
    if args.iter().any(|a| a == "--million") {
        // `--sessions N` for a smaller store of the same shape, `--keep` to keep it (for a
        // profile).
        let sessions = args
            .iter()
            .position(|a| a == "--sessions")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(1_000_000);
        let dir = PathBuf::from("target/compare-million");
        std::fs::remove_dir_all(&dir).ok();
        million_rows(&dir, sessions);
        if !args.iter().any(|a| a == "--keep") {
            std::fs::remove_dir_all(&dir).ok();
        }
        return;
    }
    let smoke = args.iter().any(|a| a == "--smoke");
    let sizes = if smoke { SMOKE } else { FULL };
    let root = PathBuf::from(
        args.iter()
            .position(|a| a == "--dir")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| "target/compare-work".into()),
    );
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let fresh = |name: &str| {
        let dir = root.join(name);
        std::fs::remove_dir_all(&dir).ok();
        dir
    };
    let mut rows = Vec::new();
    let mut gen = Messages::new();
    if args.iter().any(|a| a == "--replication-only") {
        // Only the replication rows (`-- --replication-only`, with `--smoke` for small sizes).
        print_rows(&replication_rows(&fresh, &mut gen, &sizes, smoke), smoke);
        std::fs::remove_dir_all(&root).ok();
        return;
    }

    // Durable appends, one thread: three rounds, the stores taking turns, median of each (the
    // disk's sync latency drifts; taking turns spreads the drift over all of them).
    let batch = gen.batch(sizes.durable_appends);
    let mut rounds: [Vec<f64>; 4] = Default::default();
    for round in 0..3 {
        let tag = |name: &str| format!("{name}-{round}");
        rounds[0].push(appends_per_sec(
            &ours(&fresh(&tag("a1")), Durability::Always),
            "k",
            &batch,
        ));
        rounds[1].push(appends_per_sec(
            &SqliteStore::open(&fresh(&tag("a2")), true).unwrap(),
            "k",
            &batch,
        ));
        rounds[2].push(appends_per_sec(
            &JsonlStore::open(&fresh(&tag("a3")), true),
            "k",
            &batch,
        ));
        rounds[3].push(raw_fdatasync_per_sec(&root, sizes.durable_appends));
    }
    let [ours_always, sqlite_full, jsonl_sync, raw_sync] = rounds.map(median_of);
    rows.push(Row {
        figure: "durable append, 1 thread".into(),
        ours: ops(ours_always),
        sqlite: format!("{} (FULL)", ops(sqlite_full)),
        jsonl: format!("{} (fsync)", ops(jsonl_sync)),
        disk: format!("{} (512 B + fdatasync)", ops(raw_sync)),
        ratios: format!(
            "{} SQLite, {} disk",
            ratio(ours_always / sqlite_full),
            ratio(ours_always / raw_sync)
        ),
        goal: "≥ 2× SQLite FULL, ≥ 0.9× disk",
    });

    // Durable appends, 4 threads on 4 sessions.
    let batch = gen.batch(sizes.threads_appends);
    let ours_4 =
        threaded_appends_per_sec(Arc::new(ours(&fresh("t1"), Durability::Always)), 4, &batch);
    let sqlite_4 = threaded_appends_per_sec(
        Arc::new(SqliteStore::open(&fresh("t2"), true).unwrap()),
        4,
        &batch,
    );
    rows.push(Row {
        figure: "durable append, 4 threads on 4 sessions".into(),
        ours: ops(ours_4),
        sqlite: format!("{} (FULL)", ops(sqlite_4)),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} our 1 thread", ratio(ours_4 / ours_always)),
        goal: "≥ 1.5× our 1-thread figure",
    });

    // The same work from async code: 64 Tokio tasks on 64 sessions through `AsyncLogStore`,
    // each writing a sixteenth of a thread's share.
    let share = (batch.len() * 4 / 64).max(1);
    let ours_async = async_appends_per_sec(&fresh("t3"), 64, &batch[..share.min(batch.len())]);
    rows.push(Row {
        figure: "async durable append, 64 tasks on 64 sessions".into(),
        ours: ops(ours_async),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} our 4 threads", ratio(ours_async / ours_4)),
        goal: "measured: the async API against 4 blocking threads",
    });

    // Buffered appends, three rounds likewise.
    let batch = gen.batch(sizes.buffered_appends);
    let mut rounds: [Vec<f64>; 5] = Default::default();
    for round in 0..3 {
        let tag = |name: &str| format!("{name}-{round}");
        rounds[0].push(appends_per_sec(
            &ours(&fresh(&tag("b1")), Durability::Never),
            "k",
            &batch,
        ));
        // The same with the search index in use (a query made it so): the background keeps
        // it caught up; appends never wait for it.
        let indexed = ours(&fresh(&tag("b4")), Durability::Never);
        indexed.search_messages(&MessageQuery::new(RARE)).unwrap();
        rounds[4].push(appends_per_sec(&indexed, "k", &batch));
        drop(indexed);
        rounds[1].push(appends_per_sec(
            &JsonlStore::open(&fresh(&tag("b2")), false),
            "k",
            &batch,
        ));
        rounds[2].push(appends_per_sec(
            &SqliteStore::open(&fresh(&tag("b3")), false).unwrap(),
            "k",
            &batch[..batch.len().min(sizes.durable_appends * 2)],
        ));
        rounds[3].push(raw_buffered_per_sec(&root, &batch));
        for name in ["b1", "b2", "b3", "b4"] {
            std::fs::remove_dir_all(root.join(tag(name))).ok();
        }
    }
    let [ours_never, jsonl_plain, sqlite_normal, raw_buffered, ours_indexed] =
        rounds.map(median_of);
    rows.push(Row {
        figure: "buffered append (Never)".into(),
        ours: ops(ours_never),
        sqlite: format!("{} (NORMAL)", ops(sqlite_normal)),
        jsonl: format!("{} (no fsync)", ops(jsonl_plain)),
        disk: format!("{} (write())", ops(raw_buffered)),
        ratios: format!(
            "{} JSONL, {} SQLite",
            ratio(ours_never / jsonl_plain),
            ratio(ours_never / sqlite_normal)
        ),
        goal: "≥ 2× JSONL, ≥ 20× SQLite NORMAL",
    });
    rows.push(Row {
        figure: "buffered append (Never) with the search index in use".into(),
        ours: ops(ours_indexed),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} our figure without", ratio(ours_indexed / ours_never)),
        goal: "≥ 0.9× the figure without an index",
    });

    // update_last on a 1,000-message session, and load of it.
    let session = gen.batch(1000);
    let ours_store = ours(&fresh("u1"), Durability::Always);
    let sqlite_store = SqliteStore::open(&fresh("u2"), true).unwrap();
    let jsonl_store = JsonlStore::open(&fresh("u3"), true);
    for m in &session {
        ours_store.append("s", m).unwrap();
        jsonl_store.append("s", m).unwrap();
    }
    sqlite_store.bulk_append("s", &session).unwrap();
    let update = ChatMessage::assistant("streamed ".repeat(60));
    let update_rate = |store: &dyn SessionBackend| {
        let start = Instant::now();
        for _ in 0..sizes.updates {
            assert!(store.update_last("s", &update).unwrap());
        }
        sizes.updates as f64 / start.elapsed().as_secs_f64()
    };
    let ours_update = update_rate(&ours_store);
    let sqlite_update = update_rate(&sqlite_store);
    let jsonl_update = update_rate(&jsonl_store);
    rows.push(Row {
        figure: "update_last, 1,000-message session (durable)".into(),
        ours: ops(ours_update),
        sqlite: format!("{} (FULL)", ops(sqlite_update)),
        jsonl: format!("{} (fsync)", ops(jsonl_update)),
        disk: "".into(),
        ratios: format!("{} our append", ratio(ours_update / ours_always)),
        goal: "same cost as an append",
    });
    let ours_load = time_per_call(sizes.loads, || assert_eq!(ours_store.load("s").len(), 1000));
    let sqlite_load = time_per_call(sizes.loads, || {
        assert_eq!(sqlite_store.load("s").len(), 1000)
    });
    let jsonl_load = time_per_call(sizes.loads, || {
        assert_eq!(jsonl_store.load("s").len(), 1000)
    });
    rows.push(Row {
        figure: "load, 1,000-message session".into(),
        ours: dur(ours_load),
        sqlite: dur(sqlite_load),
        jsonl: dur(jsonl_load),
        disk: "".into(),
        ratios: format!(
            "{} of SQLite's time",
            ratio(ours_load.as_secs_f64() / sqlite_load.as_secs_f64())
        ),
        goal: "≤ 0.10× SQLite's time",
    });
    // What returning 1,000 owned messages costs by itself, whatever the store: a copy of the
    // same messages, made and dropped as the caller of a load drops them.
    let loaded = ours_store.load("s");
    let copy = time_per_call(sizes.loads, || {
        let copy = std::hint::black_box(loaded.clone());
        assert_eq!(copy.len(), 1000);
    });
    rows.push(Row {
        figure: "the floor of a load: a copy of the 1,000 messages, made and dropped".into(),
        ours: dur(copy),
        sqlite: dur(sqlite_load),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} of SQLite's load; our load is {:.1}× it",
            ratio(copy.as_secs_f64() / sqlite_load.as_secs_f64()),
            ours_load.as_secs_f64() / copy.as_secs_f64()
        ),
        goal: "measured: no load returning owned messages costs less",
    });
    drop((ours_store, sqlite_store, jsonl_store));

    // Encryption at rest: the same appends and load, sealed (AES-256-GCM-SIV).
    let batch = gen.batch(sizes.buffered_appends);
    let mut rounds: [Vec<f64>; 2] = Default::default();
    for round in 0..3 {
        let tag = |name: &str| format!("{name}-{round}");
        rounds[0].push(appends_per_sec(
            &ours_encrypted(&fresh(&tag("e1")), Durability::Never),
            "k",
            &batch,
        ));
        rounds[1].push(appends_per_sec(
            &ours(&fresh(&tag("e2")), Durability::Never),
            "k",
            &batch,
        ));
        for name in ["e1", "e2"] {
            std::fs::remove_dir_all(root.join(tag(name))).ok();
        }
    }
    let [sealed_never, plain_never] = rounds.map(median_of);
    rows.push(Row {
        figure: "encrypted buffered append (Never)".into(),
        ours: format!("{} (plain {})", ops(sealed_never), ops(plain_never)),
        sqlite: "".into(),
        jsonl: format!("{} (no fsync)", ops(jsonl_plain)),
        disk: "".into(),
        ratios: format!(
            "{} our plain, {} JSONL",
            ratio(sealed_never / plain_never),
            ratio(sealed_never / jsonl_plain)
        ),
        goal: "measured: the cost of sealing",
    });
    let batch = gen.batch(sizes.durable_appends);
    let sealed_always = appends_per_sec(
        &ours_encrypted(&fresh("e3"), Durability::Always),
        "k",
        &batch,
    );
    rows.push(Row {
        figure: "encrypted durable append, 1 thread".into(),
        ours: ops(sealed_always),
        sqlite: format!("{} (FULL)", ops(sqlite_full)),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} our plain, {} SQLite",
            ratio(sealed_always / ours_always),
            ratio(sealed_always / sqlite_full)
        ),
        goal: "measured: the cost of sealing",
    });
    let sealed_store = ours_encrypted(&fresh("e4"), Durability::Never);
    for m in &session {
        sealed_store.append("s", m).unwrap();
    }
    let sealed_load = time_per_call(sizes.loads, || {
        assert_eq!(sealed_store.load("s").len(), 1000)
    });
    rows.push(Row {
        figure: "encrypted load, 1,000-message session".into(),
        ours: format!("{} (plain {})", dur(sealed_load), dur(ours_load)),
        sqlite: dur(sqlite_load),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} our plain, {} of SQLite's time",
            ratio(sealed_load.as_secs_f64() / ours_load.as_secs_f64()),
            ratio(sealed_load.as_secs_f64() / sqlite_load.as_secs_f64())
        ),
        goal: "measured: the cost of opening",
    });
    drop(sealed_store);

    // load_tail(50) against a full load, 10,000-message session.
    let long = ours(&fresh("l1"), Durability::Never);
    let sqlite_long = SqliteStore::open(&fresh("l2"), false).unwrap();
    let batch = gen.batch(sizes.tail_session);
    for m in &batch {
        long.append("long", m).unwrap();
    }
    sqlite_long.bulk_append("long", &batch).unwrap();
    drop(batch);
    let tail = time_per_call(sizes.loads * 10, || {
        assert_eq!(long.load_tail("long", 50).len(), 50);
    });
    let full = time_per_call(sizes.loads.min(10), || {
        assert_eq!(long.load("long").len(), sizes.tail_session);
    });
    rows.push(Row {
        figure: "load_tail(50), 10,000-message session".into(),
        ours: format!("{} (full load {})", dur(tail), dur(full)),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} of a full load",
            ratio(tail.as_secs_f64() / full.as_secs_f64())
        ),
        goal: "≤ 0.01× a full load",
    });
    let sqlite_full = time_per_call(sizes.loads.min(10), || {
        assert_eq!(sqlite_long.load("long").len(), sizes.tail_session);
    });
    // The floor, as for the load of 1,000: a copy of the same messages, made and dropped.
    let loaded = long.load("long");
    let copy = time_per_call(sizes.loads.min(10), || {
        let copy = std::hint::black_box(loaded.clone());
        assert_eq!(copy.len(), sizes.tail_session);
    });
    rows.push(Row {
        figure: "full load, 10,000-message session".into(),
        ours: dur(full),
        sqlite: dur(sqlite_full),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} of SQLite's time; its floor, a copy of the same messages made and dropped: {} ({} of SQLite's)",
            ratio(full.as_secs_f64() / sqlite_full.as_secs_f64()),
            dur(copy),
            ratio(copy.as_secs_f64() / sqlite_full.as_secs_f64())
        ),
        goal: "≤ 0.5× SQLite's time",
    });
    drop((long, sqlite_long, loaded));

    // Open + list in a new process; open's replay speed; search; bytes on disk.
    let (ours_dir, sqlite_dir, jsonl_dir) = (fresh("o1"), fresh("o2"), fresh("o3"));
    let mut payload = 0u64;
    {
        let ours_store = ours(&ours_dir, Durability::Never);
        let sqlite_store = SqliteStore::open(&sqlite_dir, false).unwrap();
        let jsonl_store = JsonlStore::open(&jsonl_dir, false);
        for s in 0..sizes.list_sessions {
            let key = format!("telegram_{s}");
            let messages = gen.batch(sizes.list_messages);
            payload += payload_bytes(&messages);
            for m in &messages {
                ours_store.append(&key, m).unwrap();
                jsonl_store.append(&key, m).unwrap();
            }
            sqlite_store.bulk_append(&key, &messages).unwrap();
        }
        ours_store.sync().unwrap();
    }
    let total_messages = sizes.list_sessions * sizes.list_messages;
    let median = |args: &[&str]| median_of((0..3).map(|_| child(args)).collect());
    // The store was closed cleanly: open reads the checkpoint.
    let label = format!("{} sessions × {}", sizes.list_sessions, sizes.list_messages);
    rows.extend(open_list_rows(
        &label,
        &ours_dir,
        &sqlite_dir,
        total_messages,
        "≤ 1.0× SQLite's time (stretch 0.5×)",
    ));
    let jsonl_open = median(&["open-list-jsonl", jsonl_dir.to_str().unwrap()]);
    rows.push(Row {
        figure: "open + list_sessions_with_metadata, JSONL, new process".into(),
        ours: "".into(),
        sqlite: "".into(),
        jsonl: dur(Duration::from_secs_f64(jsonl_open)),
        disk: "".into(),
        ratios: label.clone(),
        goal: "measured",
    });
    // Many small sessions, as a gateway keeps: written under `Never`, closed (the close
    // timed: it syncs what is dirty, then writes the checkpoint), opened and listed.
    {
        let (ours_many, sqlite_many) = (fresh("q1"), fresh("q2"));
        let sessions = sizes.page_sessions;
        let per_session = 5;
        let store = ours(&ours_many, Durability::Never);
        let sqlite_store = SqliteStore::open(&sqlite_many, false).unwrap();
        for s in 0..sessions {
            let key = format!("sender_{s}");
            let messages = gen.batch(per_session);
            for m in &messages {
                store.append(&key, m).unwrap();
            }
            sqlite_store.bulk_append(&key, &messages).unwrap();
        }
        drop(sqlite_store);
        let start = Instant::now();
        store.close().unwrap();
        let closed = start.elapsed();
        rows.push(Row {
            figure: format!("close() of {sessions} sessions written under Never"),
            ours: dur(closed),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!("{per_session} messages each"),
            goal: "under 1 s",
        });
        let label = format!("{sessions} sessions × {per_session}");
        rows.extend(open_list_rows(
            &label,
            &ours_many,
            &sqlite_many,
            sessions * per_session,
            "≤ 1.0× SQLite's time",
        ));
        std::fs::remove_dir_all(&ours_many).ok();
        std::fs::remove_dir_all(&sqlite_many).ok();
    }
    // Many sessions: list_page's cost follows the page, not the store; open + list at scale.
    {
        let dir = fresh("p1");
        let store = ours(&dir, Durability::Never);
        let message = ChatMessage::user("hello");
        for s in 0..sizes.page_sessions {
            let key = format!("user_{s}");
            store.append(&key, &message).unwrap();
            let alias = format!("agent_{}", s % 10);
            store.set_session_agent_alias(&key, &alias).unwrap();
        }
        // The first page builds the activity index (once per open store): timed apart.
        let start = Instant::now();
        store.list_page(&ListQuery::default()).unwrap();
        let build = start.elapsed();
        let time = |query: &ListQuery| {
            let runs = 50;
            let start = Instant::now();
            for _ in 0..runs {
                assert!(!store.list_page(query).unwrap().sessions.is_empty());
            }
            start.elapsed() / runs
        };
        let first = time(&ListQuery {
            limit: 50,
            ..ListQuery::default()
        });
        let filtered = time(&ListQuery {
            limit: 50,
            agent_alias: Some("agent_3".into()),
            ..ListQuery::default()
        });
        let start = Instant::now();
        let all = store.list_sessions_with_metadata().len();
        let full = start.elapsed();
        rows.push(checkpoint_row(&store, &dir, sizes.page_sessions));
        drop(store);
        let open_list = median_of(
            (0..3)
                .map(|_| child(&["open-list-ours", dir.to_str().unwrap()]))
                .collect(),
        );
        rows.push(Row {
            figure: "list_page(50): first page / alias filter (1 in 10)".into(),
            ours: format!("{} / {}", dur(first), dur(filtered)),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!(
                "{} / {} of listing all {all} ({}); the first call builds the index: {}",
                ratio(first.as_secs_f64() / full.as_secs_f64()),
                ratio(filtered.as_secs_f64() / full.as_secs_f64()),
                dur(full),
                dur(build)
            ),
            goal: "cost of the page, not of the sessions",
        });
        rows.push(Row {
            figure: "open + list_sessions_with_metadata at scale, new process".into(),
            ours: format!("{} (checkpoint)", dur(Duration::from_secs_f64(open_list))),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!("{} sessions", sizes.page_sessions),
            goal: "opens and lists (no descriptor or memory exhaustion)",
        });
    }
    rows.push(crash_open_row(&fresh("c1"), &sizes));
    // As after a crash: no checkpoint, every segment replayed.
    let segment_bytes = folder_bytes(&ours_dir);
    let mut replays = Vec::new();
    for _ in 0..3 {
        std::fs::remove_file(ours_dir.join("CHECKPOINT")).ok();
        replays.push(child(&["open-list-ours", ours_dir.to_str().unwrap()]));
    }
    let ours_replay = median_of(replays);
    rows.push(Row {
        figure: "open, projection rebuilt from segments (no checkpoint)".into(),
        ours: format!(
            "{:.2} GB/s ({})",
            segment_bytes as f64 / ours_replay / 1e9,
            dur(Duration::from_secs_f64(ours_replay))
        ),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} MB of segments", segment_bytes / 1_000_000),
        goal: "≥ 1 GB/s",
    });
    {
        let ours_store = ours(&ours_dir, Durability::Never);
        let sqlite_store = SqliteStore::open(&sqlite_dir, false).unwrap();
        let jsonl_store = JsonlStore::open(&jsonl_dir, false);
        // The first query builds the index from nothing (it catches up with every session);
        // later ones read only what changed since.
        let start = Instant::now();
        ours_store
            .search_messages(&MessageQuery::new(RARE))
            .unwrap();
        let build = start.elapsed();
        rows.push(Row {
            figure: "search index built by the first query (from nothing)".into(),
            ours: dur(build),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!(
                "{:.0} MB/s of payload, {total_messages} messages",
                payload as f64 / build.as_secs_f64() / 1e6
            ),
            goal: "measured (FTS5 is kept up by triggers on every write)",
        });
        let timed = |f: &dyn Fn() -> usize| {
            median_of(
                (0..5)
                    .map(|_| {
                        let start = Instant::now();
                        std::hint::black_box(f());
                        start.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let session_search = |store: &dyn SessionBackend, word: &str| {
            let query = SessionQuery {
                keyword: Some(word.into()),
                limit: Some(50),
            };
            timed(&|| store.search(&query).len())
        };
        let ours_rare = session_search(&ours_store, RARE);
        let ours_common = session_search(&ours_store, COMMON);
        let sqlite_rare = session_search(&sqlite_store, RARE);
        let sqlite_common = session_search(&sqlite_store, COMMON);
        let secs = Duration::from_secs_f64;
        rows.push(Row {
            figure: "search (the trait's), rare / common word, limit 50".into(),
            ours: format!("{} / {}", dur(secs(ours_rare)), dur(secs(ours_common))),
            sqlite: format!(
                "{} / {} (FTS5)",
                dur(secs(sqlite_rare)),
                dur(secs(sqlite_common))
            ),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!(
                "{} / {} SQLite",
                ratio(ours_rare / sqlite_rare),
                ratio(ours_common / sqlite_common)
            ),
            goal: "≤ 0.5× / ≤ 0.3× SQLite FTS5's time",
        });
        let message_search = |word: &str| {
            timed(&|| {
                ours_store
                    .search_messages(&MessageQuery::new(word))
                    .unwrap()
                    .len()
            })
        };
        let ranked = |word: &str| timed(&|| sqlite_store.search_ranked(word, 20).len());
        let (m_rare, m_common) = (message_search(RARE), message_search(COMMON));
        let (f_rare, f_common) = (ranked(RARE), ranked(COMMON));
        rows.push(Row {
            figure: "search_messages, rare / common word, limit 20 (BM25, snippets)".into(),
            ours: format!("{} / {}", dur(secs(m_rare)), dur(secs(m_common))),
            sqlite: format!(
                "{} / {} (FTS5 ORDER BY rank)",
                dur(secs(f_rare)),
                dur(secs(f_common))
            ),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!(
                "{} / {} SQLite",
                ratio(m_rare / f_rare),
                ratio(m_common / f_common)
            ),
            goal: "≤ 1.0× FTS5's time",
        });
        // Saved at close; its bytes against the messages' payload.
        drop(ours_store);
        let index_bytes = folder_bytes(&ours_dir.join("index"));
        rows.push(Row {
            figure: "search index bytes on disk / payload".into(),
            ours: format!("{:.3}", index_bytes as f64 / payload as f64),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: format!("{} MB", index_bytes / 1_000_000),
            goal: "≤ 0.5",
        });
        let ours_store = ours(&ours_dir, Durability::Never);
        drop(jsonl_store);
        for key in ours_store.list_sessions() {
            ours_store.compact_session(&key).unwrap();
        }
    }
    // The search index is counted in its own row.
    let ours_bytes = folder_bytes(&ours_dir) - folder_bytes(&ours_dir.join("index"));
    let sqlite_bytes = folder_bytes(&sqlite_dir);
    rows.push(Row {
        figure: "bytes on disk / payload, after compaction".into(),
        ours: format!("{:.3}", ours_bytes as f64 / payload as f64),
        sqlite: format!("{:.3}", sqlite_bytes as f64 / payload as f64),
        jsonl: format!("{:.3}", folder_bytes(&jsonl_dir) as f64 / payload as f64),
        disk: "".into(),
        ratios: format!("{total_messages} messages"),
        goal: "≤ 1.15",
    });

    // A crash that loses what the index indexed since it was saved: a child writes
    // `catch_up` more messages after the saved index, then exits without closing.
    {
        // The index first catches up with the compactions above and is saved at close.
        let ours_store = ours(&ours_dir, Durability::Never);
        ours_store
            .search_messages(&MessageQuery::new(RARE))
            .unwrap();
        drop(ours_store);
        child(&[
            "write-then-exit",
            ours_dir.to_str().unwrap(),
            &sizes.index_catch_up.to_string(),
        ]);
        let ours_store = ours(&ours_dir, Durability::Never);
        let start = Instant::now();
        ours_store
            .search_messages(&MessageQuery::new(RARE))
            .unwrap();
        let catch_up = start.elapsed();
        rows.push(Row {
            figure: format!(
                "search after a crash that lost the index's last {} events",
                sizes.index_catch_up
            ),
            ours: dur(catch_up),
            sqlite: "".into(),
            jsonl: "".into(),
            disk: "".into(),
            ratios: "the first query catches up".into(),
            goal: "report the time",
        });
    }

    // Memory of the projection.
    let mem_dir = fresh("m1");
    {
        let store = ours(&mem_dir, Durability::Never);
        let small = ChatMessage::user("m");
        for i in 0..sizes.memory_messages {
            store.append(&format!("s{}", i % 1000), &small).unwrap();
        }
        store.sync().unwrap();
    }
    let per_message = child(&[
        "memory-ours",
        mem_dir.to_str().unwrap(),
        &sizes.memory_messages.to_string(),
    ]);
    rows.push(Row {
        figure: "memory of the projection per message, every session read".into(),
        ours: format!("{per_message:.1} B"),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} messages in 1,000 sessions", sizes.memory_messages),
        goal: "≤ 32 B per message",
    });

    rows.extend(replication_rows(&fresh, &mut gen, &sizes, smoke));
    print_rows(&rows, smoke);
    std::fs::remove_dir_all(&root).ok();
}

/// The replication rows, at the sizes of the run.
fn replication_rows(
    fresh: &dyn Fn(&str) -> PathBuf,
    gen: &mut Messages,
    sizes: &Sizes,
    smoke: bool,
) -> Vec<Row> {
    let batch = gen.batch(sizes.durable_appends);
    let restore = gen.batch(sizes.buffered_appends);
    replication::rows(fresh, &batch, if smoke { 1 } else { 10 }, &restore)
}

fn print_rows(rows: &[Row], smoke: bool) {
    println!(
        "| figure | sessionlog | SQLite | JSONL | disk | ratio | goal |\n\
         |---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.figure, r.ours, r.sqlite, r.jsonl, r.disk, r.ratios, r.goal
        );
    }
    if smoke {
        println!("\n(smoke sizes: figures are not meaningful)");
    }
    let _ = std::io::stdout().flush();
}
