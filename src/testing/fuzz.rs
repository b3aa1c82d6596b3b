//! The drivers of the property test and the fuzz targets: workloads checked against the
//! [`Model`], record decoding, and opening a folder of arbitrary bytes.

use std::path::Path;
use std::sync::Arc;

use crate::fs::FileSystem;
use crate::{ChatMessage, LogStore, SessionBackend};

use super::model::Model;
use super::op::{ops_from_bytes, run_op, Op};
use super::sim_fs::SimFs;

/// The folder the drivers below use inside their [`SimFs`].
pub const FUZZ_DIR: &str = "/store";

fn fuzz_options() -> crate::Options {
    crate::Options {
        segment_bytes_max: 4096,
        compaction_dead_bytes_min: 512,
        // A few sessions' message locations at most: nearly every read or write of a session
        // read back from the checkpoint drops another's again.
        memory_budget: Some(256),
        ..crate::Options::default()
    }
}

/// Runs a workload against a store on a [`SimFs`] (with `Durability::Always`) and against the
/// [`Model`], and panics where they disagree: after every call, every reopen and every power
/// loss (every other one reordering what was not synced: [`SimFs::crash_reordering`]). The property test and the `ops_model` fuzz target drive it.
pub fn check_ops(ops: &[Op]) {
    check_ops_with(ops, fuzz_options());
}

/// [`check_ops`] on an encrypted store ([`crate::Options::encryption`]).
pub fn check_ops_encrypted(ops: &[Op]) {
    let options = crate::Options {
        encryption: Some(crate::EncryptionKey::from_bytes([0x5a; 32])),
        ..fuzz_options()
    };
    check_ops_with(ops, options);
}

fn check_ops_with(ops: &[Op], options: crate::Options) {
    let fs = SimFs::new();
    let open = || {
        LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()))
            .expect("the store opens")
    };
    let mut store = open();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Reopen => {
                drop(store);
                store = open();
            }
            Op::PowerLoss => {
                drop(store);
                lose_power(&fs, i);
                store = open();
                assert!(
                    !store.recovery_report().has_damage(),
                    "a power loss is not damage: {:?}",
                    store.recovery_report()
                );
            }
            Op::Crash => {
                // The power goes with the store open: its drop can write nothing more.
                fs.cut_power_after(0);
                drop(store);
                lose_power(&fs, i);
                store = open();
                let report = store.recovery_report();
                assert!(!report.has_damage(), "a crash is not damage: {report:?}");
                // What the checkpoint and the sessions replayed after it give is what a
                // replay of every segment (a read-only open's) gives.
                let replayed = LogStore::read_only_mode(
                    Path::new(FUZZ_DIR),
                    options.clone(),
                    Arc::new(fs.clone()),
                )
                .expect("a reader opens");
                assert_eq!(
                    Model::observe(&store),
                    Model::observe(&replayed),
                    "after op {i}: the open from a checkpoint taken while the store ran, \
                     against a full replay"
                );
            }
            Op::Search(query) => {
                super::assert_searches(&store, &model, query, &format!("after op {i}"));
                if i % 2 == 0 {
                    // Cold: the index as its files hold it (saved at the close), loaded again.
                    drop(store);
                    store = open();
                    super::assert_searches(&store, &model, query, &format!("cold, after op {i}"));
                }
            }
            _ => {
                // A reader beside the writer: opened before a compaction, it reads sessions
                // whose files the compaction replaced; opened after any other op, it lists
                // and reads the folder while the writer's background may compact.
                let early = matches!(op, Op::Compact(_)).then(|| reader_beside(&fs, &options, i));
                run_op(&store, op).unwrap_or_else(|e| panic!("op {i} {op:?} failed: {e}"));
                model.apply(op);
                let reader = early.unwrap_or_else(|| reader_beside(&fs, &options, i));
                assert_reader_agrees(&reader, &store, i);
            }
        }
        assert_eq!(Model::observe(&store), model, "after op {i} {op:?}");
    }
}

/// A store opened read-only beside the writer on `fs`, as `sessionlog ls` beside an agent.
fn reader_beside(fs: &SimFs, options: &crate::Options, i: usize) -> LogStore {
    LogStore::read_only_mode(Path::new(FUZZ_DIR), options.clone(), Arc::new(fs.clone()))
        .unwrap_or_else(|e| panic!("after op {i}: a reader beside the writer fails to open: {e}"))
}

/// Panics unless `reader` reads every session as `store` holds it, without a read error and
/// without reporting damage, and verifies every record of the folder as sound.
fn assert_reader_agrees(reader: &LogStore, store: &LogStore, i: usize) {
    for key in super::op::KEYS {
        if let Err(e) = reader.read_messages(key) {
            panic!("after op {i}: a reader beside the writer fails to read {key:?}: {e}");
        }
    }
    assert!(
        !reader.recovery_report().has_damage(),
        "after op {i}: a reader beside the writer reports damage: {:?}",
        reader.recovery_report()
    );
    assert_eq!(
        Model::observe(reader),
        Model::observe(store),
        "after op {i}: a reader beside the writer, against the writer"
    );
    let verified = reader.verify().expect("the folder lists");
    assert!(
        verified.is_sound(),
        "after op {i}: a reader beside the writer verifies: {:?}",
        verified.problems
    );
}

/// Loses the power of `fs` at the `i`th op: every other time as a disk that writes back in any
/// order would.
fn lose_power(fs: &SimFs, i: usize) {
    if i.is_multiple_of(2) {
        fs.crash(Some(i % 17));
    } else {
        fs.crash_reordering(fs.mutations() ^ i as u64);
    }
}

/// The `decode_record` fuzz target: decoding a record from arbitrary bytes never panics, and
/// whatever decodes re-encodes to the same bytes (an older version's snapshot to the same
/// bytes followed by the fields it lacked).
pub fn fuzz_decode_record(data: &[u8]) {
    if let Ok((frame, used)) = crate::record::decode_frame(data) {
        let mut again = Vec::new();
        crate::record::encode_frame(
            frame.seq,
            frame.ts_micros,
            frame.prev.as_ref(),
            frame.payload,
            &mut again,
        );
        assert_eq!(&again[..], &data[..used]);
        if let Ok(event) = crate::record::decode_event(frame.payload) {
            let again = crate::record::encode_event(&event);
            if again != frame.payload {
                // Only a snapshot of an older version re-encodes differently: with the fields
                // it lacked added, empty.
                assert!(matches!(
                    event,
                    crate::record::Event::Snapshot(crate::record::Snapshot {
                        archived: false,
                        ref recent_ids,
                        ..
                    }) if recent_ids.is_empty()
                ));
                assert!(again.starts_with(frame.payload));
            }
        }
    }
    let _ = crate::record::decode_event(data);
}

/// The `ops_model` fuzz target: bytes to a workload, checked by [`check_ops`].
pub fn fuzz_ops(data: &[u8]) {
    check_ops(&ops_from_bytes(data));
}

/// The `ops_model_encrypted` fuzz target: the same workload on an encrypted store.
pub fn fuzz_ops_encrypted(data: &[u8]) {
    check_ops_encrypted(&ops_from_bytes(data));
}

/// The `open_folder` fuzz target: lays arbitrary bytes out as segment files and opens the
/// folder. Open must not panic; whatever it opens must answer consistently, take a write, and
/// reopen to the same state.
///
/// Layout of `data`: repeated `{ name: u8 | len: u16 le | bytes: [u8; len] }`; `name` 255
/// makes the bytes the anchor log (`ANCHORS`), 254 the erasure log (`ERASED`), 253 the `LOCK`
/// file (its sequence floor and folder stamp; empty when not given), any other picks the
/// session id (`name / 4`) and segment number (`name % 4 + 1`). Damage open found in the two
/// logs is kept in place and reported at every open; damage anywhere else is repaired by the
/// first.
pub fn fuzz_open_folder(data: &[u8]) {
    let fs = SimFs::new();
    let mut rest = data;
    while let [name, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        let file = match *name {
            255 => crate::layout::ANCHORS_FILE.to_owned(),
            254 => crate::layout::ERASED_FILE.to_owned(),
            253 => crate::layout::LOCK_FILE.to_owned(),
            name => crate::layout::segment_name(u64::from(name / 4), u32::from(name % 4) + 1),
        };
        fs.put_file(&Path::new(FUZZ_DIR).join(file), bytes);
        rest = after;
    }
    let lock = Path::new(FUZZ_DIR).join(crate::layout::LOCK_FILE);
    if !fs.exists(&lock) {
        fs.put_file(&lock, b"");
    }
    let options = crate::Options {
        auto_compact: false,
        ..fuzz_options()
    };
    let open = || LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()));
    let Ok(store) = open() else {
        return; // a typed error (an unsupported version) is a fine answer
    };
    let seen = Model::observe(&store);
    for (key, session) in &seen.sessions {
        let meta = store
            .get_session_metadata(key)
            .expect("listed sessions exist");
        assert_eq!(meta.message_count, session.messages.len());
        assert_eq!(store.load_tail(key, 2).len(), session.messages.len().min(2));
    }
    store
        .append("fuzz", &ChatMessage::user("after open"))
        .expect("a store that opened takes writes");
    let after = Model::observe(&store);
    drop(store);
    let store = open().expect("the store opens again");
    let report = store.recovery_report();
    // Damage in a segment is repaired by the first open; the anchor log and the erasure
    // log are reported as they are, again.
    let logs = [crate::layout::ANCHORS_FILE, crate::layout::ERASED_FILE]
        .map(|name| Path::new(FUZZ_DIR).join(name));
    assert!(
        !report.findings.iter().any(|finding| matches!(
            finding,
            crate::Finding::Damaged { path, .. } if !logs.contains(path)
        )),
        "{report:?}"
    );
    assert_eq!(Model::observe(&store), after);
    drop(store);
    changed_while_closed(&fs, data.last().copied().unwrap_or(0), &open);
}

/// One bit of one segment (chosen by `pick`) flipped while the store is closed, with the
/// checkpoint of its last close in place: an open from the checkpoint, whose first touch of
/// each session checks and replays it, gives the same answers as a full replay.
fn changed_while_closed(fs: &SimFs, pick: u8, open: &dyn Fn() -> crate::Result<LogStore>) {
    let segments: Vec<_> = fs
        .files()
        .into_iter()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    let Some((path, mut bytes)) = segments
        .get(usize::from(pick) % segments.len().max(1))
        .cloned()
    else {
        return;
    };
    if bytes.is_empty() {
        return;
    }
    let at = usize::from(pick) * 7919 % bytes.len();
    bytes[at] ^= 0x01;
    fs.put_file(&path, &bytes);
    let store = open().expect("the store opens after a change while it was closed");
    Model::observe(&store); // the first touch of every session
    let touched = Model::observe(&store);
    drop(store);
    let checkpoint = Path::new(FUZZ_DIR).join(crate::layout::CHECKPOINT_FILE);
    if fs.exists(&checkpoint) {
        fs.remove_file(&checkpoint)
            .expect("the checkpoint can be removed");
    }
    let store = open().expect("the store opens without its checkpoint");
    assert_eq!(Model::observe(&store), touched);
}

/// A store's `CHECKPOINT` (of a clean close, the store holding live, cleared, deleted and
/// forked sessions) edited as `data` says, its body's CRC then made right again so that the
/// decoding goes past it: open never panics nor allocates by a length the edited bytes claim,
/// and whatever opens reads every session, takes a write and opens again. (A checkpoint
/// whose CRC holds is trusted for what it records, so its answers are not checked.)
///
/// `data` is a list of 4-byte edits `[op, offset (2 bytes, big-endian), value]`, the offset
/// taken modulo the length: op 0 sets a byte, 1 sets the 8 bytes there to `value` repeated
/// (lengths and counts), 2 cuts the file there, 3 inserts a byte.
pub fn fuzz_checkpoint(data: &[u8]) {
    let fs = SimFs::new();
    let options = crate::Options {
        auto_compact: false,
        ..fuzz_options()
    };
    let open = || LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()));
    {
        let store = open().expect("a new store opens");
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            for n in 0..=i {
                let text = format!("{key} {n} {}", "x".repeat(40 * n));
                store.append(key, &ChatMessage::user(text)).expect("append");
            }
        }
        store.set_session_name("a", "named").expect("name");
        store.clear_messages("b").expect("clear");
        store
            .append("b", &ChatMessage::user("after the clear"))
            .expect("append");
        store.fork_session("c", "fork of c", None).expect("fork");
        store.delete_session("d").expect("delete");
        store.close().expect("close");
    }
    let path = Path::new(FUZZ_DIR).join(crate::layout::CHECKPOINT_FILE);
    let Some((_, mut bytes)) = fs.files().into_iter().find(|(p, _)| *p == path) else {
        panic!("a clean close writes a checkpoint");
    };
    edit_bytes(&mut bytes, data);
    fix_checkpoint_crc(&mut bytes);
    fs.put_file(&path, &bytes);
    opens_reads_writes_reopens(&open);
}

/// Opens the store with `open`; whatever opens (a typed error is a fine answer) reads every
/// session, takes a write and opens again, none of it panicking.
fn opens_reads_writes_reopens(open: &dyn Fn() -> crate::Result<LogStore>) {
    let Ok(store) = open() else {
        return;
    };
    for key in store.list_sessions() {
        let _ = store.read_messages(&key);
        let _ = store.get_session_metadata(&key);
    }
    let _ = store.append("fuzz", &ChatMessage::user("after open"));
    drop(store);
    let _ = open();
}

/// Edits `bytes` as `data` says, four bytes an edit: `{ kind | at: u16 be | value }`, kind
/// (mod 4) 0 sets the byte at `at`, 1 sets 8 bytes from it, 2 cuts there, 3 inserts `value`.
fn edit_bytes(bytes: &mut Vec<u8>, data: &[u8]) {
    for edit in data.chunks_exact(4) {
        let at = usize::from(u16::from_be_bytes([edit[1], edit[2]])) % (bytes.len() + 1);
        match edit[0] % 4 {
            0 => {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = edit[3];
                }
            }
            1 => {
                let end = (at + 8).min(bytes.len());
                bytes[at..end].fill(edit[3]);
            }
            2 => bytes.truncate(at),
            _ => bytes.insert(at, edit[3]),
        }
    }
}

/// Makes the body CRC of the checkpoint `bytes` hold right again, if its header's body length
/// fits, so that its decoding goes past the CRC. The header: magic (8), version (4), body
/// length (8), body CRC (4), section length (8).
fn fix_checkpoint_crc(bytes: &mut [u8]) {
    let body_len = bytes
        .get(12..20)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    if let Some(body) = body_len
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| bytes.get(32..32usize.checked_add(len)?))
    {
        let crc = crc32fast::hash(body);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The `checkpoint_delta` fuzz target: a plain store with a full checkpoint taken while it ran
/// and two deltas after it (`CHECKPOINT.delta`), then a power cut; the delta file is edited as
/// [`fuzz_checkpoint`] edits a checkpoint (each record's CRCs, its own and its checkpoint's
/// body's, made right again where its length fits), and the store opened after the crash.
/// Open must not panic nor allocate by a length the bytes claim; whatever opens reads, writes
/// and reopens.
pub fn fuzz_checkpoint_delta(data: &[u8]) {
    let fs = SimFs::new();
    let options = crate::Options {
        auto_compact: false,
        checkpoint_bytes: 0,
        checkpoint_interval: None,
        ..fuzz_options()
    };
    let open = || LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()));
    {
        let store = open().expect("a new store opens");
        for key in ["a", "b", "c", "d", "e"] {
            for n in 0..2 {
                let text = format!("{key} {n}");
                store.append(key, &ChatMessage::user(text)).expect("append");
            }
        }
        store.checkpoint().expect("a full checkpoint");
        store
            .append("a", &ChatMessage::user("a 2"))
            .expect("append");
        store.set_session_name("b", "named").expect("name");
        store.checkpoint().expect("a delta");
        store.delete_session("c").expect("delete");
        store.clear_messages("d").expect("clear");
        store
            .append("f", &ChatMessage::user("f 0"))
            .expect("append");
        store.checkpoint().expect("a second delta");
        store
            .append("e", &ChatMessage::user("after the deltas"))
            .expect("append");
        fs.cut_power_after(0);
        drop(store);
        fs.crash(None);
    }
    let path = Path::new(FUZZ_DIR).join(crate::layout::CHECKPOINT_DELTA_FILE);
    let Some((_, mut bytes)) = fs.files().into_iter().find(|(p, _)| *p == path) else {
        panic!("checkpoints after a full one are deltas");
    };
    edit_bytes(&mut bytes, data);
    // Records after the header: { len: u64 | crc: u32 | checkpoint: [u8; len] }.
    let mut at = crate::layout::CHECKPOINT_DELTA_HEADER_LEN as usize;
    while let Some(len) = (bytes.get(at..at + 8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .and_then(|len| usize::try_from(len).ok())
    {
        let start = at + 12;
        let Some(end) = start.checked_add(len).filter(|&end| end <= bytes.len()) else {
            break;
        };
        fix_checkpoint_crc(&mut bytes[start..end]);
        let crc = crc32fast::hash(&bytes[start..end]);
        bytes[at + 8..start].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    fs.put_file(&path, &bytes);
    opens_reads_writes_reopens(&open);
}
