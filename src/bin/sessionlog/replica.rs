//! `backup` and `restore`: the store's log shipped to object storage once, and a store
//! rebuilt from it (feature `replication`).

use std::io::Write;
use std::path::Path;

use sessionlog::{LogStore, Options, Replication, RestorePoint};

use super::position::Position;
use super::{existing, note_findings, progress, CliResult};

/// Opens the store with shipping to `url` on, ships what the prefix lacks, and closes it.
pub(super) fn backup(dir: &Path, url: &str, options: &Options) -> CliResult {
    let replication = Replication::to(url)?;
    let options = Options {
        replicate_to: Some(replication),
        ..options.clone()
    };
    let store = existing(dir, |d| LogStore::open_with(d, options))?;
    note_findings(&store);
    let status = store.ship_now()?;
    store.close()?;
    outln!(
        "shipped to {}: every record up to {} is in the bucket (generation {}, {} batch(es) now)",
        status.target,
        status.shipped_seq,
        status.generation,
        status.batches
    );
    Ok(())
}

/// Rebuilds the store shipped to `url` in `dir`.
pub(super) fn restore(
    url: &str,
    dir: &Path,
    at: Option<Position>,
    take_over: bool,
    options: &Options,
) -> CliResult {
    let replication = Replication::to(url)?;
    let point = match at {
        None => RestorePoint::Latest,
        Some(Position::Seq(seq)) => RestorePoint::Seq(seq),
        Some(Position::Time(time)) => RestorePoint::Time(time),
    };
    let mut bar = None;
    let report = sessionlog::restore_with_progress(
        &replication,
        dir,
        point,
        options,
        take_over,
        |done, total| {
            let bar = bar.get_or_insert_with(|| progress(total as usize, "restoring"));
            bar.set_position(done);
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outln!(
        "restored {} session(s) up to record {} from {} batch(es) ({} bytes) into {}; verified",
        report.sessions,
        report.seq,
        report.batches,
        report.bytes,
        dir.display()
    );
    if report.generation > 0 {
        outln!(
            "the restored store ships on to {url} under generation {}",
            report.generation
        );
    }
    Ok(())
}
