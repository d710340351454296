#![no_main]
//! See `telemetrics_fuzz::frame_decode` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetrics_fuzz::frame_decode(data));
