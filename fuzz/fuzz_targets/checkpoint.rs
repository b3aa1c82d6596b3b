//! Opening a store whose checkpoint was edited (its CRC made right again) never panics nor
//! allocates by a length the bytes claim; whatever opens reads, writes and reopens.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionlog::testing::fuzz_checkpoint(data);
});
