//! Every input in the fuzz seed corpus (`fuzz/corpus/<target>/`) is replayed through the same
//! code as its fuzz target, so CI exercises every target on every run without a fuzzer.
//! `cargo test --test fuzz_corpus -- --ignored` regenerates the seeds built from real stores
//! (those named `v1_*` and `v2_*` were written by older format versions and are kept as they
//! are).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sessionlog::record::decode_frame;
use sessionlog::testing::{
    fuzz_checkpoint, fuzz_checkpoint_delta, fuzz_decode_record, fuzz_open_folder, fuzz_ops,
    fuzz_ops_encrypted, run_op, Op, SimFs,
};
use sessionlog::{LogStore, Options};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 4, "the {target} seed corpus is missing");
    out
}

/// The body of the `decode_record` fuzz target.

#[test]
fn decode_record_corpus_replays_cleanly() {
    let seeds = corpus("decode_record");
    let decoded = seeds
        .iter()
        .filter(|(_, b)| decode_frame(b).is_ok())
        .count();
    for (_, bytes) in &seeds {
        fuzz_decode_record(bytes);
    }
    assert!(decoded >= 3, "the seeds include well-formed records");
}

#[test]
fn open_folder_corpus_replays_cleanly() {
    for (path, bytes) in corpus("open_folder") {
        let result = std::panic::catch_unwind(|| fuzz_open_folder(&bytes));
        assert!(result.is_ok(), "{}", path.display());
    }
}

#[test]
fn checkpoint_corpus_replays_cleanly() {
    for (path, bytes) in corpus("checkpoint") {
        let result = std::panic::catch_unwind(|| fuzz_checkpoint(&bytes));
        assert!(result.is_ok(), "{}", path.display());
    }
}

#[test]
fn checkpoint_delta_corpus_replays_cleanly() {
    for (path, bytes) in corpus("checkpoint_delta") {
        let result = std::panic::catch_unwind(|| fuzz_checkpoint_delta(&bytes));
        assert!(result.is_ok(), "{}", path.display());
    }
}

#[test]
fn ops_model_corpus_replays_cleanly() {
    for (path, bytes) in corpus("ops_model") {
        let result = std::panic::catch_unwind(|| fuzz_ops(&bytes));
        assert!(result.is_ok(), "{}", path.display());
    }
}

/// The `ops_model_encrypted` target shares the `ops_model` seeds.
#[test]
fn ops_model_corpus_replays_cleanly_encrypted() {
    for (path, bytes) in corpus("ops_model") {
        let result = std::panic::catch_unwind(|| fuzz_ops_encrypted(&bytes));
        assert!(result.is_ok(), "{}", path.display());
    }
}

/// Lays segment files and the anchor log out in the `open_folder` input format.
fn folder_input(files: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "ANCHORS" {
            out.push(255);
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
            continue;
        }
        let Some((id, rest)) = name.split_once('-') else {
            continue;
        };
        let Ok(id) = u64::from_str_radix(id, 16) else {
            continue;
        };
        let Ok(segment) = u32::from_str_radix(&rest[..8], 16) else {
            continue;
        };
        if !name.ends_with(".seg") || id >= 63 || segment == 0 || segment > 4 {
            continue;
        }
        out.push((id * 4 + u64::from(segment - 1)) as u8);
        let bytes = &bytes[..bytes.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

#[test]
#[ignore = "regenerates fuzz/corpus seeds from real stores; run with --ignored"]
fn regenerate_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let workloads: Vec<(&str, Vec<Op>)> = vec![
        (
            "appends",
            (0..6).map(|i| Op::Append(i % 2, format!("m{i}"))).collect(),
        ),
        (
            "updates",
            vec![
                Op::Append(0, "q".into()),
                Op::Append(0, String::new()),
                Op::UpdateLast(0, "partial".into()),
                Op::UpdateLast(0, "partial answer".into()),
                Op::Name(0, "n".into()),
                Op::State(0, true),
            ],
        ),
        (
            "compacted",
            vec![
                Op::Append(1, "a".into()),
                Op::Append(1, "b".into()),
                Op::RemoveLast(1),
                Op::Context(1, Some("c".into()), Some("s".into())),
                Op::Compact(1),
                Op::Append(1, "after".into()),
            ],
        ),
        (
            "rolled",
            (0..12)
                .map(|i| Op::Append(2, format!("{i} {}", "r".repeat(900))))
                .collect(),
        ),
        (
            "deleted",
            vec![
                Op::Append(3, "x".into()),
                Op::Delete(3),
                Op::Alias(4, "al".into()),
            ],
        ),
        (
            "once_archived",
            vec![
                Op::AppendOnce(0, "a".into(), "m-1".into()),
                Op::AppendOnce(0, "b".into(), "m-2".into()),
                Op::Archive(0),
                Op::Compact(0),
                Op::AppendOnce(0, "c".into(), "m-3".into()),
                Op::Archive(0),
            ],
        ),
    ];
    let options = Options {
        segment_bytes_max: 4096,
        auto_compact: false,
        ..Options::default()
    };
    for (name, ops) in &workloads {
        let fs = SimFs::new();
        let store =
            LogStore::open_with_fs("/store", options.clone(), Arc::new(fs.clone())).unwrap();
        for op in ops {
            run_op(&store, op).unwrap();
        }
        drop(store);
        let files: Vec<_> = fs
            .files()
            .into_iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg") || p.ends_with("ANCHORS"))
            .collect();
        std::fs::write(root.join("open_folder").join(name), folder_input(&files)).unwrap();
        // decode_record seeds: the records of the workload's first segment, after its header
        // (key length at offset 33, records at 39 + key length).
        if let Some((_, bytes)) = files.first() {
            let key_len = usize::from(u16::from_le_bytes([bytes[33], bytes[34]]));
            std::fs::write(
                root.join("decode_record").join(name),
                &bytes[39 + key_len..],
            )
            .unwrap();
        }
    }
    // ops_model seeds: two bytes per op (see sessionlog::testing::ops_from_bytes).
    let ops_seeds: [(&str, &[u8]); 6] = [
        (
            "once_archive",
            &[20, 0, 20, 0, 22, 0, 14, 0, 20, 0, 0, 0, 22, 5, 13, 0, 23, 0],
        ),
        ("append_update", &[0, 1, 0, 6, 4, 11, 5, 16]),
        ("remove_clear", &[0, 0, 1, 5, 6, 0, 7, 5, 6, 5]),
        ("delete_recreate", &[0, 2, 9, 7, 8, 2, 0, 2, 14, 0]),
        ("metadata", &[9, 3, 10, 8, 11, 3, 12, 4, 12, 9, 15, 0]),
        (
            "compact_power",
            &[0, 4, 0, 9, 4, 14, 13, 4, 15, 1, 0, 4, 14, 2],
        ),
    ];
    for (name, bytes) in ops_seeds {
        std::fs::write(root.join("ops_model").join(name), bytes).unwrap();
    }
}
