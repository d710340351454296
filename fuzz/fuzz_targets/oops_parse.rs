#![no_main]
//! See `telemetrics_fuzz::oops_parse` for the properties checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| telemetrics_fuzz::oops_parse(data));
