//! A sequence of operations (with reopens, compactions and power losses) run against the store
//! and against the in-memory model: they must agree after every step.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionlog::testing::fuzz_ops(data);
});
