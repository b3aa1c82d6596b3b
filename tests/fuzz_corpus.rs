//! Every input in the fuzz seed corpus (`fuzz/corpus/`) is replayed through the same checks as
//! the fuzz target, so CI exercises the target on every run without a fuzzer.

use sessionlog::record::{decode_event, decode_frame, encode_event, encode_frame};

fn check_decode_record(data: &[u8]) {
    if let Ok((frame, used)) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(frame.seq, frame.ts_micros, frame.payload, &mut again);
        assert_eq!(&again[..], &data[..used]);
        if let Ok(event) = decode_event(frame.payload) {
            assert_eq!(encode_event(&event), frame.payload);
        }
    }
    let _ = decode_event(data);
}

#[test]
fn decode_record_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_record");
    let mut decoded = 0;
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        check_decode_record(&bytes);
        decoded += usize::from(decode_frame(&bytes).is_ok());
        count += 1;
    }
    assert!(count >= 5, "the seed corpus is missing");
    assert!(decoded >= 3, "the seeds include well-formed records");
}
