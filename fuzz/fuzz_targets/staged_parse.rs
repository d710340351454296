#![no_main]
//! Staged-file parsing: never panics; a parsed file re-encodes to one that parses equal.

use libfuzzer_sys::fuzz_target;
use libtelemetry::staged::{encode_staged, parse_staged};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = parse_staged(data) {
        let cfg = s.cfg_path.as_ref().and_then(|p| p.to_str()).map(str::to_owned);
        let record = s.clone().into_record();
        let again = parse_staged(&encode_staged(&record, cfg.as_deref())).expect("re-encoded file parses");
        assert_eq!(again.headers, s.headers);
    }
});
