//! Opening a store after a crash whose incremental checkpoints (`CHECKPOINT.delta`) were edited
//! (their CRCs made right again) never panics nor allocates by a length the bytes claim;
//! whatever opens reads, writes and reopens.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sessionlog::testing::fuzz_checkpoint_delta(data);
});
