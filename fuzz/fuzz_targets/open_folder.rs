//! Opening a folder whose segment files, anchor log, erasure log and LOCK hold arbitrary bytes
//! never panics, and whatever opens answers consistently, takes a write and reopens to the
//! same state.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionlog::testing::fuzz_open_folder(data);
});
