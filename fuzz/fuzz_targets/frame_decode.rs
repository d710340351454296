#![no_main]
//! Frame decoding: never panics; whatever decodes re-encodes to a frame that decodes equal.

use libfuzzer_sys::fuzz_target;
use libtelemetry::frame::{decode_frame, encode_frame, frame_len};

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data);
    if let Ok(frame) = decode_frame(data) {
        let again = encode_frame(&frame.record, frame.cfg_path.as_deref());
        let back = decode_frame(&again).expect("re-encoded frame decodes");
        assert_eq!(back.record, frame.record);
    }
});
