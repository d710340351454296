//! The `[settings]` keys: which exist, their ranges and defaults, and the known key an
//! unknown one most likely misspells.

use std::time::Duration;

/// Largest config file read (the shipped one is ~3 KiB).
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// `spool_process_time` is clamped to this range (C: TM_SPOOL_RUN_MIN / TM_SPOOL_RUN_MAX).
pub const SPOOL_PROCESS_TIME_MIN: i64 = 120;
pub const SPOOL_PROCESS_TIME_MAX: i64 = 300;

/// Longest `crash_loop_interval` accepted: a year, in seconds.
pub const CRASH_LOOP_INTERVAL_MAX: u64 = 366 * 24 * 3600;
/// `debuginfod_timeout` range: seconds crashprobe may spend on debuginfod per crash.
pub const DEBUGINFOD_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=5;
/// `debuginfod_cache_max_size` range, MiB.
pub const DEBUGINFOD_CACHE_MAX_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1..=1 << 20;
/// `debuginfod_cache_expiry` range, seconds (a minute to a year).
pub const DEBUGINFOD_CACHE_EXPIRY_RANGE: std::ops::RangeInclusive<u64> = 60..=366 * 24 * 3600;

pub const DEFAULT_SERVER: &str = "https://clr.telemetry.intel.com/v3/collector";
pub const DEFAULT_TIDHEADER: &str = "X-Telemetry-TID: 6907c830-eed9-4ce9-81ae-76daf8d88f0f";

/// `delivery_max_in_flight` default: records telempostd posts at once.
pub const DEFAULT_DELIVERY_MAX_IN_FLIGHT: usize = 4;
/// `otlp_batch_max_records` default: records per OTLP request.
pub const DEFAULT_OTLP_BATCH_MAX_RECORDS: usize = 100;
/// `otlp_batch_max_bytes` default: request body bytes before compression.
pub const DEFAULT_OTLP_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// `otlp_linger_ms` default: wait for more records before sending a batch that is not full.
pub const DEFAULT_OTLP_LINGER: Duration = Duration::from_millis(200);
/// `delivery_max_in_flight` range.
pub const DELIVERY_MAX_IN_FLIGHT_RANGE: std::ops::RangeInclusive<u64> = 1..=32;
/// `otlp_batch_max_records` range.
pub const OTLP_BATCH_MAX_RECORDS_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;
/// `otlp_batch_max_bytes` range (bytes of a request body before compression).
pub const OTLP_BATCH_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=64 << 20;
/// `otlp_linger_ms` range.
pub const OTLP_LINGER_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=60_000;

/// Every `[settings]` key this suite reads: the C client's, then the ones it added.
pub const KNOWN_KEYS: &[&str] = &[
    "server",
    "socket_path",
    "spool_dir",
    "cainfo",
    "tidheader",
    "rate_limit_strategy",
    "record_expiry",
    "spool_max_size",
    "spool_process_time",
    "record_window_length",
    "byte_window_length",
    "record_burst_limit",
    "byte_burst_limit",
    "rate_limit_enabled",
    "daemon_recycling_enabled",
    "record_retention_enabled",
    "record_server_delivery_enabled",
    "delivery_mode",
    "delivery_max_in_flight",
    "delivery_keep_alive",
    "delivery_concurrency",
    "otlp_batch_max_records",
    "otlp_batch_max_bytes",
    "otlp_linger_ms",
    "otlp_compression",
    "otlp_headers",
    "crash_loop_limit",
    "crash_loop_interval",
    "durability",
    "crashprobe_frames",
    "debuginfod_urls",
    "debuginfod_timeout",
    "debuginfod_cache_max_size",
    "debuginfod_cache_expiry",
];

/// The program that reads a key whose bad value does not fail the parse, and so reports
/// the value kept in [`Config::deferred_errors`](super::Config::deferred_errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyReader {
    /// Says so and keeps the default.
    Crashprobe,
    /// Refuses to start (keeps the setting in effect on a reload).
    Telemprobd,
    /// Refuses to start ([`Config::check_delivery`](super::Config::check_delivery)).
    Telempostd,
}

/// The keys telempostd does not read, by prefix (a whole key is its own prefix), and the
/// program that does: a bad value of one is that program's to report and never stops
/// delivery.
pub const KEYS_NOT_READ_BY_TELEMPOSTD: &[(&str, KeyReader)] = &[
    ("crash_loop_", KeyReader::Crashprobe),
    ("crashprobe_", KeyReader::Crashprobe),
    ("debuginfod_", KeyReader::Crashprobe),
    ("durability", KeyReader::Telemprobd),
];

impl KeyReader {
    /// Who reads `key`: telempostd unless [`KEYS_NOT_READ_BY_TELEMPOSTD`] names another.
    pub fn of(key: &str) -> KeyReader {
        KEYS_NOT_READ_BY_TELEMPOSTD
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map_or(KeyReader::Telempostd, |(_, reader)| *reader)
    }
}

/// The known key `key` most likely misspells: at most two edits away (or a quarter of its
/// length for long keys), e.g. `delivery_max_inflight` → `delivery_max_in_flight`.
pub(super) fn closest_known_key(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let limit = (key.len() / 4).max(2);
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are short ASCII names).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
