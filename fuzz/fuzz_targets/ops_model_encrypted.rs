//! `ops_model` on an encrypted store: sealed records, per-session keys made and destroyed,
//! forks that copy, across reopens, compactions and power losses. Same input format (and seed
//! corpus) as `ops_model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionlog::testing::fuzz_ops_encrypted(data);
});
