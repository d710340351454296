//! The typed values of `[settings]` keys that are more than a number, a string or a switch,
//! and the HTTP header syntax `tidheader` and `otlp_headers` share with telempostd.

use std::fmt;

/// A value the file gave outside its key's range (a negative `record_expiry`, a window length
/// outside 0..59). The C client kept it as −1 and telempostd exited on its first delivery;
/// here [`Config::check_delivery`](super::Config::check_delivery) refuses it at start-up,
/// and probes, which never read these keys, are not affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

/// A rate-limit window, in minutes: 0..=59, the C daemon's 60 one-minute slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowMinutes(pub(super) u8);

impl WindowMinutes {
    /// The longest window.
    pub const MAX: WindowMinutes = WindowMinutes(59);

    /// `minutes` as a window, if it is within 0..=59.
    pub fn new(minutes: u32) -> Option<WindowMinutes> {
        u8::try_from(minutes)
            .ok()
            .filter(|m| *m <= Self::MAX.0)
            .map(WindowMinutes)
    }

    pub fn minutes(self) -> u8 {
        self.0
    }

    /// The file's value: out of 0..=59 (negative included) is [`OutOfRange`].
    pub(super) fn from_config(value: i64) -> Result<WindowMinutes, OutOfRange> {
        u32::try_from(value)
            .ok()
            .and_then(WindowMinutes::new)
            .ok_or(OutOfRange)
    }
}

/// One of telempostd's two rate limits: `record_burst_limit` with `record_window_length`,
/// or `byte_burst_limit` with `byte_window_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Most records (or bytes) sent within the window; `None` = this limit is off (a
    /// negative value in the file).
    pub burst: Option<u64>,
    /// The window, checked even when the limit is off, as the C daemon did.
    pub window: Result<WindowMinutes, OutOfRange>,
}

impl RateLimit {
    /// `burst` per `window` (`None`: no limit).
    pub fn new(burst: Option<u64>, window: WindowMinutes) -> RateLimit {
        RateLimit {
            burst,
            window: Ok(window),
        }
    }
}

/// The numbers the C library's getters returned for the keys whose C values carry
/// sentinels: −1 = unlimited (`spool_max_size`), off (a burst limit) or out of range
/// (`record_expiry`, a window length). Only for output that must show C's numbers
/// (`telemctl status`) or a C ABI; Rust code uses [`Config`](super::Config)'s typed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CNumbers {
    /// Minutes.
    pub record_expiry: i64,
    /// KiB.
    pub spool_max_size: i64,
    /// Seconds, 120..=300.
    pub spool_process_time: i64,
    /// Minutes, 0..=59.
    pub record_window_length: i64,
    /// Minutes, 0..=59.
    pub byte_window_length: i64,
    pub record_burst_limit: i64,
    pub byte_burst_limit: i64,
}

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
    pub(super) fn parse(value: &str) -> Result<DebuginfodUrls, String> {
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
    pub(super) fn parse(s: &str) -> Option<Self> {
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
/// telemetrics.conf(5) and `probd::durability`).
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
