#![no_main]
//! Config parsing: never panics, and errors name a line within the input.

use libfuzzer_sys::fuzz_target;
use libtelemetry::config::{Config, ConfigError};
use libtelemetry::Paths;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, std::path::Path::new("fuzz.conf"), &Paths::default()) {
        Ok(_) => {}
        Err(ConfigError::Syntax { line, .. }) | Err(ConfigError::Value { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1));
        }
        Err(_) => {}
    }
});
