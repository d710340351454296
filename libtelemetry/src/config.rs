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
//! * the keys this suite added for telempostd alone (`delivery_*`, `otlp_*`) are typed here
//!   too, but a bad value of one is also kept for [`Config::check_delivery`] (with its
//!   `path:line`) rather than failing the parse, for the same reason;
//! * a key this suite does not know is still accepted, as C did, but reported in
//!   [`Config::warnings`] with its `path:line` and the known key it most likely misspells.
//!
//! Rust callers get `Option`s and enums ([`Config::spool_quota_bytes`],
//! [`Config::record_burst`], ...); the `i64` fields keep the C getters' numbers (−1 =
//! unlimited/disabled/invalid), as the C library returned them.
//!
//! The INI dialect itself is in [`crate::ini`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ini::{parse_ini, IniEntry};
use crate::paths::Paths;

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

/// Prefixes of the keys only crashprobe reads: a bad value of one is crashprobe's to report
/// (it keeps the default) and never stops delivery.
pub const CRASHPROBE_KEY_PREFIXES: &[&str] = &["crash_loop_", "crashprobe_", "debuginfod_"];

/// `crashprobe_frames`: how crashprobe names frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashFrames {
    /// As the C probe printed them (what the telemetrics backend parses).
    #[default]
    Compatible,
    /// Inlined frames, demangled names, resolved file paths.
    Rich,
}

/// `debuginfod_urls`: where crashprobe may fetch debug files by build-id. Off by default:
/// a request names a build-id, which tells the server what software runs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DebuginfodUrls {
    #[default]
    Off,
    /// Servers in order; the word `env` in the value stands for the URLs of the
    /// `DEBUGINFOD_URLS` environment variable, which is read only then.
    Servers { urls: Vec<String>, from_env: bool },
}

impl DebuginfodUrls {
    fn parse(value: &str) -> Result<DebuginfodUrls, String> {
        let (mut urls, mut from_env) = (Vec::new(), false);
        for word in value.split_whitespace() {
            if word == "env" {
                from_env = true;
            } else if is_http_url(word) {
                urls.push(word.to_string());
            } else {
                return Err(format!("{word:?} is neither an http(s):// URL nor env"));
            }
        }
        if urls.is_empty() && !from_env {
            return Ok(DebuginfodUrls::Off);
        }
        Ok(DebuginfodUrls::Servers { urls, from_env })
    }

    /// The server URLs in effect; `env` is the value of `DEBUGINFOD_URLS` (space-separated,
    /// as elfutils reads it), consulted only when the key says `env`.
    pub fn resolve(&self, env: Option<&str>) -> Vec<String> {
        let DebuginfodUrls::Servers { urls, from_env } = self else {
            return Vec::new();
        };
        let mut out = urls.clone();
        if *from_env {
            let env_urls = env
                .unwrap_or("")
                .split_whitespace()
                .filter(|u| is_http_url(u));
            out.extend(env_urls.map(str::to_string));
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|u| seen.insert(u.clone()));
        out
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: configuration file larger than {MAX_CONFIG_SIZE} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: invalid value {value:?} for {key}: {message}")]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        message: String,
    },
    #[error("configuration path {0:?} must be absolute")]
    NotAbsolute(PathBuf),
    #[error("configuration path {0:?} is not a regular file")]
    NotRegularFile(PathBuf),
    #[error("{key}: {message}")]
    Delivery { key: &'static str, message: String },
}

impl ConfigError {
    /// The errno the C library would have returned for this condition.
    pub fn errno(&self) -> i32 {
        match self {
            ConfigError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ConfigError::TooLarge { .. } => libc::EFBIG,
            _ => libc::EINVAL,
        }
    }
}

/// Where the configuration in effect came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Given with `-f` / `tm_set_config_file` / a record's `CFG:` field.
    Explicit(PathBuf),
    /// `/etc/telemetrics/telemetrics.conf`.
    Etc(PathBuf),
    /// `/usr/share/defaults/telemetrics/telemetrics.conf`.
    Distribution(PathBuf),
    /// No file: built-in defaults only.
    BuiltIn,
}

impl ConfigSource {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Explicit(p) | ConfigSource::Etc(p) | ConfigSource::Distribution(p) => {
                Some(p)
            }
            ConfigSource::BuiltIn => None,
        }
    }
}

/// How telempostd talks to the backend (`delivery_mode` key; new in this suite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Choose from the server URL: `/v3/` → V3, `/v1/logs` → Otlp, anything else → V2.
    Auto,
    /// Headers + raw body (the public telemetrics-backend collector).
    V2,
    /// JSON body (`/v3/collector`).
    V3,
    /// OTLP/HTTP JSON logs.
    Otlp,
}

impl DeliveryMode {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Some(DeliveryMode::Auto),
            "v2" => Some(DeliveryMode::V2),
            "v3" => Some(DeliveryMode::V3),
            "otlp" => Some(DeliveryMode::Otlp),
            _ => None,
        }
    }

    /// The config spelling (`auto`, `v2`, `v3`, `otlp`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Auto => "auto",
            DeliveryMode::V2 => "v2",
            DeliveryMode::V3 => "v3",
            DeliveryMode::Otlp => "otlp",
        }
    }

    /// The concrete mode for `server` (resolves `Auto`).
    pub fn resolve(self, server: &str) -> DeliveryMode {
        if self != DeliveryMode::Auto {
            return self;
        }
        let path = url_path(server);
        if path.contains("/v3/") || path.ends_with("/v3") {
            DeliveryMode::V3
        } else if path.trim_end_matches('/').ends_with("/v1/logs") {
            DeliveryMode::Otlp
        } else {
            DeliveryMode::V2
        }
    }
}

/// The path part of a URL (`scheme://host[:port]/path?query` → `/path`).
fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("")
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rate-limit strategy when a record may not be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitStrategy {
    Spool,
    Drop,
}

impl RateLimitStrategy {
    /// The config spelling (`spool`, `drop`).
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitStrategy::Spool => "spool",
            RateLimitStrategy::Drop => "drop",
        }
    }
}

impl fmt::Display for RateLimitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `durability`: when telemprobd acknowledges a record relative to the disk (see
/// telemetrics.conf(5) and `daemon::probd::durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged once the record and its directory entry are flushed.
    Strict,
    /// Acknowledged once complete under its final name; flushed in the background soon.
    #[default]
    Batched,
    /// Acknowledged once complete under its final name; never flushed by the daemon.
    None,
}

impl Durability {
    pub fn parse(value: &str) -> Option<Durability> {
        match value.trim().to_ascii_lowercase().as_str() {
            "strict" => Some(Durability::Strict),
            "batched" => Some(Durability::Batched),
            "none" => Some(Durability::None),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Strict => "strict",
            Durability::Batched => "batched",
            Durability::None => "none",
        }
    }
}

/// `delivery_concurrency`: how telempostd chooses how many requests it keeps in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryConcurrency {
    /// Follow the backend (additive increase, multiplicative decrease), up to
    /// `delivery_max_in_flight`.
    #[default]
    Adaptive,
    /// Always `delivery_max_in_flight`.
    Fixed,
}

impl DeliveryConcurrency {
    pub fn parse(value: &str) -> Option<DeliveryConcurrency> {
        match value.trim().to_ascii_lowercase().as_str() {
            "adaptive" => Some(DeliveryConcurrency::Adaptive),
            "fixed" => Some(DeliveryConcurrency::Fixed),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryConcurrency::Adaptive => "adaptive",
            DeliveryConcurrency::Fixed => "fixed",
        }
    }
}

/// `otlp_compression`: how telempostd compresses OTLP request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpCompression {
    #[default]
    None,
    Gzip,
}

impl OtlpCompression {
    /// The config spelling (`none`, `gzip`).
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpCompression::None => "none",
            OtlpCompression::Gzip => "gzip",
        }
    }
}

impl fmt::Display for OtlpCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value of a telempostd-only key that cannot be used, kept for
/// [`Config::check_delivery`] (as a [`ConfigError::Value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredValueError {
    pub path: PathBuf,
    pub line: usize,
    /// One of [`KNOWN_KEYS`].
    pub key: &'static str,
    pub value: String,
    pub message: String,
}

impl DeferredValueError {
    /// `path:line`, for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.path.display(), self.line)
    }

    pub fn to_error(&self) -> ConfigError {
        ConfigError::Value {
            path: self.path.clone(),
            line: self.line,
            key: self.key.to_string(),
            value: self.value.clone(),
            message: self.message.clone(),
        }
    }
}

/// Something in a config file that is accepted but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A `[settings]` key this suite does not read (C ignored them too).
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        /// The known key it is closest to, when it is a likely misspelling.
        did_you_mean: Option<&'static str>,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownKey {
                path,
                line,
                key,
                did_you_mean,
            } => {
                write!(f, "{}:{line}: unknown key {key:?} ignored", path.display())?;
                if let Some(k) = did_you_mean {
                    write!(f, " (did you mean {k:?}?)")?;
                }
                Ok(())
            }
        }
    }
}

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
    /// Minutes. Negative means "invalid" (see [`Config::check_delivery`]).
    pub record_expiry: i64,
    /// KiB; -1 = unlimited.
    pub spool_max_size: i64,
    /// Seconds, clamped to 120..=300.
    pub spool_process_time: i64,
    /// Minutes, 0..=59, or -1 when the file had an out-of-range value.
    pub record_window_length: i64,
    pub byte_window_length: i64,
    /// `> -1` = enabled.
    pub record_burst_limit: i64,
    pub byte_burst_limit: i64,
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
    /// Unusable values of the keys above, reported by [`Config::check_delivery`].
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
            record_expiry: 1200,
            spool_max_size: 5120,
            spool_process_time: 120,
            record_window_length: 15,
            byte_window_length: 20,
            record_burst_limit: 1000,
            byte_burst_limit: -1,
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
            "record_expiry" => {
                let v = int(e)?;
                self.record_expiry = if v < 0 { -1 } else { v.min(i64::MAX / 60) };
            }
            "spool_max_size" => {
                let v = int(e)?;
                self.spool_max_size = if v < 0 { -1 } else { v.min(i64::MAX / 1024) };
            }
            "spool_process_time" => {
                self.spool_process_time =
                    int(e)?.clamp(SPOOL_PROCESS_TIME_MIN, SPOOL_PROCESS_TIME_MAX)
            }
            "record_window_length" => self.record_window_length = window(int(e)?),
            "byte_window_length" => self.byte_window_length = window(int(e)?),
            "record_burst_limit" => self.record_burst_limit = int(e)?,
            "byte_burst_limit" => self.byte_burst_limit = int(e)?,
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

    /// `spool_max_size` in bytes; `None` = unlimited.
    pub fn spool_quota_bytes(&self) -> Option<u64> {
        u64::try_from(self.spool_max_size)
            .ok()
            .map(|k| k.saturating_mul(1024))
    }

    /// `record_expiry` as a duration; `None` when the file had a negative value (refused by
    /// [`Config::check_delivery`]).
    pub fn record_expiry_duration(&self) -> Option<Duration> {
        u64::try_from(self.record_expiry)
            .ok()
            .map(|m| Duration::from_secs(m.saturating_mul(60)))
    }

    /// `spool_process_time` as a duration (already clamped to 120..=300 s).
    pub fn spool_process_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.spool_process_time).unwrap_or(120))
    }

    /// `record_burst_limit`; `None` = no record limit.
    pub fn record_burst(&self) -> Option<u64> {
        u64::try_from(self.record_burst_limit).ok()
    }

    /// `byte_burst_limit`; `None` = no byte limit.
    pub fn byte_burst(&self) -> Option<u64> {
        u64::try_from(self.byte_burst_limit).ok()
    }

    /// `record_window_length` in minutes; `None` when the file's value was out of 0..=59.
    pub fn record_window_minutes(&self) -> Option<u32> {
        u32::try_from(self.record_window_length).ok()
    }

    /// `byte_window_length` in minutes; `None` when the file's value was out of 0..=59.
    pub fn byte_window_minutes(&self) -> Option<u32> {
        u32::try_from(self.byte_window_length).ok()
    }

    /// Settings telempostd needs in range before it delivers anything. The C daemon found
    /// these on its first delivery and called `exit(1)`.
    pub fn check_delivery(&self) -> Result<(), ConfigError> {
        if self.record_window_length < 0 {
            return Err(ConfigError::Delivery {
                key: "record_window_length",
                message: "must be within 0..59".into(),
            });
        }
        if self.byte_window_length < 0 {
            return Err(ConfigError::Delivery {
                key: "byte_window_length",
                message: "must be within 0..59".into(),
            });
        }
        if self.record_expiry < 0 {
            return Err(ConfigError::Delivery {
                key: "record_expiry",
                message: "must not be negative".into(),
            });
        }
        // crashprobe's and telemprobd's keys are theirs to report: a bad one must not stop
        // delivery.
        if let Some(e) = self.deferred_errors.iter().find(|e| {
            !CRASHPROBE_KEY_PREFIXES.iter().any(|p| e.key.starts_with(p)) && e.key != "durability"
        }) {
            return Err(e.to_error());
        }
        Ok(())
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

fn window(v: i64) -> i64 {
    if (0..=59).contains(&v) {
        v
    } else {
        -1
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

/// `Name: value` → (`Name`, `value`), trimmed, the name an HTTP token and the value only
/// bytes HTTP carries in a header (tab and visible ASCII). telempostd checks `tidheader`
/// and the headers it sends with these too.
pub fn split_header_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    let (name, value) = (name.trim(), value.trim());
    (is_http_token(name) && is_http_header_value(value)).then_some((name, value))
}

/// An HTTP token (a header name).
pub fn is_http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Bytes HTTP allows in a header value (what ureq accepts): tab and visible ASCII.
pub fn is_http_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
}

/// The known key `key` most likely misspells: at most two edits away (or a quarter of its
/// length for long keys), e.g. `delivery_max_inflight` → `delivery_max_in_flight`.
fn closest_known_key(key: &str) -> Option<&'static str> {
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

/// Which file the C client would read (§9 "Which file").
pub fn select_config_file(paths: &Paths, explicit: Option<&Path>) -> ConfigSource {
    if let Some(p) = explicit {
        return ConfigSource::Explicit(p.to_path_buf());
    }
    let etc = paths.etc_config_file();
    if readable(&etc) {
        return ConfigSource::Etc(etc);
    }
    let dist = paths.default_config_file();
    if readable(&dist) {
        return ConfigSource::Distribution(dist);
    }
    ConfigSource::BuiltIn
}

fn readable(p: &Path) -> bool {
    open_nonblocking(p).is_ok()
}

/// Open a configuration file for reading without ever waiting: a FIFO (or a device) at a
/// config path must not hang a probe or the C library's caller. Regular files read the
/// same with `O_NONBLOCK`; a FIFO without a writer reads as empty, one whose writer sends
/// nothing fails with `EAGAIN`.
fn open_nonblocking(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
}

/// `tm_set_config_file` / `-f` checks: absolute, exists, regular file.
pub fn check_config_path(path: &Path) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(ConfigError::NotAbsolute(path.to_path_buf()));
    }
    let md = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(ConfigError::NotRegularFile(path.to_path_buf()));
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = open_nonblocking(path).map_err(io)?;
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_CONFIG_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // Bytes that are not UTF-8 only matter inside values; keep them visible but harmless.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths::default()
    }

    const EXAMPLE: &str = "\
[settings]
server=http://127.0.0.1
cainfo=/tmp/cacert.crt
tidheader=X-Telemetry-TID:\\s6907c830-eed9-4ce9-81ae-76daf8d88f0f
socket_path=/tmp/test_telem_socket
record_expiry=1200
spool_dir=/tmp/spool
spool_max_size=1024
spool_process_time=180
record_burst_limit=100
record_window_length = 15
byte_burst_limit=1000
byte_window_length=20
rate_limit_enabled=true
rate_limit_strategy=spool
daemon_recycling_enabled=true
";

    #[test]
    fn example_conf_values() {
        let c = Config::parse(EXAMPLE, Path::new("example.conf"), &paths()).unwrap();
        assert_eq!(c.server, "http://127.0.0.1");
        assert_eq!(c.cainfo, "/tmp/cacert.crt");
        assert_eq!(c.tidheader, DEFAULT_TIDHEADER);
        assert_eq!(c.socket_path, Path::new("/tmp/test_telem_socket"));
        assert_eq!(c.spool_dir, Path::new("/tmp/spool"));
        assert_eq!(c.record_expiry, 1200);
        assert_eq!(c.spool_max_size, 1024);
        assert_eq!(c.spool_process_time, 180);
        assert_eq!(c.record_burst_limit, 100);
        assert_eq!(c.record_window_length, 15);
        assert_eq!(c.byte_burst_limit, 1000);
        assert_eq!(c.byte_window_length, 20);
        assert!(c.rate_limit_enabled);
        assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Spool);
        assert!(c.daemon_recycling_enabled);
        assert!(!c.record_retention_enabled);
        assert!(c.record_server_delivery_enabled);
    }

    #[test]
    fn missing_keys_take_builtin_defaults() {
        let text = "[settings]\nserver=http://example.com/v2/collector\ncainfo=/x\n";
        let c = Config::parse(text, Path::new("example.2.conf"), &paths()).unwrap();
        let mut expected = Config::defaults(&paths());
        expected.server = "http://example.com/v2/collector".into();
        expected.cainfo = "/x".into();
        expected.raw = c.raw.clone();
        assert_eq!(c, expected);
    }

    #[test]
    fn builtin_defaults_match_the_c_table() {
        let c = Config::defaults(&paths());
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.socket_path, Path::new("/run/telem-0"));
        assert_eq!(c.spool_dir, Path::new("/var/spool/telemetry"));
        assert_eq!(c.cainfo, "");
        assert_eq!(c.record_expiry, 1200);
        assert_eq!(c.spool_max_size, 5120);
        assert_eq!(c.spool_process_time, 120);
        assert_eq!(c.record_window_length, 15);
        assert_eq!(c.byte_window_length, 20);
        assert_eq!(c.record_burst_limit, 1000);
        assert_eq!(c.byte_burst_limit, -1);
        assert!(c.rate_limit_enabled && c.daemon_recycling_enabled);
        assert!(!c.record_retention_enabled && c.record_server_delivery_enabled);
    }

    #[test]
    fn example1_retention_and_no_delivery() {
        let text = format!(
            "{}record_server_delivery_enabled=false\nrecord_retention_enabled=true\n",
            EXAMPLE.replace("spool_process_time=180", "spool_process_time=900")
        );
        let c = Config::parse(&text, Path::new("example.1.conf"), &paths()).unwrap();
        assert!(c.record_retention_enabled);
        assert!(!c.record_server_delivery_enabled);
        assert_eq!(c.spool_process_time, 300, "clamped to 120..300");
    }

    /// Data-driven: (file text, expected error line or None, check on the config).
    fn check(text: &str, expected_err_line: Option<usize>) -> Option<Config> {
        match Config::parse(text, Path::new("t.conf"), &paths()) {
            Ok(c) => {
                assert_eq!(expected_err_line, None, "expected an error for {text:?}");
                Some(c)
            }
            Err(e) => {
                let line = match &e {
                    ConfigError::Syntax { line, .. } | ConfigError::Value { line, .. } => *line,
                    other => panic!("unexpected error {other}"),
                };
                assert_eq!(Some(line), expected_err_line, "{e}");
                assert!(e.to_string().starts_with("t.conf:"), "{e}");
                None
            }
        }
    }

    #[test]
    fn syntax_rules() {
        check("[settings\nserver=x\n", Some(1));
        check("server=x\n", Some(1));
        check("[settings]\n\n# c\n; c\njunk\n", Some(5));
        check("[settings]\n=value\n", Some(2));
        check("[settings]\nrate_limit_enabled=maybe\n", Some(2));
        check("[settings]\nrecord_expiry=12x\n", Some(2));
        check("[settings]\nrecord_expiry=99999999999999999999\n", Some(2));
        let c = check(
            "  [settings]  \n\tserver = a\\sb\\c \n[other]\nserver=z\n[settings]\nsocket_path=/s\n",
            None,
        )
        .unwrap();
        assert_eq!(c.server, "a bc");
        assert_eq!(c.socket_path, Path::new("/s"));
        let c = check("[settings]\nserver=one\nserver=two\nrate_limit_strategy=DROP\nRATE_LIMIT_ENABLED=false\n", None).unwrap();
        assert_eq!(c.server, "two", "last key wins");
        assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Drop);
        assert!(c.rate_limit_enabled, "keys are case-sensitive");
        let c = check("[settings]\nrate_limit_strategy=bogus\nspool_process_time=5\nrecord_window_length=60\nrecord_expiry=-5\nspool_max_size=-9\n", None).unwrap();
        assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Spool);
        assert_eq!(c.spool_process_time, 120);
        assert_eq!(c.record_window_length, -1);
        assert_eq!(c.record_expiry, -1);
        assert_eq!(c.spool_max_size, -1);
        assert!(c.check_delivery().is_err());
        let c = check(
            "[settings]\nrate_limit_enabled=1\ndaemon_recycling_enabled=FALSE\n",
            None,
        )
        .unwrap();
        assert!(c.rate_limit_enabled && !c.daemon_recycling_enabled);
    }

    #[test]
    fn telempostd_keys_are_typed_and_checked_at_delivery() {
        let text = "[settings]\ndelivery_max_in_flight=8\ndelivery_keep_alive=FALSE\n\
otlp_batch_max_records=50\notlp_batch_max_bytes=4096\notlp_linger_ms=0\n\
otlp_compression=GZIP\notlp_headers=Authorization: Bearer abc; X-A: b;\n";
        let c = check(text, None).unwrap();
        assert_eq!(c.delivery_max_in_flight, 8);
        assert!(!c.delivery_keep_alive);
        assert_eq!(c.otlp_batch_max_records, 50);
        assert_eq!(c.otlp_batch_max_bytes, 4096);
        assert_eq!(c.otlp_linger, Duration::ZERO);
        assert_eq!(c.otlp_compression, OtlpCompression::Gzip);
        assert_eq!(
            c.otlp_headers,
            [
                ("Authorization".to_string(), "Bearer abc".to_string()),
                ("X-A".into(), "b".into())
            ]
        );
        assert!(c.warnings.is_empty() && c.check_delivery().is_ok());
        let d = Config::defaults(&paths());
        assert_eq!(
            (
                d.delivery_max_in_flight,
                d.delivery_keep_alive,
                d.otlp_linger
            ),
            (4, true, Duration::from_millis(200))
        );
        // Bad values do not fail the parse (probes only need the socket); telempostd's
        // start-up check names the file and line.
        for (line, expected) in [
            ("delivery_max_in_flight=0", "t.conf:3: invalid value \"0\" for delivery_max_in_flight: expected 1..32"),
            ("delivery_max_in_flight=x", "t.conf:3: invalid value \"x\" for delivery_max_in_flight: expected 1..32"),
            ("delivery_keep_alive=maybe", "t.conf:3: invalid value \"maybe\" for delivery_keep_alive: expected true, false, 1 or 0"),
            ("otlp_batch_max_bytes=100", "t.conf:3: invalid value \"100\" for otlp_batch_max_bytes: expected 4096..67108864"),
            ("otlp_linger_ms=60001", "t.conf:3: invalid value \"60001\" for otlp_linger_ms: expected 0..60000"),
            ("otlp_compression=zstd", "t.conf:3: invalid value \"zstd\" for otlp_compression: expected none or gzip"),
            ("otlp_headers=Bad Name: x", "t.conf:3: invalid value \"Bad Name: x\" for otlp_headers: \"Bad Name: x\" is not a `Name: value` header"),
        ] {
            let c = check(&format!("[settings]\nserver=x\n{line}\n"), None).unwrap();
            assert_eq!(c.check_delivery().unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn unknown_keys_are_accepted_and_reported() {
        let c = check(
            "[settings]\nserver=x\ndelivery_max_inflight=8\nfrobnicate=1\nSERVER=y\n[other]\nzzz=1\n",
            None,
        )
        .unwrap();
        assert_eq!(c.server, "x");
        assert_eq!(c.delivery_max_in_flight, DEFAULT_DELIVERY_MAX_IN_FLIGHT);
        assert_eq!(
            c.raw.get("delivery_max_inflight").map(String::as_str),
            Some("8")
        );
        let shown: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "t.conf:3: unknown key \"delivery_max_inflight\" ignored (did you mean \"delivery_max_in_flight\"?)",
                "t.conf:4: unknown key \"frobnicate\" ignored",
                "t.conf:5: unknown key \"SERVER\" ignored (did you mean \"server\"?)",
            ]
        );
        assert!(c.check_delivery().is_ok());
        assert_eq!(closest_known_key("otlp_header"), Some("otlp_headers"));
        assert_eq!(closest_known_key("record_expiry_days"), None);
    }

    #[test]
    fn typed_views_of_the_c_sentinels() {
        let mut c = Config::defaults(&paths());
        assert_eq!(c.spool_quota_bytes(), Some(5120 * 1024));
        assert_eq!(
            c.record_expiry_duration(),
            Some(Duration::from_secs(1200 * 60))
        );
        assert_eq!(c.spool_process_interval(), Duration::from_secs(120));
        assert_eq!((c.record_burst(), c.byte_burst()), (Some(1000), None));
        assert_eq!(
            (c.record_window_minutes(), c.byte_window_minutes()),
            (Some(15), Some(20))
        );
        c.spool_max_size = -1;
        c.record_expiry = -1;
        c.record_window_length = -1;
        assert_eq!(c.spool_quota_bytes(), None);
        assert_eq!(c.record_expiry_duration(), None);
        assert_eq!(c.record_window_minutes(), None);
        assert_eq!(DeliveryMode::Otlp.to_string(), "otlp");
        for (text, want) in [
            ("strict", Some(Durability::Strict)),
            (" Batched", Some(Durability::Batched)),
            ("NONE", Some(Durability::None)),
            ("fsync", None),
        ] {
            assert_eq!(Durability::parse(text), want, "{text}");
        }
        assert_eq!(DeliveryMode::Auto.as_str(), "auto");
        assert_eq!(RateLimitStrategy::Drop.to_string(), "drop");
        assert_eq!(OtlpCompression::Gzip.as_str(), "gzip");
        for m in [
            DeliveryMode::Auto,
            DeliveryMode::V2,
            DeliveryMode::V3,
            DeliveryMode::Otlp,
        ] {
            assert_eq!(DeliveryMode::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn delivery_mode_from_url() {
        let auto = DeliveryMode::Auto;
        assert_eq!(auto.resolve("https://h/v3/collector"), DeliveryMode::V3);
        assert_eq!(auto.resolve("https://h/v2/collector"), DeliveryMode::V2);
        assert_eq!(auto.resolve("http://127.0.0.1"), DeliveryMode::V2);
        assert_eq!(
            auto.resolve("http://127.0.0.1:4318/v1/logs"),
            DeliveryMode::Otlp
        );
        assert_eq!(
            DeliveryMode::V2.resolve("https://h/v3/collector"),
            DeliveryMode::V2
        );
    }

    #[test]
    fn relative_or_missing_explicit_path_is_rejected() {
        assert!(matches!(
            check_config_path(Path::new("somefile")),
            Err(ConfigError::NotAbsolute(_))
        ));
        let e = check_config_path(Path::new("/nonexistent/telemetrics.conf")).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(matches!(
            check_config_path(Path::new("/")),
            Err(ConfigError::NotRegularFile(_))
        ));
    }

    #[test]
    fn selection_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(dir.path(), "/");
        assert_eq!(select_config_file(&p, None), ConfigSource::BuiltIn);
        std::fs::create_dir_all(p.default_config_file().parent().unwrap()).unwrap();
        std::fs::write(p.default_config_file(), "[settings]\nserver=dist\n").unwrap();
        let (c, s) = Config::load(&p, None).unwrap();
        assert_eq!(
            (c.server.as_str(), s),
            ("dist", ConfigSource::Distribution(p.default_config_file()))
        );
        std::fs::create_dir_all(p.etc_dir()).unwrap();
        std::fs::write(p.etc_config_file(), "[settings]\ncainfo=etc\n").unwrap();
        let (c, _) = Config::load(&p, None).unwrap();
        assert_eq!(c.server, DEFAULT_SERVER, "no merging between files");
        assert_eq!(c.cainfo, "etc");
    }

    #[test]
    fn crashprobe_keys_are_typed_and_a_bad_value_keeps_the_default() {
        let text = "[settings]\ncrashprobe_frames=rich\n\
                    debuginfod_urls=http://a:8002 env https://b/\n\
                    debuginfod_timeout=2\ndebuginfod_cache_max_size=64\n\
                    debuginfod_cache_expiry=600\n";
        let c = Config::parse(text, Path::new("c.conf"), &paths()).unwrap();
        assert_eq!(c.crashprobe_frames, CrashFrames::Rich);
        assert_eq!(
            c.debuginfod_urls
                .resolve(Some("http://e1 ftp://x http://a:8002")),
            ["http://a:8002", "https://b/", "http://e1"]
        );
        assert_eq!(c.debuginfod_timeout, Duration::from_secs(2));
        assert_eq!(c.debuginfod_cache_max_bytes, 64 << 20);
        assert_eq!(c.debuginfod_cache_expiry, Duration::from_secs(600));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let without_env = "[settings]\ndebuginfod_urls=http://a\n";
        let c = Config::parse(without_env, Path::new("c.conf"), &paths()).unwrap();
        assert_eq!(c.debuginfod_urls.resolve(Some("http://e1")), ["http://a"]);

        let defaults = Config::defaults(&paths());
        assert_eq!(defaults.debuginfod_urls, DebuginfodUrls::Off);
        assert!(defaults
            .debuginfod_urls
            .resolve(Some("http://e1"))
            .is_empty());
        assert_eq!(defaults.crashprobe_frames, CrashFrames::Compatible);

        let bad = "[settings]\ncrashprobe_frames=fancy\ndebuginfod_urls=file:///x\n\
                   debuginfod_timeout=60\ndebuginfod_cache_max_size=0\n\
                   debuginfod_cache_expiry=x\n";
        let c = Config::parse(bad, Path::new("c.conf"), &paths()).unwrap();
        assert_eq!(c.crashprobe_frames, defaults.crashprobe_frames);
        assert_eq!(c.debuginfod_urls, DebuginfodUrls::Off);
        assert_eq!(c.debuginfod_timeout, defaults.debuginfod_timeout);
        assert_eq!(
            c.debuginfod_cache_max_bytes,
            defaults.debuginfod_cache_max_bytes
        );
        assert_eq!(c.debuginfod_cache_expiry, defaults.debuginfod_cache_expiry);
        let keys: Vec<_> = c.deferred_errors.iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "crashprobe_frames",
                "debuginfod_urls",
                "debuginfod_timeout",
                "debuginfod_cache_max_size",
                "debuginfod_cache_expiry"
            ]
        );
        // crashprobe's keys never stop delivery.
        c.check_delivery().unwrap();
    }

    #[test]
    fn a_fifo_at_a_config_path_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(dir.path(), "/");
        std::fs::create_dir_all(p.etc_dir()).unwrap();
        let fifo =
            std::ffi::CString::new(p.etc_config_file().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        // In a thread, so a regression fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = p.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Config::load(&paths, None).map(|(c, s)| (c.server, s)));
        });
        let loaded = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("Config::load blocked on a FIFO");
        // No writer: it reads as an empty file, i.e. the built-in defaults.
        let (server, source) = loaded.unwrap();
        assert_eq!(server, DEFAULT_SERVER);
        assert_eq!(source, ConfigSource::Etc(p.etc_config_file()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Lines built from the pieces config files are made of, and some noise.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "[settings]",
                    "[other]",
                    "[settings",
                    "# c",
                    "; c",
                    "",
                    "junk",
                    "=v",
                    "server=http://h/v3/collector",
                    "record_expiry=-5",
                    "record_expiry=12x",
                    "spool_max_size=99999999999999999999",
                    "rate_limit_enabled=maybe",
                    "record_window_length=60",
                    "delivery_mode=otlp",
                    "tidheader=a\\sb",
                ])
                .prop_map(str::to_string),
                "[ -~\t\u{e9}\r]{0,40}",
                ("[a-z_]{1,24}", "[ -~]{0,30}").prop_map(|(k, v)| format!("{k}={v}")),
            ]
        }

        proptest! {
            /// Never panics; every error names a line of the input.
            #[test]
            fn errors_name_a_line_of_the_input(
                lines in proptest::collection::vec(line(), 0..30),
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                for text in [lines.join("\n"), String::from_utf8_lossy(&bytes).into_owned()] {
                    match Config::parse(&text, Path::new("t.conf"), &paths()) {
                        Err(ConfigError::Syntax { line, .. }) | Err(ConfigError::Value { line, .. }) => {
                            prop_assert!(line >= 1 && line <= text.lines().count().max(1), "{}", line);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
