//! Test file systems and a reference model, behind the `fault-injection` feature.
//!
//! - [`SimFs`]: an in-memory file system that keeps written and durable bytes apart. It can cut
//!   the power after any number of operations, and [`SimFs::crash`] then drops everything not
//!   yet durable (optionally keeping a prefix of each file's last unsynced write).
//! - [`FaultyFs`]: wraps any file system and fails its Nth operation with an error such as
//!   `EIO` or `ENOSPC`.
//! - [`Model`] and [`Op`]: a plain in-memory model of SEMANTICS.md, and operations that run
//!   against both it and a store, for the crash sweeps, the property test and the fuzz targets.
//! - [`sessions_in_memory`]: what a store holds in memory, for tests that nothing is left
//!   behind.

mod faulty_fs;
mod fuzz;
mod model;
mod op;
mod oracle;
mod sim_fs;

pub use faulty_fs::{FaultyFs, FsOp, EIO, ENOSPC};
pub use fuzz::{
    check_ops, check_ops_encrypted, fuzz_checkpoint, fuzz_checkpoint_delta, fuzz_decode_record,
    fuzz_open_folder, fuzz_ops, fuzz_ops_encrypted, FUZZ_DIR,
};
pub use model::{Model, ModelSession, ModelTombstone};
pub use op::{ops_from_bytes, run_op, Op, KEYS};
pub use oracle::{
    assert_hits, assert_searches, search_messages_in, search_sessions_in, OracleSession,
};
pub use sim_fs::SimFs;

/// How many sessions the store holds in memory: live ones, and any a call made and has not
/// yet written to (a test's view of what calls leave behind).
pub fn sessions_in_memory(store: &crate::LogStore) -> usize {
    store.sessions_in_memory()
}
