//! Every segment of a small store, truncated at every byte offset or with any one byte
//! flipped: open never panics, never returns a message that was not written (each session is
//! at most a prefix of what it once held), and reports what it found. A flipped byte is always
//! reported, wherever it is: no byte of a segment is left unchecked.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{sweep_options, SIM_DIR};
use sessionlog::testing::{run_op, Model, Op, SimFs, KEYS};
use sessionlog::{Durability, Finding, LogStore, RecoveryReport};

/// Builds the store; returns its files and every state the model went through.
fn build() -> (Vec<(PathBuf, Vec<u8>)>, Vec<Model>) {
    let fs = SimFs::new();
    let store = LogStore::open_with_fs(
        SIM_DIR,
        sweep_options(Durability::Never),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let mut model = Model::default();
    let mut history = vec![model.clone()];
    let ops = [
        Op::Append(0, "alpha".into()),
        Op::Append(0, "beta".into()),
        Op::Name(0, "named".into()),
        Op::Append(1, "gamma".into()),
        Op::UpdateLast(1, "gamma updated".into()),
        Op::Append(1, "x".repeat(1500)),
        Op::Append(1, "y".repeat(1500)),
        Op::Append(1, "z".repeat(1500)),
        Op::Append(2, "delta".into()),
        Op::Append(2, "epsilon".into()),
        Op::Compact(2),
        Op::Append(2, "zeta".into()),
        Op::State(3, true),
    ];
    for op in &ops {
        run_op(&store, op).unwrap();
        model.apply(op);
        history.push(model.clone());
    }
    drop(store);
    let files = fs
        .files()
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    (files, history)
}

/// Opens the store `files` make up and checks what it holds; returns its recovery report.
fn check(files: &[(PathBuf, Vec<u8>)], history: &[Model], context: &str) -> RecoveryReport {
    let fs = SimFs::new();
    for (path, bytes) in files {
        fs.put_file(path, bytes);
    }
    let store = LogStore::open_with_fs(SIM_DIR, sweep_options(Durability::Never), Arc::new(fs))
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
    let seen = Model::observe(&store);
    let clean = store.recovery_report().is_clean();
    for (key, session) in &seen.sessions {
        assert!(
            KEYS.contains(&key.as_str()),
            "{context}: invented session {key:?}"
        );
        let once_held = history.iter().any(|m| {
            m.sessions.get(key).is_some_and(|s| {
                // Unreported, the session must be exactly as it once was (a cut at a record
                // boundary of a newest segment is what losing the last writes looks like);
                // reported, at least no message may be one it never held.
                if clean {
                    s == session
                } else {
                    s.messages.starts_with(&session.messages)
                }
            })
        });
        assert!(
            once_held,
            "{context} (report clean: {clean}): {key:?} holds {session:?}"
        );
    }
    // Only one file was touched, so at most one session may differ from the final state.
    let last = history.last().unwrap();
    let differing = KEYS
        .iter()
        .filter(|k| seen.sessions.get(**k) != last.sessions.get(**k))
        .count();
    assert!(differing <= 1, "{context}: {differing} sessions changed");
    store.recovery_report().clone()
}

/// The part of a segment that holds byte `at`: its header, or one of its records, as
/// `start..end`. Parsed with the layout docs/FORMAT.md gives (header `39 + key_len` bytes,
/// `key_len` a u16 at offset 33; each record `60 + len` bytes, `len` a u32 at its start), not
/// with the crate's code.
fn part_holding(segment: &[u8], at: usize) -> (usize, usize) {
    let le_u16 = |o: usize| usize::from(u16::from_le_bytes([segment[o], segment[o + 1]]));
    let le_u32 = |o: usize| {
        usize::try_from(u32::from_le_bytes(segment[o..o + 4].try_into().unwrap())).unwrap()
    };
    let mut start = 0;
    let mut end = 39 + le_u16(33);
    while at >= end {
        start = end;
        end = start + 60 + le_u32(start);
    }
    (start, end)
}

/// True when `files[i]` is its session's newest segment (`{id}-{number}.seg`, both
/// zero-padded, so names sort by number).
fn is_newest(files: &[(PathBuf, Vec<u8>)], i: usize) -> bool {
    let session = |path: &Path| {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        name.split('-').next().unwrap().to_owned()
    };
    let path = &files[i].0;
    files
        .iter()
        .all(|(other, _)| session(other) != session(path) || other <= path)
}

#[test]
fn every_truncation_of_every_segment_opens_and_invents_nothing() {
    let (files, history) = build();
    assert!(files.len() >= 4, "{files:?}");
    for (i, (path, bytes)) in files.iter().enumerate() {
        for cut in 0..bytes.len() {
            let mut damaged = files.clone();
            damaged[i].1.truncate(cut);
            check(
                &damaged,
                &history,
                &format!("{} cut at {cut}", path.display()),
            );
        }
    }
}

#[test]
fn every_flipped_byte_of_every_segment_is_reported_and_invents_nothing() {
    let (files, history) = build();
    let mut torn_tails = 0;
    for (i, (path, bytes)) in files.iter().enumerate() {
        // The headers and records the layout gives cover the whole segment: no byte lies
        // outside them (there is no padding), so every byte below is one of theirs.
        assert_eq!(
            part_holding(bytes, bytes.len() - 1).1,
            bytes.len(),
            "{path:?}"
        );
        for at in 0..bytes.len() {
            let mut damaged = files.clone();
            damaged[i].1[at] ^= 0x10;
            let context = format!("{} flipped at {at}", path.display());
            let report = check(&damaged, &history, &context);
            // Checksums cover every byte of a header and of a record, so every flip is
            // reported, exactly once, at the start of the part holding it: as a torn tail
            // when that is the last record of the session's newest segment (a flip there looks
            // like a crash mid-write: docs/FORMAT.md, recovery rule 6), otherwise as damage.
            let (start, _) = part_holding(bytes, at);
            let is_last_record = start > 0 && part_holding(bytes, bytes.len() - 1).0 == start;
            let torn = is_last_record && is_newest(&files, i);
            let reported = match report.findings.as_slice() {
                [Finding::TornTail {
                    path: found,
                    offset,
                    bytes: cut,
                    ..
                }] => {
                    torn && found == path
                        && *offset == start as u64
                        && *cut == (bytes.len() - start) as u64
                }
                [Finding::Damaged {
                    path: found,
                    offset,
                    ..
                }] => !torn && found == path && *offset == start as u64,
                _ => false,
            };
            assert!(
                reported,
                "{context}: expected {} at offset {start}, found {report:?}",
                if torn { "a torn tail" } else { "damage" },
            );
            torn_tails += usize::from(torn);
        }
    }
    assert!(
        torn_tails > 0,
        "some flips hit a newest segment's last record"
    );
}
