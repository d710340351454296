//! HTTP delivery of one staged record: request building for the v2 (headers) and v3 (JSON)
//! protocols, the keep-alive agents (the worker threads that use them are in
//! `workers`).
//!
//! * v2 (`/v2/collector` or a bare path; what the public telemetrics-backend speaks): POST,
//!   the 15 header lines as HTTP headers verbatim, the `tidheader` line,
//!   `Content-Type: application/text`, body = the staged body (payload + `\n`), sent with a
//!   `Content-Length` (never chunked).
//! * v3 (`/v3/`): POST a compact JSON object, keys = the 15 header names then `payload`, every
//!   value the **full** header value as a string (the C client cut values at the first space
//!   and crashed on empty ones), `Content-Type: application/json`, plus the `tidheader` line.
//! * Connect timeout 5 s, whole request 10 s, no redirects; success iff HTTP 200 or 201.
//! * TLS: rustls with the system roots, or only the certificates of `cainfo` when that file
//!   exists (as curl's `CURLOPT_CAINFO`), read bounded and without blocking
//!   ([`super::trust`]).
//! * One `ureq::Agent` per CA bundle (file identity), shared by the workers, keeps up to
//!   one idle connection per worker, so consecutive records reuse connections. The bundle
//!   is opened, checked and parsed outside the lock that guards the agents, so a file that
//!   is slow to read holds up no other delivery.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtelemetry::config::DeliveryMode;
use libtelemetry::record::HEADER_NAMES;
use libtelemetry::staged::StagedSender;
use libtelemetry::{Config, Paths, StagedRecord};

use super::otlp::{OtlpSettingError, OtlpSettings};
use super::trust::{open_checked, OverrideError, Trust, MAX_CAINFO_SIZE};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (to return the connection to the pool).
const MAX_RESPONSE_BODY: u64 = 64 * 1024;

/// Where and how one record is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    pub mode: DeliveryMode,
    /// The `tidheader` line split at its first `:`.
    pub tid_name: String,
    pub tid_value: String,
    /// CA bundle replacing the system roots.
    pub cainfo: Option<PathBuf>,
    /// Batching, compression and extra headers (OTLP mode only).
    pub otlp: Option<OtlpSettings>,
    /// Whose configuration this is: the daemon's, or a sender's `CFG:` override (whose
    /// files are followed only as [`Trust::Sender`] allows and whose values are never
    /// echoed in logs or the status file).
    pub trust: Trust,
    /// The `CFG:` file this target comes from (an override), for messages.
    pub override_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("tidheader {0:?} is not a `Name: value` header line")]
    TidHeader(String),
    #[error("server URL {0:?} is not an http:// or https:// URL")]
    Server(String),
    #[error("{0}")]
    Otlp(#[from] OtlpSettingError),
}

impl Target {
    /// The target a config describes (server, delivery mode, tidheader, cainfo).
    pub fn from_config(c: &Config) -> Result<Target, TargetError> {
        let (name, value) = split_header_line(&c.tidheader)
            .ok_or_else(|| TargetError::TidHeader(c.tidheader.clone()))?;
        let lower = c.server.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(TargetError::Server(c.server.clone()));
        }
        let mode = c.effective_delivery_mode();
        let otlp = match mode {
            DeliveryMode::Otlp => Some(OtlpSettings::from_config(c)?),
            _ => None,
        };
        Ok(Target {
            server: c.server.clone(),
            mode,
            tid_name: name.to_string(),
            tid_value: value.to_string(),
            cainfo: c.cainfo_path().map(Path::to_path_buf),
            otlp,
            trust: Trust::Daemon,
            override_path: None,
        })
    }

    /// A sender's `CFG:` override.
    pub fn is_override(&self) -> bool {
        self.trust != Trust::Daemon
    }
}

pub use super::http::{is_token, split_header_line, valid_header_value};

/// `v` as a v2 HTTP header value: every character HTTP (and ureq) cannot carry — non-ASCII
/// text such as a DMI vendor string, or a control character in a file staged by another
/// telemprobd — becomes `?`. Lossy, but the record is delivered; refusing it would leave
/// it in the spool until it expires. (v3 and OTLP carry the exact text.)
pub fn v2_header_value(v: &str) -> std::borrow::Cow<'_, str> {
    if valid_header_value(v) {
        return v.into();
    }
    v.chars()
        .map(|c| {
            if c == '\t' || (' '..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect::<String>()
        .into()
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request could not be built (a record-level failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("cannot compress the request: {0}")]
    Compression(String),
}

/// The v2 request: 15 headers verbatim, tidheader, `Content-Type: application/text`, body.
pub fn v2_request(target: &Target, staged: &StagedRecord) -> Result<HttpRequest, BuildError> {
    let mut headers = Vec::with_capacity(17);
    for (name, value) in HEADER_NAMES.iter().zip(staged.headers.0.iter()) {
        headers.push((name.to_string(), v2_header_value(value).into_owned()));
    }
    headers.push((target.tid_name.clone(), target.tid_value.clone()));
    headers.push(("Content-Type".into(), "application/text".into()));
    Ok(HttpRequest {
        headers,
        body: staged.body.clone(),
    })
}

/// The v3 JSON body: keys in record order then `payload`, every value a string.
pub fn v3_body(staged: &StagedRecord) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(512 + staged.body.len() * 2);
    out.push('{');
    for (i, (name, value)) in HEADER_NAMES.iter().zip(staged.headers.0.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json(name));
        out.push(':');
        out.push_str(&json(value));
    }
    out.push_str(",\"payload\":");
    out.push_str(&json(&String::from_utf8_lossy(&staged.body)));
    out.push('}');
    out.into_bytes()
}

/// The v3 request.
pub fn v3_request(target: &Target, staged: &StagedRecord) -> HttpRequest {
    HttpRequest {
        headers: vec![
            (target.tid_name.clone(), target.tid_value.clone()),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: v3_body(staged),
    }
}

/// The OTLP request for a batch: `ExportLogsServiceRequest` JSON, gzipped when configured,
/// with the configured extra headers (the `tidheader` line is the telemetrics-backend's and
/// is not sent).
pub fn otlp_request(target: &Target, records: &[&StagedRecord]) -> Result<HttpRequest, BuildError> {
    let json = super::otlp::encode_logs(records, std::time::SystemTime::now());
    otlp_request_with_body(target, json)
}

/// The OTLP request carrying `json` (an `ExportLogsServiceRequest`).
pub fn otlp_request_with_body(target: &Target, json: Vec<u8>) -> Result<HttpRequest, BuildError> {
    let settings = target.otlp.clone().unwrap_or_default();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let body = if settings.gzip {
        headers.push(("Content-Encoding".into(), "gzip".into()));
        super::otlp::gzip(&json).map_err(|e| BuildError::Compression(e.to_string()))?
    } else {
        json
    };
    headers.extend(settings.headers.iter().cloned());
    Ok(HttpRequest { headers, body })
}

/// The request for `target`'s mode.
pub fn build_request(target: &Target, staged: &StagedRecord) -> Result<HttpRequest, BuildError> {
    match target.mode {
        DeliveryMode::V3 => Ok(v3_request(target, staged)),
        DeliveryMode::V2 | DeliveryMode::Auto => v2_request(target, staged),
        DeliveryMode::Otlp => otlp_request(target, &[staged]),
    }
}

/// Result of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP 200 or 201.
    Accepted(u16),
    /// Any other HTTP status.
    Status(u16),
    /// 429 or 503 (or, in OTLP mode, 502/504): retry, not before `Retry-After` if given.
    Throttled(u16, Option<Duration>),
    /// No HTTP answer: connection, TLS, timeout.
    Transport(String),
    /// The record (or its override) cannot be sent as it is.
    Invalid(String),
}

impl Outcome {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted(_))
    }

    /// True when the backend as a whole is to blame (back off everything), false when only
    /// this record is.
    pub fn is_global_failure(&self) -> bool {
        match self {
            Outcome::Accepted(_) | Outcome::Invalid(_) => false,
            Outcome::Transport(_) | Outcome::Throttled(..) => true,
            Outcome::Status(s) => *s >= 500 || *s == 429 || *s == 408,
        }
    }

    /// The wait the backend asked for (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Throttled(_, after) => *after,
            _ => None,
        }
    }

    /// An OTLP answer that must not be retried (4xx other than 408 and 429).
    pub fn is_otlp_permanent(&self) -> bool {
        matches!(self, Outcome::Status(s) if (400..500).contains(s) && *s != 408 && *s != 429)
    }

    /// For logs and the status file, e.g. `HTTP 201`.
    pub fn detail(&self) -> String {
        match self {
            Outcome::Accepted(s) | Outcome::Status(s) | Outcome::Throttled(s, _) => {
                format!("HTTP {s}")
            }
            Outcome::Transport(e) => e.clone(),
            Outcome::Invalid(e) => format!("invalid record: {e}"),
        }
    }
}

/// Agents kept at most (one per CA bundle in use); past it the cache starts over.
const MAX_AGENTS: usize = 16;

/// The identity of a CA bundle file as `fstat` saw it: a changed file gets a new agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CaKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl CaKey {
    fn of(md: &std::fs::Metadata) -> CaKey {
        CaKey {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        }
    }
}

thread_local! {
    /// Set when the resolver ran on this thread: the request in progress opened a new
    /// connection (ureq resolves only to connect; a pooled connection needs no lookup).
    static CONNECTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The standard resolver, noting on the calling thread that a connection is being opened.
struct NotingResolver;

impl ureq::Resolver for NotingResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
        CONNECTED.with(|c| c.set(true));
        std::net::ToSocketAddrs::to_socket_addrs(netloc).map(Iterator::collect)
    }
}

/// Whether `t` says the connection was closed or reset before a response arrived.
fn closed_before_response(t: &ureq::Transport) -> bool {
    use std::error::Error;
    if t.kind() != ureq::ErrorKind::Io {
        return false;
    }
    t.source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        })
}

type AgentKey = (Option<CaKey>, bool);

/// Stale reused connections in a row after which a server is taken to close every
/// connection after answering (uWSGI's `http-socket` without `Connection: close`).
const STALE_STREAK: u32 = 3;
/// How long such a server then gets a new connection per request (no reuse to fail),
/// before reuse is tried again.
const STALE_BACKOFF: Duration = Duration::from_secs(60);
/// Servers tracked.
const MAX_REUSE_ENTRIES: usize = 64;

/// Per server: stale reuses in a row, and until when reuse is off.
#[derive(Default)]
struct ReuseTracker {
    servers: Mutex<HashMap<String, (u32, Option<std::time::Instant>)>>,
}

impl ReuseTracker {
    fn allows(&self, server: &str, now: std::time::Instant) -> bool {
        let map = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let off_until = map.get(server).and_then(|(_, until)| *until);
        !matches!(off_until, Some(t) if now < t)
    }

    /// A reuse succeeded (`ok`) or met a stale connection; true when reuse was just
    /// turned off for the server.
    fn note(&self, server: &str, ok: bool, now: std::time::Instant) -> bool {
        let mut map = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            if let Some(e) = map.get_mut(server) {
                e.0 = 0;
            }
            return false;
        }
        if !map.contains_key(server) && map.len() >= MAX_REUSE_ENTRIES {
            map.clear();
        }
        let e = map.entry(server.to_string()).or_default();
        e.0 += 1;
        if e.0 >= STALE_STREAK {
            e.0 = 0;
            e.1 = Some(now + STALE_BACKOFF);
            return true;
        }
        false
    }
}

/// Sends requests; keeps one agent (connection pool) per CA bundle.
///
/// Stale keep-alive connections: a server may close an idle connection (its keep-alive
/// timeout, or uWSGI closing after every answer without `Connection: close`) just as a
/// request goes out on it. A request that fails that way (reset, closed) on a **reused**
/// connection is sent again at once on a new connection, as HTTP clients do, and only the
/// outcome of that second try counts: no failure, no backoff. A request that fails on a
/// connection it opened itself is not retried here. A server whose reused connections
/// turn out stale [`STALE_STREAK`] times in a row (it closes after every answer) gets a new
/// connection per request for [`STALE_BACKOFF`], then reuse is tried again.
pub struct HttpSender {
    agents: Mutex<HashMap<AgentKey, ureq::Agent>>,
    keep_alive: bool,
    pool_size: usize,
    stale_retries: std::sync::atomic::AtomicU64,
    reuse: ReuseTracker,
}

impl HttpSender {
    /// `pool_size`: idle connections kept per host (the number of workers);
    /// `keep_alive` false opens a new connection for every request.
    pub fn new(pool_size: usize, keep_alive: bool) -> HttpSender {
        HttpSender {
            agents: Mutex::new(HashMap::new()),
            keep_alive,
            pool_size: pool_size.max(1),
            stale_retries: std::sync::atomic::AtomicU64::new(0),
            reuse: ReuseTracker::default(),
        }
    }

    /// Requests sent again on a new connection after a stale kept-alive one failed.
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock_agents(&self) -> std::sync::MutexGuard<'_, HashMap<AgentKey, ureq::Agent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent for `target`'s CA setting; `pooled` false: one that keeps no connection
    /// (every request on a new one). The bundle is opened (checked as the target's trust
    /// says), read and parsed outside the lock; the lock only guards the map.
    fn agent(&self, target: &Target, pooled: bool) -> Result<ureq::Agent, String> {
        let ca = match &target.cainfo {
            None => None,
            Some(path) => Some(
                open_checked(path, target.trust, MAX_CAINFO_SIZE)
                    .map_err(|e| format!("cainfo {}: {e}", path.display()))?,
            ),
        };
        let key = (ca.as_ref().map(|f| CaKey::of(&f.metadata)), pooled);
        if let Some(a) = self.lock_agents().get(&key) {
            return Ok(a.clone());
        }
        let idle = if self.keep_alive && pooled {
            self.pool_size
        } else {
            0
        };
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirects(0)
            .max_idle_connections(idle * 4)
            .max_idle_connections_per_host(idle)
            .try_proxy_from_env(true)
            .resolver(NotingResolver)
            .user_agent(concat!("telempostd/", env!("CARGO_PKG_VERSION")));
        if let (Some(f), Some(path)) = (ca, &target.cainfo) {
            let pem = f
                .read(MAX_CAINFO_SIZE)
                .map_err(|e| format!("cainfo {}: {e}", path.display()))?;
            b = b.tls_config(
                tls_config_from_pem(&pem).map_err(|e| format!("cainfo {}: {e}", path.display()))?,
            );
        }
        let agent = b.build();
        let mut agents = self.lock_agents();
        if agents.len() >= MAX_AGENTS {
            agents.retain(|k, _| k.0.is_none());
        }
        Ok(agents.entry(key).or_insert(agent).clone())
    }

    /// Drop the agents (and their idle connections), e.g. after a config reload.
    pub fn reset(&self) {
        self.lock_agents().clear();
    }

    /// POST `staged` to `target`.
    pub fn post(&self, target: &Target, staged: &StagedRecord) -> Outcome {
        let req = match build_request(target, staged) {
            Ok(r) => r,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        self.send(target, &req)
    }

    /// POST a prepared request.
    pub fn send(&self, target: &Target, req: &HttpRequest) -> Outcome {
        let agent = match self.agent(target, true) {
            Ok(a) => a,
            Err(e) => return Outcome::Invalid(e),
        };
        // A header of ours HTTP cannot carry is the record's fault; checked here, so that a
        // header error ureq reports after this one is about the response (more than 100
        // header fields, a malformed line): the backend's.
        if let Some((name, _)) = req
            .headers
            .iter()
            .find(|(n, v)| !is_token(n) || !valid_header_value(v))
        {
            return Outcome::Invalid(format!("header {name} cannot be sent over HTTP"));
        }
        // ureq's error type is large; it lives only for this call.
        #[allow(clippy::result_large_err)]
        let post = |agent: &ureq::Agent| {
            let mut r = agent.post(&target.server);
            for (name, value) in &req.headers {
                r = r.set(name, value);
            }
            CONNECTED.with(|c| c.set(false));
            r.send_bytes(&req.body)
        };
        let reuse = self.keep_alive && self.reuse.allows(&target.server, Instant::now());
        let mut result = if reuse {
            post(&agent)
        } else {
            match self.agent(target, false) {
                Ok(fresh) => post(&fresh),
                Err(e) => return Outcome::Invalid(e),
            }
        };
        let reused = reuse && !CONNECTED.with(std::cell::Cell::get);
        if reused && result.is_ok() {
            self.reuse.note(&target.server, true, Instant::now());
        }
        if let Err(ureq::Error::Transport(t)) = &result {
            if reused && closed_before_response(t) {
                self.stale_retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.reuse.note(&target.server, false, Instant::now()) {
                    let shown = if target.is_override() {
                        "an override's server"
                    } else {
                        "the backend"
                    };
                    tracing::info!(
                        "{shown} closes kept-alive connections after answering; a new \
                         connection per request for {:?}",
                        STALE_BACKOFF
                    );
                }
                tracing::debug!(
                    "a kept-alive connection was stale ({}); sending again on a new one",
                    t.kind()
                );
                match self.agent(target, false) {
                    Ok(fresh) => result = post(&fresh),
                    Err(e) => return Outcome::Invalid(e),
                }
            }
        }
        let otlp = target.mode == DeliveryMode::Otlp;
        let answer = |status: u16, resp: ureq::Response| {
            let retry_after = resp
                .header("retry-after")
                .and_then(super::http::parse_retry_after);
            let body = drain(resp);
            let throttling = matches!(status, 429 | 503) || (otlp && matches!(status, 502 | 504));
            if status == 200 || status == 201 {
                if otlp {
                    if let Some((n, msg)) = super::otlp::partial_success(&body) {
                        tracing::warn!(
                            "the OTLP backend rejected {n} log records of a batch: {msg}"
                        );
                    }
                }
                Outcome::Accepted(status)
            } else if throttling {
                Outcome::Throttled(status, retry_after)
            } else {
                Outcome::Status(status)
            }
        };
        match result {
            Ok(resp) => answer(resp.status(), resp),
            Err(ureq::Error::Status(status, resp)) => answer(status, resp),
            Err(ureq::Error::Transport(t)) => {
                // ureq's message names the URL: an override's server is not echoed.
                let detail = if let Some(path) = &target.override_path {
                    format!("{} (configuration override {})", t.kind(), path.display())
                } else {
                    t.to_string()
                };
                Outcome::Transport(detail)
            }
        }
    }
}

/// Read (a bounded amount of) the response body, which also returns the connection to the
/// pool.
fn drain(resp: ureq::Response) -> Vec<u8> {
    use std::io::Read;
    let mut body = Vec::new();
    let _ = resp
        .into_reader()
        .take(MAX_RESPONSE_BODY)
        .read_to_end(&mut body);
    body
}

/// A rustls config trusting only the certificates in the PEM file `path` (the daemon's own
/// `cainfo`, read bounded and without blocking).
pub fn tls_config_from_cainfo(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = open_checked(path, Trust::Daemon, MAX_CAINFO_SIZE)
        .and_then(|f| f.read(MAX_CAINFO_SIZE))
        .map_err(|e| format!("cainfo {}: {e}", path.display()))?;
    tls_config_from_pem(&pem).map_err(|e| format!("cainfo {}: {e}", path.display()))
}

/// A rustls config trusting only the certificates of a PEM bundle.
pub fn tls_config_from_pem(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no PEM certificates found".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The target of a record: `default`, or the one of the record's `CFG:` file (server,
/// cainfo, tidheader and delivery mode all come from that file; the C client took only the
/// server), followed as [`super::trust`] says for the record's sender. An unusable override
/// is an error, never a silent fallback; errors name the config path, never its values.
pub fn target_for(
    staged: &StagedRecord,
    sender: StagedSender,
    default: &Arc<Target>,
    paths: &Paths,
) -> Result<Arc<Target>, OverrideError> {
    let Some(path) = &staged.cfg_path else {
        return Ok(Arc::clone(default));
    };
    let trust = Trust::Sender(sender);
    let load = || -> Result<Target, OverrideError> {
        let cfg = super::trust::load_override(path, sender, paths)?;
        let mut target = Target::from_config(&cfg).map_err(|e| {
            OverrideError::Unusable(match e {
                TargetError::TidHeader(_) => "tidheader is not a `Name: value` line".into(),
                TargetError::Server(_) => "server is not an http:// or https:// URL".into(),
                TargetError::Otlp(o) => format!("invalid {}", o.key),
            })
        })?;
        target.trust = trust;
        target.override_path = Some(path.clone());
        if let Some(ca) = &target.cainfo {
            // Checked now so that a CA bundle that may not be followed quarantines the
            // record; the agent checks the file again when it opens it.
            open_checked(ca, trust, MAX_CAINFO_SIZE)
                .map_err(|e| tag(e, &format!("its cainfo {}", ca.display())))?;
        }
        Ok(target)
    };
    load()
        .map(Arc::new)
        .map_err(|e| tag(e, &format!("configuration override {}", path.display())))
}

fn tag(e: OverrideError, what: &str) -> OverrideError {
    match e {
        OverrideError::Refused(m) => OverrideError::Refused(format!("{what}: {m}")),
        OverrideError::Unusable(m) => OverrideError::Unusable(format!("{what}: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libtelemetry::record::Headers;

    pub(crate) fn staged(body: &[u8]) -> StagedRecord {
        let values = [
            "4",
            "org.test/probe/one",
            "3",
            "5768134ac73df19cbf582da092628002",
            "1795614028",
            "x86_64",
            "no_sv_file|no_pn_file|no_pvr_file",
            "\"12\"",
            "6.18.44-fc-v669",
            "1",
            "debian",
            "no_bn_file|no_bv_file",
            "Intel(R) Xeon(R) Processor",
            "",
            "096e3e10a02b5091cfc31c84ed814c73",
        ];
        let mut h = Headers::default();
        for (i, v) in values.iter().enumerate() {
            h.0[i] = v.to_string();
        }
        StagedRecord {
            cfg_path: None,
            headers: h,
            body: body.to_vec(),
        }
    }

    fn target(mode: DeliveryMode) -> Target {
        let mut c = Config::defaults(&libtelemetry::Paths::default());
        c.server = "http://127.0.0.1:1/v2/collector".into();
        c.delivery_mode = mode;
        Target::from_config(&c).unwrap()
    }

    #[test]
    fn v3_golden_body_has_full_values() {
        let body = v3_body(&staged(b"line1\nline2\n"));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            concat!(
                r#"{"record_format_version":"4","classification":"org.test/probe/one","severity":"3","#,
                r#""machine_id":"5768134ac73df19cbf582da092628002","creation_timestamp":"1795614028","#,
                r#""arch":"x86_64","host_type":"no_sv_file|no_pn_file|no_pvr_file","build":"\"12\"","#,
                r#""kernel_version":"6.18.44-fc-v669","payload_format_version":"1","system_name":"debian","#,
                r#""board_name":"no_bn_file|no_bv_file","cpu_model":"Intel(R) Xeon(R) Processor","#,
                r#""bios_version":"","event_id":"096e3e10a02b5091cfc31c84ed814c73","payload":"line1\nline2\n"}"#
            )
        );
        let r = v3_request(&target(DeliveryMode::V3), &staged(b"x\n"));
        assert_eq!(
            r.headers,
            vec![
                (
                    "X-Telemetry-TID".to_string(),
                    "6907c830-eed9-4ce9-81ae-76daf8d88f0f".to_string()
                ),
                ("Content-Type".into(), "application/json".into())
            ]
        );
    }

    #[test]
    fn v2_golden_headers() {
        let r = v2_request(&target(DeliveryMode::V2), &staged(b"hello\n")).unwrap();
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected: Vec<&str> = HEADER_NAMES.to_vec();
        expected.extend(["X-Telemetry-TID", "Content-Type"]);
        assert_eq!(names, expected);
        assert_eq!(r.headers[12].1, "Intel(R) Xeon(R) Processor");
        assert_eq!(r.headers[16].1, "application/text");
        assert_eq!(r.body, b"hello\n");
        // Text HTTP cannot carry is sent as `?`, not refused.
        let mut odd = staged(b"x\n");
        odd.headers.0[6] = "caf\u{e9}|\u{2013}\r|x\ty".into();
        let r = v2_request(&target(DeliveryMode::V2), &odd).unwrap();
        assert_eq!(r.headers[6].1, "caf?|??|x\ty");
    }

    #[test]
    fn targets_and_outcomes() {
        let mut c = Config::defaults(&libtelemetry::Paths::default());
        assert_eq!(Target::from_config(&c).unwrap().mode, DeliveryMode::V3);
        c.tidheader = "no colon".into();
        assert!(matches!(
            Target::from_config(&c),
            Err(TargetError::TidHeader(_))
        ));
        c.tidheader = "X-A:  b ".into();
        c.server = "ftp://x".into();
        assert!(matches!(
            Target::from_config(&c),
            Err(TargetError::Server(_))
        ));
        assert_eq!(split_header_line("X-A:  b "), Some(("X-A", "b")));
        assert_eq!(split_header_line("X A: b"), None);
        assert!(Outcome::Transport("refused".into()).is_global_failure());
        assert!(Outcome::Status(503).is_global_failure());
        assert!(!Outcome::Status(400).is_global_failure());
        assert!(!Outcome::Invalid("x".into()).is_global_failure());
        assert!(tls_config_from_cainfo(Path::new("/nonexistent")).is_err());
    }

    /// A loopback server that answers each of `answers` (status line and headers) to one
    /// request, then closes.
    fn answering(answers: Vec<&'static str>) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((conn, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(conn);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let mut conn = reader.into_inner();
                let _ = write!(
                    conn,
                    "{answer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        format!("http://{addr}/v2/collector")
    }

    #[test]
    fn answers_become_outcomes_with_their_retry_after() {
        let server = answering(vec![
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 9",
            "HTTP/1.1 429 Too Many Requests",
            "HTTP/1.1 500 Internal Server Error\r\nRetry-After: 9",
            "HTTP/1.1 201 Created",
            "HTTP/1.1 502 Bad Gateway\r\nRetry-After: 3",
            "HTTP/1.1 502 Bad Gateway",
        ]);
        let sender = HttpSender::new(1, false);
        let mut t = target(DeliveryMode::V2);
        t.server = server;
        let post = |t: &Target| sender.post(t, &staged(b"x\n"));
        assert_eq!(
            post(&t),
            Outcome::Throttled(503, Some(Duration::from_secs(9)))
        );
        assert_eq!(post(&t), Outcome::Throttled(429, None));
        assert_eq!(post(&t), Outcome::Status(500), "not throttling");
        assert_eq!(post(&t), Outcome::Accepted(201));
        // 502 throttles an OTLP backend (the OTLP spec's retryable codes), not a v2 one.
        let mut otlp = t.clone();
        otlp.mode = DeliveryMode::Otlp;
        otlp.otlp = Some(OtlpSettings::from_config(&Config::defaults(&Paths::default())).unwrap());
        let batch = otlp_request(&otlp, &[&staged(b"x\n")]).unwrap();
        assert_eq!(
            sender.send(&otlp, &batch),
            Outcome::Throttled(502, Some(Duration::from_secs(3)))
        );
        assert_eq!(post(&t), Outcome::Status(502));
    }
}
