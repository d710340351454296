//! `telemetrics.conf`: the INI dialect of the C client (libnica), file selection, built-in
//! defaults and clamping.
//!
//! Differences from the C client, on purpose:
//! * a bad file is a [`ConfigError`] naming the file and line, never `exit(1)`;
//! * a non-numeric integer is an error (C's `strtoll` silently made it 0);
//! * range problems that made the C telempostd exit on its first delivery (a window length
//!   outside 0..59, a negative `record_expiry`) are reported by [`Config::check_delivery`],
//!   which telempostd calls at start-up; probes, which only need `socket_path`, are not
//!   affected by them;
//! * the keys this suite added for one program alone (telempostd's `delivery_*`, `otlp_*`;
//!   crashprobe's `crash_loop_*`, `crashprobe_*`, `debuginfod_*`; telemprobd's
//!   `durability`) are typed here too, but a bad value of one is kept (with its
//!   `path:line`) for that program to report ([`KeyReader`], [`Config::deferred_errors_for`])
//!   rather than failing the parse, for the same reason;
//! * a key this suite does not know is still accepted, as C did, but reported in
//!   [`Config::warnings`] with its `path:line` and the known key it most likely misspells.
//!
//! Rust callers get typed values only: `Duration`s, `Option`s (`None` = unlimited or off),
//! [`RateLimit`]s and enums, with a value the file gave out of range kept as [`OutOfRange`]
//! for [`Config::check_delivery`]. The C getters' numbers (−1 = unlimited/off/out of range)
//! exist only in [`Config::c_numbers`], for output that must show them.
//!
//! The INI dialect itself is in [`crate::ini`].

mod error;
mod file;
mod keys;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ini::{parse_ini, IniEntry};
use crate::paths::Paths;

pub use error::*;
pub use file::*;
pub use keys::*;
pub use values::*;

use file::read_bounded;
use keys::closest_known_key;

/// The settings in effect. Field values are already clamped as the C getters did.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: String,
    pub socket_path: PathBuf,
    pub spool_dir: PathBuf,
    pub cainfo: String,
    /// A complete HTTP header line (`Name: value`), sent verbatim.
    pub tidheader: String,
    pub rate_limit_strategy: RateLimitStrategy,
    /// `record_expiry` (minutes in the file): how long a record may wait in the spool.
    /// A negative value is [`OutOfRange`], refused by [`Config::check_delivery`].
    pub record_expiry: Result<Duration, OutOfRange>,
    /// `spool_max_size` in bytes (KiB in the file); `None` = unlimited (a negative value).
    pub spool_max_bytes: Option<u64>,
    /// `spool_process_time`: telempostd's rescan interval and backoff cap, clamped to
    /// [`SPOOL_PROCESS_TIME_MIN`]..=[`SPOOL_PROCESS_TIME_MAX`] seconds.
    pub spool_process_time: Duration,
    /// `record_burst_limit` per `record_window_length`.
    pub record_limit: RateLimit,
    /// `byte_burst_limit` per `byte_window_length`.
    pub byte_limit: RateLimit,
    pub rate_limit_enabled: bool,
    pub daemon_recycling_enabled: bool,
    pub record_retention_enabled: bool,
    pub record_server_delivery_enabled: bool,
    /// New: `delivery_mode=auto|v2|v3|otlp`.
    pub delivery_mode: DeliveryMode,
    /// New: `delivery_max_in_flight` (within [`DELIVERY_MAX_IN_FLIGHT_RANGE`]).
    pub delivery_max_in_flight: usize,
    /// New: `delivery_keep_alive` (reuse HTTP connections; default true).
    pub delivery_keep_alive: bool,
    /// New: `delivery_concurrency=adaptive|fixed`.
    pub delivery_concurrency: DeliveryConcurrency,
    /// New: `otlp_batch_max_records` (within [`OTLP_BATCH_MAX_RECORDS_RANGE`]).
    pub otlp_batch_max_records: usize,
    /// New: `otlp_batch_max_bytes` (within [`OTLP_BATCH_MAX_BYTES_RANGE`]).
    pub otlp_batch_max_bytes: usize,
    /// New: `otlp_linger_ms` (within [`OTLP_LINGER_MS_RANGE`]).
    pub otlp_linger: Duration,
    /// New: `otlp_compression=none|gzip`.
    pub otlp_compression: OtlpCompression,
    /// New: `otlp_headers`, `Name: value` pairs separated by `;` (e.g. authorization).
    pub otlp_headers: Vec<(String, String)>,
    /// Unusable values of the keys only one program reads, each kept for that program to
    /// report ([`Config::deferred_errors_for`]; telempostd's by [`Config::check_delivery`]).
    pub deferred_errors: Vec<DeferredValueError>,
    /// Accepted but suspicious content (unknown keys), for the daemons to log.
    pub warnings: Vec<ConfigWarning>,
    /// crashprobe: records sent per crash signature and `crash_loop_interval`; 0 = no limit.
    pub crash_loop_limit: u32,
    /// crashprobe: seconds of one crash-loop window, 1..=[`CRASH_LOOP_INTERVAL_MAX`].
    pub crash_loop_interval: u64,
    /// telemprobd: `durability=strict|batched|none`. A bad value keeps the default and is
    /// a deferred error telemprobd refuses to start with (probes and telempostd ignore it).
    pub durability: Durability,
    /// crashprobe: `crashprobe_frames=compatible|rich`.
    pub crashprobe_frames: CrashFrames,
    /// crashprobe: `debuginfod_urls` (off by default).
    pub debuginfod_urls: DebuginfodUrls,
    /// crashprobe: total time for debuginfod requests per crash.
    pub debuginfod_timeout: Duration,
    /// crashprobe: debuginfod cache size cap, bytes (`debuginfod_cache_max_size` is MiB).
    pub debuginfod_cache_max_bytes: u64,
    /// crashprobe: cached files unused this long are removed; also how long a "not found"
    /// answer is remembered.
    pub debuginfod_cache_expiry: Duration,
    /// Every `[settings]` key as read (unescaped), last occurrence winning. Everything the
    /// suite reads has a typed field above; this stays for keys not typed yet.
    pub raw: BTreeMap<String, String>,
}

impl Config {
    /// Built-in defaults, with the default paths resolved under `paths`.
    pub fn defaults(paths: &Paths) -> Config {
        Config {
            server: DEFAULT_SERVER.to_string(),
            socket_path: paths.default_socket_path(),
            spool_dir: paths.default_spool_dir(),
            cainfo: String::new(),
            tidheader: DEFAULT_TIDHEADER.to_string(),
            rate_limit_strategy: RateLimitStrategy::Spool,
            record_expiry: Ok(Duration::from_secs(1200 * 60)),
            spool_max_bytes: Some(5120 * 1024),
            spool_process_time: Duration::from_secs(120),
            record_limit: RateLimit {
                burst: Some(1000),
                window: Ok(WindowMinutes(15)),
            },
            byte_limit: RateLimit {
                burst: None,
                window: Ok(WindowMinutes(20)),
            },
            rate_limit_enabled: true,
            daemon_recycling_enabled: true,
            record_retention_enabled: false,
            record_server_delivery_enabled: true,
            delivery_mode: DeliveryMode::Auto,
            delivery_max_in_flight: DEFAULT_DELIVERY_MAX_IN_FLIGHT,
            delivery_keep_alive: true,
            delivery_concurrency: DeliveryConcurrency::Adaptive,
            otlp_batch_max_records: DEFAULT_OTLP_BATCH_MAX_RECORDS,
            otlp_batch_max_bytes: DEFAULT_OTLP_BATCH_MAX_BYTES,
            otlp_linger: DEFAULT_OTLP_LINGER,
            otlp_compression: OtlpCompression::None,
            otlp_headers: Vec::new(),
            deferred_errors: Vec::new(),
            warnings: Vec::new(),
            crash_loop_limit: 5,
            crash_loop_interval: 3600,
            durability: Durability::default(),
            crashprobe_frames: CrashFrames::Compatible,
            debuginfod_urls: DebuginfodUrls::Off,
            debuginfod_timeout: Duration::from_secs(5),
            debuginfod_cache_max_bytes: 512 << 20,
            debuginfod_cache_expiry: Duration::from_secs(7 * 24 * 3600),
            raw: BTreeMap::new(),
        }
    }

    /// Parse `text` (the contents of `path`, used in messages) over the built-in defaults.
    /// Keys missing from the file keep their built-in default (no merging between files).
    pub fn parse(text: &str, path: &Path, paths: &Paths) -> Result<Config, ConfigError> {
        let ini = parse_ini(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.line,
            message: e.message.to_string(),
        })?;
        let mut cfg = Config::defaults(paths);
        for entry in ini.settings() {
            cfg.apply(entry, path)?;
            cfg.raw.insert(entry.key.clone(), entry.value.clone());
        }
        Ok(cfg)
    }

    /// Read and parse one file.
    pub fn from_file(path: &Path, paths: &Paths) -> Result<Config, ConfigError> {
        let text = read_bounded(path)?;
        Config::parse(&text, path, paths)
    }

    /// The C selection order: the explicit file if given; else the `/etc` file if readable;
    /// else the distribution default if readable; else the built-ins.
    pub fn load(
        paths: &Paths,
        explicit: Option<&Path>,
    ) -> Result<(Config, ConfigSource), ConfigError> {
        let source = select_config_file(paths, explicit);
        let cfg = match source.path() {
            Some(p) => Config::from_file(p, paths)?,
            None => Config::defaults(paths),
        };
        Ok((cfg, source))
    }

    fn apply(&mut self, e: &IniEntry, path: &Path) -> Result<(), ConfigError> {
        let int = |e: &IniEntry| parse_int(e, path);
        let boolean = |e: &IniEntry| parse_bool(e, path);
        match e.key.as_str() {
            "server" => self.server = e.value.clone(),
            "socket_path" => self.socket_path = PathBuf::from(&e.value),
            "spool_dir" => self.spool_dir = PathBuf::from(&e.value),
            "cainfo" => self.cainfo = e.value.clone(),
            "tidheader" => self.tidheader = e.value.clone(),
            "rate_limit_strategy" => {
                self.rate_limit_strategy = if e.value.eq_ignore_ascii_case("drop") {
                    RateLimitStrategy::Drop
                } else {
                    RateLimitStrategy::Spool
                }
            }
            // Clamped so that the C getters' numbers (`c_numbers`) still fit an i64.
            "record_expiry" => {
                self.record_expiry = u64::try_from(int(e)?)
                    .map(|m| Duration::from_secs(m.min(i64::MAX as u64 / 60) * 60))
                    .map_err(|_| OutOfRange)
            }
            "spool_max_size" => {
                self.spool_max_bytes = u64::try_from(int(e)?)
                    .ok()
                    .map(|k| k.min(i64::MAX as u64 / 1024) * 1024)
            }
            "spool_process_time" => {
                let secs = int(e)?.clamp(SPOOL_PROCESS_TIME_MIN, SPOOL_PROCESS_TIME_MAX);
                self.spool_process_time = Duration::from_secs(secs.unsigned_abs());
            }
            "record_window_length" => {
                self.record_limit.window = WindowMinutes::from_config(int(e)?)
            }
            "byte_window_length" => self.byte_limit.window = WindowMinutes::from_config(int(e)?),
            "record_burst_limit" => self.record_limit.burst = u64::try_from(int(e)?).ok(),
            "byte_burst_limit" => self.byte_limit.burst = u64::try_from(int(e)?).ok(),
            "rate_limit_enabled" => self.rate_limit_enabled = boolean(e)?,
            "daemon_recycling_enabled" => self.daemon_recycling_enabled = boolean(e)?,
            "record_retention_enabled" => self.record_retention_enabled = boolean(e)?,
            "record_server_delivery_enabled" => self.record_server_delivery_enabled = boolean(e)?,
            "delivery_mode" => {
                self.delivery_mode =
                    DeliveryMode::parse(&e.value).ok_or_else(|| ConfigError::Value {
                        path: path.to_path_buf(),
                        line: e.line,
                        key: e.key.clone(),
                        value: e.value.clone(),
                        message: "expected auto, v2, v3 or otlp".into(),
                    })?
            }
            "crash_loop_limit" => {
                if let Some(n) = self.deferred(e, path, ranged(e, 0..=u64::from(u32::MAX))) {
                    self.crash_loop_limit = n as u32;
                }
            }
            "crash_loop_interval" => {
                if let Some(n) = self.deferred(e, path, ranged(e, 1..=CRASH_LOOP_INTERVAL_MAX)) {
                    self.crash_loop_interval = n;
                }
            }
            "crashprobe_frames" => {
                let parsed = match e.value.trim() {
                    "compatible" => Ok(CrashFrames::Compatible),
                    "rich" => Ok(CrashFrames::Rich),
                    _ => Err("expected compatible or rich".to_string()),
                };
                if let Some(f) = self.deferred(e, path, parsed) {
                    self.crashprobe_frames = f;
                }
            }
            "debuginfod_urls" => {
                if let Some(u) = self.deferred(e, path, DebuginfodUrls::parse(&e.value)) {
                    self.debuginfod_urls = u;
                }
            }
            "debuginfod_timeout" => {
                if let Some(n) = self.deferred(e, path, ranged(e, DEBUGINFOD_TIMEOUT_RANGE)) {
                    self.debuginfod_timeout = Duration::from_secs(n);
                }
            }
            "debuginfod_cache_max_size" => {
                let parsed = ranged(e, DEBUGINFOD_CACHE_MAX_SIZE_RANGE);
                if let Some(n) = self.deferred(e, path, parsed) {
                    self.debuginfod_cache_max_bytes = n << 20;
                }
            }
            "debuginfod_cache_expiry" => {
                let parsed = ranged(e, DEBUGINFOD_CACHE_EXPIRY_RANGE);
                if let Some(n) = self.deferred(e, path, parsed) {
                    self.debuginfod_cache_expiry = Duration::from_secs(n);
                }
            }
            "delivery_max_in_flight" => {
                if let Some(n) = self.deferred(e, path, ranged(e, DELIVERY_MAX_IN_FLIGHT_RANGE)) {
                    self.delivery_max_in_flight = n as usize;
                }
            }
            "delivery_keep_alive" => {
                if let Some(b) = self.deferred(e, path, bool_value(&e.value)) {
                    self.delivery_keep_alive = b;
                }
            }
            "otlp_batch_max_records" => {
                if let Some(n) = self.deferred(e, path, ranged(e, OTLP_BATCH_MAX_RECORDS_RANGE)) {
                    self.otlp_batch_max_records = n as usize;
                }
            }
            "otlp_batch_max_bytes" => {
                if let Some(n) = self.deferred(e, path, ranged(e, OTLP_BATCH_MAX_BYTES_RANGE)) {
                    self.otlp_batch_max_bytes = n as usize;
                }
            }
            "otlp_linger_ms" => {
                if let Some(n) = self.deferred(e, path, ranged(e, OTLP_LINGER_MS_RANGE)) {
                    self.otlp_linger = Duration::from_millis(n);
                }
            }
            "otlp_compression" => {
                let parsed = match e.value.to_ascii_lowercase().as_str() {
                    "gzip" => Ok(OtlpCompression::Gzip),
                    "none" | "" => Ok(OtlpCompression::None),
                    _ => Err("expected none or gzip".to_string()),
                };
                self.otlp_compression = self.deferred(e, path, parsed).unwrap_or_default();
            }
            "otlp_headers" => {
                self.otlp_headers = self
                    .deferred(e, path, header_list(&e.value))
                    .unwrap_or_default()
            }
            "delivery_concurrency" => {
                let parsed = DeliveryConcurrency::parse(&e.value)
                    .ok_or_else(|| "expected adaptive or fixed".to_string());
                self.delivery_concurrency = self.deferred(e, path, parsed).unwrap_or_default();
            }
            "durability" => {
                let parsed = Durability::parse(&e.value)
                    .ok_or_else(|| "expected strict, batched or none".to_string());
                self.durability = self.deferred(e, path, parsed).unwrap_or_default();
            }
            _ => self.warnings.push(ConfigWarning::UnknownKey {
                path: path.to_path_buf(),
                line: e.line,
                key: e.key.clone(),
                did_you_mean: closest_known_key(&e.key),
            }),
        }
        Ok(())
    }

    /// `parsed`'s value, or `None` with the problem kept for [`Config::check_delivery`].
    fn deferred<T>(&mut self, e: &IniEntry, path: &Path, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(message) => {
                let key = KNOWN_KEYS.iter().find(|k| **k == e.key).copied();
                self.deferred_errors.push(DeferredValueError {
                    path: path.to_path_buf(),
                    line: e.line,
                    key: key.unwrap_or("?"),
                    value: e.value.clone(),
                    message,
                });
                None
            }
        }
    }

    /// The C getters' numbers of the keys whose C values carry sentinels.
    pub fn c_numbers(&self) -> CNumbers {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let window = |l: &RateLimit| l.window.map_or(-1, |w| i64::from(w.minutes()));
        CNumbers {
            record_expiry: self.record_expiry.map_or(-1, |d| to_i64(d.as_secs() / 60)),
            spool_max_size: self.spool_max_bytes.map_or(-1, |b| to_i64(b / 1024)),
            spool_process_time: to_i64(self.spool_process_time.as_secs()),
            record_window_length: window(&self.record_limit),
            byte_window_length: window(&self.byte_limit),
            record_burst_limit: self.record_limit.burst.map_or(-1, to_i64),
            byte_burst_limit: self.byte_limit.burst.map_or(-1, to_i64),
        }
    }

    /// Settings telempostd needs in range before it delivers anything. The C daemon found
    /// these on its first delivery and called `exit(1)`.
    pub fn check_delivery(&self) -> Result<(), ConfigError> {
        if self.record_limit.window.is_err() {
            return Err(ConfigError::Delivery {
                key: "record_window_length",
                message: "must be within 0..59".into(),
            });
        }
        if self.byte_limit.window.is_err() {
            return Err(ConfigError::Delivery {
                key: "byte_window_length",
                message: "must be within 0..59".into(),
            });
        }
        if self.record_expiry.is_err() {
            return Err(ConfigError::Delivery {
                key: "record_expiry",
                message: "must not be negative".into(),
            });
        }
        if let Some(e) = self.deferred_errors_for(KeyReader::Telempostd).next() {
            return Err(e.to_error());
        }
        Ok(())
    }

    /// The unusable values `reader` reports, in file order.
    pub fn deferred_errors_for(
        &self,
        reader: KeyReader,
    ) -> impl Iterator<Item = &DeferredValueError> {
        self.deferred_errors
            .iter()
            .filter(move |e| KeyReader::of(e.key) == reader)
    }

    /// The first unusable value of a telempostd-only key starting with `key_prefix`
    /// (`"otlp_"`: the OTLP exporter's, also checked in a record's `CFG:` file).
    pub fn deferred_error(&self, key_prefix: &str) -> Option<&DeferredValueError> {
        self.deferred_errors
            .iter()
            .find(|e| e.key.starts_with(key_prefix))
    }

    /// The delivery mode for this config's `server`.
    pub fn effective_delivery_mode(&self) -> DeliveryMode {
        self.delivery_mode.resolve(&self.server)
    }

    /// `cainfo` when it names an existing file (the C client ignored a missing one).
    pub fn cainfo_path(&self) -> Option<&Path> {
        let p = Path::new(&self.cainfo);
        (!self.cainfo.is_empty() && p.exists()).then_some(p)
    }
}

/// A decimal integer within `range` (the message names the range).
fn ranged(e: &IniEntry, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    e.value
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("expected {}..{}", range.start(), range.end()))
}

fn bool_value(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

/// `Name: value; Name: value` (empty parts skipped).
fn header_list(v: &str) -> Result<Vec<(String, String)>, String> {
    v.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            split_header_line(part)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .ok_or_else(|| format!("{part:?} is not a `Name: value` header"))
        })
        .collect()
}

fn parse_int(e: &IniEntry, path: &Path) -> Result<i64, ConfigError> {
    e.value.parse::<i64>().map_err(|err| ConfigError::Value {
        path: path.to_path_buf(),
        line: e.line,
        key: e.key.clone(),
        value: e.value.clone(),
        message: err.to_string(),
    })
}

fn parse_bool(e: &IniEntry, path: &Path) -> Result<bool, ConfigError> {
    bool_value(&e.value).map_err(|message| ConfigError::Value {
        path: path.to_path_buf(),
        line: e.line,
        key: e.key.clone(),
        value: e.value.clone(),
        message,
    })
}
