//! Decoding a record from arbitrary bytes never panics, and whatever decodes re-encodes to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionlog::record::{decode_event, decode_frame, encode_event, encode_frame, Event, Snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, used)) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(
            frame.seq,
            frame.ts_micros,
            frame.prev.as_ref(),
            frame.payload,
            &mut again,
        );
        assert_eq!(&again[..], &data[..used]);
        if let Ok(event) = decode_event(frame.payload) {
            let again = encode_event(&event);
            if again != frame.payload {
                // Only a version 1 snapshot re-encodes differently: with the fork fields added.
                assert!(matches!(
                    event,
                    Event::Snapshot(Snapshot {
                        fork_source: None,
                        fork_at_seq: 0,
                        ..
                    })
                ));
                assert!(again.starts_with(frame.payload));
            }
        }
    }
    let _ = decode_event(data);
});
