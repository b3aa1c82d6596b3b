//! Every segment of a small store, truncated at every byte offset or with any one byte
//! flipped: open never panics, never returns a message that was not written (each session is
//! at most a prefix of what it once held), and reports what it found.

use std::path::PathBuf;
use std::sync::Arc;

use sessionlog::testing::{run_op, Model, Op, SimFs, KEYS};
use sessionlog::{LogStore, Options};

const DIR: &str = "/store";

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        auto_compact: false,
        durability: sessionlog::Durability::Never,
        ..Options::default()
    }
}

/// Builds the store; returns its files and every state the model went through.
fn build() -> (Vec<(PathBuf, Vec<u8>)>, Vec<Model>) {
    let fs = SimFs::new();
    let store = LogStore::open_with_fs(DIR, options(), Arc::new(fs.clone())).unwrap();
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

fn check(files: &[(PathBuf, Vec<u8>)], history: &[Model], context: &str) {
    let fs = SimFs::new();
    for (path, bytes) in files {
        fs.put_file(path, bytes);
    }
    let store = LogStore::open_with_fs(DIR, options(), Arc::new(fs))
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
fn every_flipped_byte_of_every_segment_opens_and_invents_nothing() {
    let (files, history) = build();
    for (i, (path, bytes)) in files.iter().enumerate() {
        for at in 0..bytes.len() {
            let mut damaged = files.clone();
            damaged[i].1[at] ^= 0x10;
            check(
                &damaged,
                &history,
                &format!("{} flipped at {at}", path.display()),
            );
        }
    }
}
