//! Decoding a record from arbitrary bytes never panics, and whatever decodes re-encodes to the
//! same bytes (see `sessionlog::testing::fuzz_decode_record`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionlog::testing::fuzz_decode_record(data));
