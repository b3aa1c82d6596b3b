//! The replication rows (feature `replication`, on in the harness): durable append with
//! shipping on against off, the lag behind a writer at 1,000 messages a second, and restore
//! speed. The bucket is a local folder (`file://`), so the figures are the store's own cost,
//! not a network's.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionlog::{
    ChatMessage, Durability, LogStore, Options, Replication, RestorePoint, SessionBackend,
};

use super::{appends_per_sec, dur, folder_bytes, median_of, ops, ratio, Row};

fn shipping(dir: &Path, bucket: &Path, durability: Durability, every: Duration) -> LogStore {
    std::fs::create_dir_all(bucket).unwrap();
    let url = format!(
        "file://{}/prefix",
        std::fs::canonicalize(bucket).unwrap().display()
    );
    let options = Options {
        replicate_to: Some(Replication::to(&url).unwrap().every(every)),
        ..Options::with_durability(durability)
    };
    LogStore::open_with(dir, options).unwrap()
}

/// The rows; `fresh(name)` is an empty folder under the harness's root.
pub(super) fn rows(
    fresh: &dyn Fn(&str) -> std::path::PathBuf,
    batch: &[ChatMessage],
    lag_secs: u64,
    restore_messages: &[ChatMessage],
) -> Vec<Row> {
    let mut rows = Vec::new();
    // Durable appends with shipping every second and without, taking turns.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let store = shipping(
            &fresh(&format!("r-on-{round}")),
            &fresh(&format!("r-bucket-{round}")),
            Durability::Always,
            Duration::from_secs(1),
        );
        on.push(appends_per_sec(&store, "k", batch));
        store.close().unwrap();
        let plain = LogStore::open_with(
            fresh(&format!("r-off-{round}")),
            Options::with_durability(Durability::Always),
        )
        .unwrap();
        off.push(appends_per_sec(&plain, "k", batch));
    }
    let (on, off) = (median_of(on), median_of(off));
    rows.push(Row {
        figure: "durable append, 1 thread, shipping to a folder bucket every second".into(),
        ours: ops(on),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{} our figure without ({})", ratio(on / off), ops(off)),
        goal: "≥ 0.95× without replication",
    });

    // The lag: a writer at 1,000 messages a second (durable), shipping every second; the
    // records written and not yet in the bucket, sampled every 10 ms.
    let store = Arc::new(shipping(
        &fresh("r-lag"),
        &fresh("r-lag-bucket"),
        Durability::Always,
        Duration::from_secs(1),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        let text = "a message of an agent's conversation, long enough to be typical. ".repeat(15);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("s{}", i % 100);
                store
                    .append(&key, &ChatMessage::user(text.as_str()))
                    .unwrap();
                i += 1;
                let due = start + Duration::from_millis(i);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            i
        })
    };
    let mut behind = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(lag_secs);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let status = store.replication_status().unwrap();
        behind.push(store.last_seq().saturating_sub(status.shipped_seq) as f64);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let rate = written as f64 / lag_secs as f64;
    behind.sort_by(f64::total_cmp);
    let median = behind[behind.len() / 2];
    let max = behind.last().copied().unwrap_or(0.0);
    let status = store.replication_status().unwrap();
    rows.push(Row {
        figure: format!(
            "replication lag behind a writer at {rate:.0} messages/s (Always), interval 1 s"
        ),
        ours: format!("median {median:.0}, most {max:.0} records behind"),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!(
            "{} / {} at that rate; {} batches, last error {:?}",
            dur(Duration::from_secs_f64(median / rate.max(1.0))),
            dur(Duration::from_secs_f64(max / rate.max(1.0))),
            status.batches,
            status.last_error
        ),
        goal: "measured (the loss window if the disk dies)",
    });
    drop(store);

    // Restore speed: a store of `restore_messages` over 100 sessions, shipped, restored whole
    // (and verified, as a restore always is).
    let source = fresh("r-source");
    let bucket = fresh("r-restore-bucket");
    let store = shipping(
        &source,
        &bucket,
        Durability::Never,
        Duration::from_secs(3600),
    );
    for (i, message) in restore_messages.iter().enumerate() {
        store.append(&format!("s{}", i % 100), message).unwrap();
    }
    store.ship_now().unwrap();
    store.close().unwrap();
    let bytes = folder_bytes(&bucket);
    let url = format!(
        "file://{}/prefix",
        std::fs::canonicalize(&bucket).unwrap().display()
    );
    let target = fresh("r-restored");
    let started = Instant::now();
    let report = sessionlog::restore(
        &Replication::to(&url).unwrap(),
        &target,
        RestorePoint::Latest,
        &Options::default(),
        false,
    )
    .unwrap();
    let took = started.elapsed();
    assert_eq!(report.sessions, 100.min(restore_messages.len()));
    rows.push(Row {
        figure: format!(
            "restore of a {} MB bucket ({} messages), verified",
            bytes / 1_000_000,
            restore_messages.len()
        ),
        ours: dur(took),
        sqlite: "".into(),
        jsonl: "".into(),
        disk: "".into(),
        ratios: format!("{:.0} MB/s", bytes as f64 / 1e6 / took.as_secs_f64()),
        goal: "measured: restore speed",
    });
    rows
}
