//! `sessionlog verify`, and the words for what an open found (`describe`), which every command
//! prints as `note:` lines.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use sessionlog::{Finding, LogStore, Options};

use super::{existing, progress, CliResult};

/// What an open found, in words.
pub(crate) fn describe(finding: &Finding) -> String {
    match finding {
        Finding::Damaged {
            key,
            path,
            offset,
            reason,
            ..
        } => format!(
            "damage in session {:?}: {} at offset {offset}: {reason}",
            key.as_deref().unwrap_or("?"),
            path.display()
        ),
        Finding::Unfinished {
            path,
            offset,
            bytes,
        } => format!(
            "incomplete record: {} at offset {offset} \
             ({bytes} bytes; a crash, or a write in progress)",
            path.display()
        ),
        Finding::TornTail { path, offset, .. } => {
            format!("torn tail cut: {} at offset {offset}", path.display())
        }
        Finding::UnknownFile { path } => format!("not part of the store: {}", path.display()),
        Finding::IndexRebuilt { path, reason } => format!(
            "search index rebuilt from the log ({}: {reason})",
            path.display()
        ),
        Finding::CompactionFinished { key, retired } => format!(
            "an interrupted compaction of session {key:?} finished ({} old file(s) retired)",
            retired.len()
        ),
        Finding::TempFileRemoved { path } => {
            format!(
                "a compaction's unfinished output removed: {}",
                path.display()
            )
        }
        Finding::DeleteRestored { key, path } => format!(
            "a delete of an older session {key:?} lost to a power cut written again in {}",
            path.display()
        ),
        Finding::CheckpointIgnored { reason } => {
            format!("checkpoint not used, every segment replayed: {reason}")
        }
        Finding::ErasureFinished {
            session_id,
            removed,
        } => format!(
            "an interrupted erasure of session id {session_id} finished ({} file(s) removed)",
            removed.len()
        ),
        Finding::SequenceFloorIgnored { path, floor } => format!(
            "the sequence floor {floor} in {} is out of range and was not used",
            path.display()
        ),
        Finding::RolledBack {
            key,
            session_id,
            anchored_seq,
            found_seq,
        } => format!(
            "rolled back: session {} (id {session_id}) ends at event {found_seq}, before event \
             {anchored_seq} the anchor log recorded (an older copy of its files, or removed); \
             if deliberate, remove ANCHORS",
            key.as_deref().map_or("?".to_owned(), |k| format!("{k:?}"))
        ),
        Finding::ChangedWhileClosed { key, session_id } => format!(
            "session {key:?} (id {session_id}) changed while the store was closed: replayed \
             from its files"
        ),
        other => format!("{other:?}"),
    }
}

/// `verify`: the open's findings, the history's check, and the root asked about; exit 1 on
/// damage.
pub(crate) fn verify(dir: &Path, root: Option<&str>, options: &Options) -> CliResult<ExitCode> {
    // A root is what `verify --root` printed: 64 hexadecimal digits. Anything else is a
    // mistyped argument, not a rolled-back folder; blanks alone ask for the root.
    let root = root.map(str::trim);
    if let Some(hash) = root.filter(|h| !h.is_empty()) {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "--root {hash:?} is not a root: one is 64 hexadecimal digits, as `verify --root` \
                 prints it"
            )
            .into());
        }
    }
    let store = existing(dir, |d| LogStore::open_read_only_with(d, options.clone()))?;
    let bar = progress(0, "verifying");
    let report = store.verify_with_progress(|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut damage = 0;
    for finding in &store.recovery_report().findings {
        // An unfinished last record is a crash's torn tail (a writable open cuts it) or a
        // write in progress beside this reader: reported, not counted as damage. Damage the
        // history's check finds too (the same record) counts once.
        if let Finding::Damaged { path, offset, .. } = finding {
            let again = |p: &&sessionlog::Problem| p.path == *path && p.offset == *offset;
            if !report.problems.iter().any(|p| again(&p)) {
                damage += 1;
            }
        }
        outln!("{}", describe(finding));
    }
    for problem in &report.problems {
        damage += 1;
        outln!("damage: {problem}");
    }
    match root {
        None => {}
        Some("") => match store.root_hash() {
            Ok(hash) => outln!("root {hash}"),
            Err(sessionlog::Error::ReadOnly) => {
                outln!("no root yet: the store has not been closed since it was created")
            }
            Err(e) => return Err(e.into()),
        },
        Some(hash) if store.holds_root(hash)? => outln!("root {hash} is in the store's history"),
        Some(hash) => {
            damage += 1;
            outln!(
                "damage: root {hash} is not in the store's history: the folder was rolled back \
                 to a copy older than it, or it is another store's root"
            );
        }
    }
    if damage == 0 {
        outln!(
            "sound: {} sessions, {} events checked",
            report.sessions,
            report.events
        );
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("{damage} problem(s) found");
        Ok(ExitCode::from(1))
    }
}
