//! telempostd: delivers staged records to the backend.
//!
//! One thread owns all state and runs an event loop over a single channel fed by the inotify
//! watcher ([`pickup`]), a signalfd reader, and a fixed pool of delivery workers
//! ([`delivery`]; ureq is blocking, so parallelism comes from threads sharing keep-alive
//! agents). Each turn of the loop: pick up new files, expire, dispatch the oldest ready
//! records within the rate limits ([`ratelimit`]) and the backend gate ([`spool`]), enforce
//! the quota; journal entries ([`journal`]), spool syncs and the status file ([`counters`])
//! go to a writer thread ([`persist`]) so the loop never waits on fsync.
//!
//! Architecture Invariant: a spooled file is deleted only after the backend answered 200/201
//! for it, or by an explicit, counted and logged policy: expiry (`expired`), quota
//! (`evicted`), the `drop` rate-limit strategy (`dropped`), delivery disabled (`local`), or
//! quarantine (`quarantined`, moved rather than deleted).

pub mod cli;
pub mod concurrency;
pub mod counters;
pub mod delivery;
pub mod http;
pub mod journal;
mod lanes;
pub mod logsummary;
pub mod otlp;
pub mod persist;
pub mod pickup;
pub mod ratelimit;
pub mod spool;
pub mod trust;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::config::{check_config_path, ConfigSource, RateLimitStrategy};
use libtelemetry::status::{
    now_secs, COUNTER_DELIVERED, COUNTER_DROPPED, COUNTER_EVICTED, COUNTER_EXPIRED,
    COUNTER_FAILED_ATTEMPTS, COUNTER_QUARANTINED, COUNTER_SPOOLED,
};
use libtelemetry::{parse_staged, Config, ConfigError, Paths, StagedRecord};

use concurrency::{AdaptiveLimit, ConcurrencyMode, Signal};
use counters::{Counters, COUNTER_LOCAL};
use delivery::{
    Completion, HttpSender, ItemResult, Job, JobResult, Outcome, Target, TargetError, Workers,
};
use persist::Persister;
use pickup::{PickupError, WatchEvent};
use ratelimit::{RateLimiter, RateVerdict};
use spool::{backoff_delay, BackendGate, Blame, GateState, Spool};

pub use cli::Options;

/// Idle time after which the daemon exits when `daemon_recycling_enabled` is set and the
/// spool is empty (the `.path` unit starts it again when a record is staged).
pub const IDLE_EXIT: Duration = Duration::from_secs(300);
/// Test-only override of [`IDLE_EXIT`], in (fractional) seconds. Not a configuration
/// interface: the integration tests use it to see recycling without waiting five minutes.
pub const IDLE_EXIT_ENV: &str = "TELEMETRICS_POSTD_IDLE_SECS";
/// Records in flight at once unless `delivery_max_in_flight` says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = libtelemetry::config::DEFAULT_DELIVERY_MAX_IN_FLIGHT;
/// Upper bound of `delivery_max_in_flight` (checked by `Config::check_delivery`).
pub const MAX_IN_FLIGHT_LIMIT: usize =
    *libtelemetry::config::DELIVERY_MAX_IN_FLIGHT_RANGE.end() as usize;
/// A file found by a scan (not by a close/rename event) is left alone until its mtime is
/// this old, so a record the C telemprobd is still writing in place is not read half-done.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the in-flight POSTs after SIGTERM (each is bounded by 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Unlinks are made durable (spool dir fsync) at most this late.
const DIR_SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// After this long with an empty spool and no new record, memory used by the busy period
/// is given back (see [`Postd::release_memory`]).
const RELEASE_MEMORY_IDLE: Duration = Duration::from_secs(5);

/// Errors that stop telempostd: at start-up (exit status 1) or while running (exit status
/// [`EXIT_RUNTIME_FAILURE`], so that systemd sees a failed unit, never a clean stop).
#[derive(Debug, thiserror::Error)]
pub enum PostdError {
    #[error("Configuration file path not valid: {0}")]
    ConfigPath(ConfigError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("invalid {key} value {value:?}: {message}")]
    Setting {
        key: &'static str,
        value: String,
        message: String,
    },
    #[error("spool directory {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// New records would no longer be seen.
    #[error("lost the watch on the spool directory: {0}")]
    WatchLost(String),
    #[error("the delivery workers are gone")]
    WorkersGone,
}

/// Exit status after a failure while running (the spool watch lost, the workers gone).
pub const EXIT_RUNTIME_FAILURE: u8 = 2;

impl PostdError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PostdError::WatchLost(_) | PostdError::WorkersGone => EXIT_RUNTIME_FAILURE,
            _ => 1,
        }
    }
}

/// The whole program: parse `args` (with argv0), run, map errors to exit codes.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    daemon_common::cli::main(args, "telempostd", cli::usage, |opts| {
        daemon_common::logging::init("telempostd");
        match run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// Settings derived from a config, checked.
#[derive(Debug, Clone)]
struct Settings {
    cfg: Config,
    target: Arc<Target>,
    max_in_flight: usize,
    keep_alive: bool,
    /// `delivery_concurrency`: adaptive (up to `max_in_flight`) or fixed.
    concurrency: ConcurrencyMode,
    /// `record_expiry` (checked non-negative at start-up).
    expiry: Duration,
    /// Bytes; `None` = unlimited.
    quota: Option<u64>,
    /// Backoff cap and rescan interval (`spool_process_time`).
    cap: Duration,
}

impl Settings {
    fn from_config(cfg: Config) -> Result<Settings, PostdError> {
        cfg.check_delivery()?;
        let target = Target::from_config(&cfg)?;
        let max_in_flight = cfg.delivery_max_in_flight;
        let keep_alive = cfg.delivery_keep_alive;
        let concurrency = cfg.delivery_concurrency;
        Ok(Settings {
            target: Arc::new(target),
            max_in_flight,
            keep_alive,
            concurrency,
            expiry: cfg.record_expiry.unwrap_or_default(),
            quota: cfg.spool_max_bytes,
            cap: cfg.spool_process_time,
            cfg,
        })
    }
}

/// Everything the event loop waits for.
enum Event {
    /// An event of the watch of this generation.
    Watch(u64, WatchEvent),
    Signal(i32),
    Done(Box<Completion>),
}

/// Start-up (§5.1, fixed): config (invalid windows/expiry are fatal here, not on the first
/// delivery), spool dir, signals, the watch, the workers; then the loop.
pub fn run(opts: Options) -> Result<(), PostdError> {
    let paths = Paths::from_env();
    if let Some(p) = &opts.config_file {
        check_config_path(p).map_err(PostdError::ConfigPath)?;
    }
    let (cfg, source) = Config::load(&paths, opts.config_file.as_deref())?;
    daemon_common::logging::warn_config(&cfg);
    let settings = Settings::from_config(cfg)?;
    let spool_dir = settings.cfg.spool_dir.clone();
    create_spool_dir(&spool_dir).map_err(|source| PostdError::Spool {
        path: spool_dir.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<Event>();
    // Signals are blocked before any thread starts, so every thread inherits the mask and
    // they arrive only through the signalfd.
    spawn_signal_thread(tx.clone()).map_err(|source| PostdError::Setup {
        what: "signal handling",
        source,
    })?;
    let watcher = pickup::spawn_watcher(&spool_dir, tx.clone(), |ev| Event::Watch(0, ev));
    let watcher = watcher.map_err(|source| PostdError::Setup {
        what: "the inotify watch on the spool directory",
        source,
    })?;
    let sender = Arc::new(HttpSender::new(settings.max_in_flight, settings.keep_alive));
    let workers = Workers::start(
        "deliver",
        settings.max_in_flight,
        Arc::clone(&sender),
        tx.clone(),
        |c| Event::Done(Box::new(c)),
    )
    .map_err(|source| PostdError::Setup {
        what: "delivery workers",
        source,
    })?;
    let lane_workers = Workers::start(
        "lane",
        lanes::MAX_LANES,
        Arc::clone(&sender),
        tx.clone(),
        |c| Event::Done(Box::new(c)),
    )
    .map_err(|source| PostdError::Setup {
        what: "delivery workers",
        source,
    })?;
    let source_text = match &source {
        ConfigSource::BuiltIn => "built-in defaults".to_string(),
        other => other
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    };
    tracing::info!(
        "telempostd {} starting: config {source_text}, server {} ({:?}), spool {}",
        libtelemetry::VERSION,
        settings.target.server,
        settings.target.mode,
        spool_dir.display()
    );
    let persist =
        Persister::start(&paths, settings.cfg.record_retention_enabled).map_err(|source| {
            PostdError::Setup {
                what: "the journal and status writer",
                source,
            }
        })?;
    let idle_exit = std::env::var(IDLE_EXIT_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(IDLE_EXIT, Duration::from_secs_f64);
    let now = Instant::now();
    let settings_concurrency = settings.concurrency;
    let settings_max_in_flight = settings.max_in_flight;
    let postd = Postd {
        persist,
        counters: Counters::restored(&paths),
        rate: RateLimiter::from_config(&settings.cfg),
        paths_shared: Arc::new(paths.clone()),
        paths,
        config_file: opts.config_file,
        spool_dir_shared: Arc::new(spool_dir.clone()),
        spool_dir,
        settings,
        spool: Spool::new(),
        gate: BackendGate::default(),
        rate_gate: None,
        jobs_in_flight: 0,
        adaptive: AdaptiveLimit::new(settings_concurrency, settings_max_in_flight, now),
        held_senders: std::collections::HashMap::new(),
        record_log: logsummary::RecordLog::new(now),
        lanes: lanes::Lanes::default(),
        lane_workers,
        linger_since: None,
        sender,
        workers,
        started: now,
        last_activity: now,
        idle_exit,
        next_rescan: now,
        shutting_down: None,
        ignored: HashSet::new(),
        busy_since_release: false,
        dir_sync: None,
        failure: None,
        watcher: Some(watcher),
        watch_generation: 0,
        pending_spool_dir: None,
        previous_spool_dirs: Vec::new(),
        tx,
    };
    postd.run(rx)
}

/// Create the spool dir (and its parents) when it does not exist.
fn create_spool_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).create(dir)
}

fn spawn_signal_thread(tx: mpsc::Sender<Event>) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::SignalFd;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(std::io::Error::from)?;
    let sfd = SignalFd::new(&mask).map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            match sfd.read_signal() {
                Ok(Some(info)) => {
                    if tx.send(Event::Signal(info.ssi_signo as i32)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        })?;
    Ok(())
}

struct Postd {
    paths: Paths,
    paths_shared: Arc<Paths>,
    config_file: Option<PathBuf>,
    spool_dir: PathBuf,
    spool_dir_shared: Arc<PathBuf>,
    settings: Settings,
    spool: Spool,
    gate: BackendGate,
    /// Rate-limited (spool strategy): dispatch nothing before this instant.
    rate_gate: Option<Instant>,
    /// Jobs handed to the workers and not completed.
    jobs_in_flight: usize,
    /// How many of them the default backend is given at once.
    adaptive: AdaptiveLimit,
    /// Unprivileged senders whose share of the rate limit is used up, until when (their
    /// new records wait too).
    held_senders: std::collections::HashMap<u32, Instant>,
    /// Per-record warnings, bounded per interval.
    record_log: logsummary::RecordLog,
    /// Delivery lanes of records whose override names another server, and their workers.
    lanes: lanes::Lanes,
    lane_workers: Workers,
    /// OTLP: since when ready records wait for a fuller batch.
    linger_since: Option<Instant>,
    rate: RateLimiter,
    sender: Arc<HttpSender>,
    workers: Workers,
    persist: Persister,
    counters: Counters,
    started: Instant,
    last_activity: Instant,
    idle_exit: Duration,
    next_rescan: Instant,
    /// Set by SIGTERM/SIGINT: the deadline for the in-flight POSTs.
    shutting_down: Option<Instant>,
    /// Files that could be neither read nor quarantined; left alone until restart.
    ignored: HashSet<String>,
    /// Unlinks not yet made durable, and when they must be.
    dir_sync: Option<Instant>,
    /// Records were handled since memory was last given back.
    busy_since_release: bool,
    /// Why the daemon is stopping, when that is a failure (the exit status says so).
    failure: Option<PostdError>,
    /// The watch on `spool_dir`, and its generation (events of a stopped watch are ignored).
    watcher: Option<pickup::Watcher>,
    watch_generation: u64,
    /// A new `spool_dir` from SIGHUP, used once the jobs in flight have finished.
    pending_spool_dir: Option<PathBuf>,
    /// Spool dirs used before a SIGHUP changed `spool_dir`: records still appearing there
    /// are moved into the current one at each rescan.
    previous_spool_dirs: Vec<PathBuf>,
    /// For new watches; also keeps the channel open even if every producer thread ends.
    tx: mpsc::Sender<Event>,
}

impl Postd {
    fn run(mut self, rx: mpsc::Receiver<Event>) -> Result<(), PostdError> {
        self.rescan(Instant::now());
        daemon_common::notify::notify("READY=1");
        loop {
            let now = Instant::now();
            self.maintain(now);
            if self.should_exit(now) {
                break;
            }
            let wait = self
                .next_deadline(now)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    self.handle(ev);
                    while let Ok(ev) = rx.try_recv() {
                        self.handle(ev);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        daemon_common::notify::notify("STOPPING=1");
        self.record_log.flush(Instant::now());
        self.sync_dir();
        self.persist.status(self.counters.snapshot());
        if !self.persist.finish(SHUTDOWN_GRACE) {
            tracing::warn!("the journal and status writer did not finish in time");
        }
        tracing::info!(
            "telempostd exiting: {} delivered, {} in the spool",
            self.counters.get(COUNTER_DELIVERED),
            self.spool.len()
        );
        self.failure.map_or(Ok(()), Err)
    }

    /// A uniform 0.0..1.0 spreading retries (fastrand's generator, seeded per thread).
    fn jitter(&mut self) -> f64 {
        fastrand::f64()
    }

    /// Minutes since start: the rate limiter's clock (monotonic).
    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs() / 60
    }

    fn next_minute(&self, now: Instant) -> Instant {
        self.started + Duration::from_secs((self.minute(now) + 1) * 60)
    }

    fn maintain(&mut self, now: Instant) {
        if self.pending_spool_dir.is_some()
            && self.jobs_in_flight == 0
            && self.lanes.jobs_in_flight() == 0
        {
            self.switch_spool_dir(now);
        }
        if now >= self.next_rescan {
            self.rescan(now);
        }
        self.spool.promote(now);
        self.expire();
        self.dispatch(now);
        self.enforce_quota();
        if self.dir_sync.is_some_and(|t| t <= now) {
            self.sync_dir();
        }
        if self.record_log.deadline().is_some_and(|t| t <= now) {
            self.record_log.flush(now);
        }
        if let Some(st) = self.counters.due(now) {
            self.persist.status(st);
        }
        if let Some(at) = self.memory_release_due() {
            if at <= now {
                self.release_memory();
            }
        }
    }

    /// When memory should be given back: once the spool has been empty and quiet for
    /// [`RELEASE_MEMORY_IDLE`] after records were handled.
    fn memory_release_due(&self) -> Option<Instant> {
        (self.busy_since_release && self.spool.is_empty())
            .then(|| self.last_activity + RELEASE_MEMORY_IDLE)
    }

    /// A drained backlog of many records leaves the index's capacity and the allocator's
    /// free pages behind (the workers' threads each have an arena); give them back so the
    /// daemon returns to its idle footprint instead of keeping its peak.
    fn release_memory(&mut self) {
        self.busy_since_release = false;
        self.spool.shrink_to_fit();
        self.ignored.shrink_to_fit();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
        // pointers and is thread-safe in glibc.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn should_exit(&mut self, now: Instant) -> bool {
        if let Some(deadline) = self.shutting_down {
            if self.spool.in_flight() == 0 {
                return true;
            }
            if now >= deadline {
                tracing::warn!(
                    "exiting with {} deliveries unfinished; their records stay in the spool",
                    self.spool.in_flight()
                );
                return true;
            }
            return false;
        }
        if self.settings.cfg.daemon_recycling_enabled
            && self.spool.is_empty()
            && now.saturating_duration_since(self.last_activity) >= self.idle_exit
        {
            tracing::info!("Daemon exiting for recycling");
            return true;
        }
        false
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut d = now + Duration::from_secs(60);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                d = d.min(t);
            }
        };
        consider(Some(self.next_rescan));
        consider(self.spool.next_wakeup());
        if let GateState::Closed(t) = self.gate.state(now) {
            consider(Some(t));
        }
        consider(self.rate_gate);
        consider(self.lanes.next_reopening(now));
        consider(self.record_log.deadline());
        if let (Some(since), Some(o)) = (self.linger_since, &self.settings.target.otlp) {
            consider(Some(since + o.linger));
        }
        consider(self.counters.deadline());
        consider(self.dir_sync);
        consider(self.shutting_down);
        consider(self.memory_release_due());
        if self.settings.cfg.daemon_recycling_enabled && self.spool.is_empty() {
            consider(Some(self.last_activity + self.idle_exit));
        }
        d
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            // A stopped watch (the spool dir changed): the sweep of the previous dirs at
            // each rescan catches what it would have seen.
            Event::Watch(generation, _) if generation != self.watch_generation => {}
            Event::Watch(_, WatchEvent::File(name)) => {
                self.last_activity = now;
                self.pick(&name, true);
            }
            Event::Watch(_, WatchEvent::Overflow) => {
                tracing::warn!("inotify queue overflow; rescanning the spool");
                self.rescan(now);
            }
            Event::Watch(_, WatchEvent::Lost(why)) if self.pending_spool_dir.is_some() => {
                tracing::warn!(
                    "lost the watch on the previous spool directory ({why}); the new one \
                     is used once the deliveries in flight finish"
                );
            }
            Event::Watch(_, WatchEvent::Lost(why)) => {
                tracing::error!("lost the watch on the spool directory ({why}); exiting");
                self.failure.get_or_insert(PostdError::WatchLost(why));
                self.shutting_down.get_or_insert(now + SHUTDOWN_GRACE);
                self.workers.set_paused(true);
                self.lane_workers.set_paused(true);
            }
            Event::Signal(sig) if sig == libc::SIGHUP => self.reload(),
            Event::Signal(sig) => {
                if self.shutting_down.is_some() {
                    tracing::warn!("second termination signal; exiting now");
                    self.shutting_down = Some(now);
                } else {
                    tracing::info!(
                        "signal {sig}: finishing {} deliveries in flight, then exiting",
                        self.spool.in_flight()
                    );
                    self.shutting_down = Some(now + SHUTDOWN_GRACE);
                }
                // Only the POSTs already started are finished.
                self.workers.set_paused(true);
                self.lane_workers.set_paused(true);
            }
            Event::Done(c) => self.complete(*c, now),
        }
    }

    // --- pickup ----------------------------------------------------------------------

    /// Learn of `name`. `closed` = seen by a close/rename event, so complete.
    fn pick(&mut self, name: &str, closed: bool) {
        if self.ignored.contains(name) {
            return;
        }
        match pickup::inspect(&self.spool_dir, name) {
            Ok(info) => {
                let now = Instant::now();
                let mut ready_at = if closed {
                    None
                } else {
                    let age = SystemTime::now()
                        .duration_since(info.mtime)
                        .unwrap_or(Duration::ZERO);
                    (age < SETTLE).then(|| now + (SETTLE - age))
                };
                self.held_senders.retain(|_, until| *until > now);
                if let Some(until) =
                    spool::unprivileged_sender(name).and_then(|uid| self.held_senders.get(&uid))
                {
                    ready_at = Some(ready_at.map_or(*until, |t| t.max(*until)));
                }
                if self
                    .spool
                    .upsert(name, info.created, info.size, info.len, ready_at)
                {
                    tracing::debug!("picked up {name} ({} bytes)", info.len);
                }
            }
            Err(PickupError::Vanished) => self.forget(name),
            Err(e) if e.is_permanent() => self.quarantine(OsStr::new(name), &e.to_string()),
            Err(e) => tracing::warn!("cannot inspect {name}: {e}"),
        }
    }

    fn forget(&mut self, name: &str) {
        if self
            .spool
            .get(name)
            .is_some_and(|e| e.state != spool::EntryState::InFlight)
        {
            self.spool.remove(name);
        }
    }

    /// Reconcile the index with the directory (start-up, overflow, every
    /// `spool_process_time`).
    fn rescan(&mut self, now: Instant) {
        self.next_rescan = now + self.settings.cap;
        self.sweep_previous_spool_dirs(false);
        let names = match pickup::scan(&self.spool_dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cannot scan {}: {e}", self.spool_dir.display());
                return;
            }
        };
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .spool
            .names()
            .filter(|n| !present.contains(n))
            .map(str::to_string)
            .collect();
        for n in gone {
            self.forget(&n);
        }
        for n in &names {
            if self.spool.get(n).is_none() {
                self.pick(n, false);
            }
        }
    }

    fn quarantine(&mut self, name: &OsStr, reason: &str) {
        let shown = name.to_string_lossy().into_owned();
        match pickup::quarantine(&self.spool_dir, name) {
            Ok(to) => {
                self.log_failure(&format!(
                    "quarantined {shown} ({reason}) as {}",
                    to.display()
                ));
                self.counters.add(COUNTER_QUARANTINED, 1);
            }
            Err(e) => {
                tracing::error!("cannot quarantine {shown} ({reason}): {e}; ignoring it");
                self.ignored.insert(shown.clone());
            }
        }
        self.spool.remove(&shown);
    }

    /// Read and parse a record for sending; on failure the record has been dealt with
    /// (quarantined, forgotten or backed off).
    fn load(&mut self, name: &str, now: Instant) -> Option<(StagedRecord, u64)> {
        match pickup::read(&self.spool_dir, name) {
            Ok((bytes, _)) => match parse_staged(&bytes) {
                Ok(s) => Some((s, bytes.len() as u64)),
                Err(e) => {
                    self.quarantine(OsStr::new(name), &format!("cannot parse: {e}"));
                    None
                }
            },
            Err(PickupError::Vanished) => {
                self.spool.remove(name);
                None
            }
            Err(e) if e.is_permanent() => {
                self.quarantine(OsStr::new(name), &e.to_string());
                None
            }
            Err(e) => {
                tracing::warn!("cannot read {name}: {e}");
                let delay = backoff_delay(1, self.settings.cap, self.jitter());
                self.spool.requeue(name, Some(now + delay));
                None
            }
        }
    }

    // --- delivery --------------------------------------------------------------------

    fn dispatch(&mut self, now: Instant) {
        // While switching spool dirs, the jobs in flight finish and no new one starts.
        if self.shutting_down.is_some() || self.pending_spool_dir.is_some() {
            return;
        }
        if !self.settings.cfg.record_server_delivery_enabled {
            self.keep_local(now);
            return;
        }
        self.dispatch_default(now);
        self.dispatch_lanes(now);
    }

    /// Records for the default backend, behind its gate.
    fn dispatch_default(&mut self, now: Instant) {
        let workers = self.settings.max_in_flight.min(self.workers.count());
        let max = match self.settings.concurrency {
            // Twice as many jobs queued as POSTs at once: a worker finds its next job
            // waiting.
            ConcurrencyMode::Fixed => 2 * workers,
            // As many as the backend takes now.
            ConcurrencyMode::Adaptive => self.adaptive.limit().min(workers),
        };
        loop {
            if self.jobs_in_flight >= max {
                break;
            }
            let probing = match self.gate.state(now) {
                GateState::Closed(_) => break,
                GateState::HalfOpen if self.jobs_in_flight > 0 => break,
                GateState::HalfOpen => true,
                GateState::Open => false,
            };
            self.workers.set_paused(false);
            if let Some(t) = self.rate_gate {
                if now < t {
                    break;
                }
                self.rate_gate = None;
            }
            if self.spool.oldest_ready().is_none() {
                self.linger_since = None;
                break;
            }
            let (max_records, max_bytes) = match &self.settings.target.otlp {
                None => (1, u64::MAX),
                Some(o) => (o.max_records, o.max_bytes as u64),
            };
            if let (Some(o), false) = (&self.settings.target.otlp, probing) {
                // A batch that is not full waits for the linger time.
                if !self.batch_is_full(max_records, max_bytes) {
                    let since = *self.linger_since.get_or_insert(now);
                    if now < since + o.linger {
                        break;
                    }
                }
            }
            self.linger_since = None;
            let candidates: Vec<String> = if probing {
                // One record tells whether the backend is back.
                self.spool.probe().map(str::to_string).into_iter().collect()
            } else {
                self.spool
                    .ready_names()
                    .take(max_records)
                    .map(str::to_string)
                    .collect()
            };
            let records = self.take_batch(now, candidates, max_bytes);
            if probing {
                if let Some((name, _)) = records.first() {
                    self.spool.mark_probe(name);
                }
            }
            if records.is_empty() {
                if self.rate_gate.is_some() {
                    break;
                }
                continue;
            }
            let job = Job {
                records,
                spool_dir: Arc::clone(&self.spool_dir_shared),
                target: Arc::clone(&self.settings.target),
                paths: Arc::clone(&self.paths_shared),
                lane: None,
            };
            let names: Vec<(String, u64)> = job.records.clone();
            self.adaptive.on_start(self.jobs_in_flight);
            if !self.workers.submit(job) {
                tracing::error!("delivery workers are gone");
                self.failure.get_or_insert(PostdError::WorkersGone);
                let minute = self.minute(now);
                for (name, size) in names {
                    self.rate
                        .finish_for(minute, size, false, spool::unprivileged_sender(&name));
                    self.spool.requeue(&name, None);
                }
                self.shutting_down = Some(now);
                break;
            }
            self.jobs_in_flight += 1;
        }
    }

    /// Enough ready records (or bytes) for a full OTLP batch, or a record at the head that
    /// goes alone.
    fn batch_is_full(&self, max_records: usize, max_bytes: u64) -> bool {
        let mut bytes = 0u64;
        let mut n = 0;
        for name in self.spool.ready_names() {
            let Some(e) = self.spool.get(name) else {
                continue;
            };
            if e.own_fault {
                return true;
            }
            n += 1;
            bytes += otlp::estimated_size(e.len);
            if n >= max_records || bytes >= max_bytes {
                return true;
            }
        }
        false
    }

    /// Take `candidates` (ready records, in order) for one job, up to roughly `max_bytes`,
    /// within the rate limits: each is reserved and marked in flight. A rate-limited record
    /// is dropped (`drop`) or stops the batch and dispatching until the next minute
    /// (`spool`). A record blamed for its own last failure goes alone, so in a batching mode
    /// it cannot keep failing the records batched with it.
    fn take_batch(
        &mut self,
        now: Instant,
        candidates: Vec<String>,
        max_bytes: u64,
    ) -> Vec<(String, u64)> {
        let batching = candidates.len() > 1;
        let minute = self.minute(now);
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        for name in candidates {
            let Some((size, alone)) = self
                .spool
                .get(&name)
                .filter(|e| e.state == spool::EntryState::Ready)
                .map(|e| (e.len, e.own_fault))
            else {
                continue;
            };
            let alone = alone && batching;
            if alone && !batch.is_empty() {
                break;
            }
            let estimate = otlp::estimated_size(size);
            if !batch.is_empty() && bytes + estimate > max_bytes {
                break;
            }
            let uid = spool::unprivileged_sender(&name);
            let verdict = self.rate.check(minute, size, uid);
            if verdict != RateVerdict::Allowed {
                match self.settings.cfg.rate_limit_strategy {
                    RateLimitStrategy::Drop => {
                        if let Some((staged, _)) = self.load(&name, now) {
                            self.log_failure(&format!("rate limit reached: dropping {name}"));
                            self.remove_file(&name);
                            self.counters.add(COUNTER_DROPPED, 1);
                            self.persist.journal(staged, now_secs());
                        }
                        continue;
                    }
                    RateLimitStrategy::Spool => {
                        if let (RateVerdict::Sender, Some(uid)) = (verdict, uid) {
                            // Only this sender waits; the others go on.
                            let until = self.next_minute(now);
                            self.held_senders.insert(uid, until);
                            let newly = self.spool.hold_sender(uid, until);
                            self.counters.add(COUNTER_SPOOLED, newly);
                            tracing::info!(
                                "uid {uid} used its share of the rate limit: its records \
                                 stay in the spool until the next minute"
                            );
                            continue;
                        }
                        let newly = self.spool.mark_ready_spooled();
                        self.counters.add(COUNTER_SPOOLED, newly);
                        tracing::info!(
                            "rate limit reached: {} records stay in the spool",
                            self.spool.len() - self.spool.in_flight()
                        );
                        self.rate_gate = Some(self.next_minute(now));
                        break;
                    }
                }
            }
            self.rate.reserve_for(size, uid);
            self.spool.start(&name);
            bytes += estimate;
            batch.push((name, size));
            if alone {
                break;
            }
        }
        batch
    }

    /// `record_server_delivery_enabled=false`: journal, retain, delete.
    fn keep_local(&mut self, now: Instant) {
        self.spool.unlane_ready();
        while let Some(name) = self.spool.oldest_ready().map(str::to_string) {
            let Some((staged, _)) = self.load(&name, now) else {
                continue;
            };
            self.remove_file(&name);
            self.counters.add(COUNTER_LOCAL, 1);
            self.persist.journal(staged, now_secs());
        }
    }

    fn complete(&mut self, c: Completion, now: Instant) {
        self.last_activity = now;
        self.busy_since_release = true;
        if let Some(lane) = c.lane.clone() {
            self.complete_lane(&lane, c, now);
            return;
        }
        self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1);
        // One POST, one verdict on the backend, however many records it carried.
        let failed = |i: &&ItemResult| match &i.result {
            JobResult::Posted { outcome, .. } => outcome.is_global_failure(),
            _ => false,
        };
        let throttled = c.items.iter().any(|i| {
            matches!(
                &i.result,
                JobResult::Posted {
                    outcome: Outcome::Throttled(..),
                    ..
                }
            )
        });
        let posted = c
            .items
            .iter()
            .any(|i| matches!(i.result, JobResult::Posted { .. }));
        if posted {
            let backpressure = c.items.iter().any(|i| {
                matches!(
                    &i.result,
                    JobResult::Posted {
                        outcome: Outcome::Throttled(..) | Outcome::Transport(_),
                        ..
                    }
                )
            });
            let signal = if backpressure {
                Signal::Backpressure
            } else {
                Signal::Answered
            };
            let before = self.adaptive.limit();
            self.adaptive.on_response(now, c.elapsed, signal);
            if self.adaptive.limit() != before {
                tracing::debug!(
                    "requests in flight to the backend: at most {} (was {before}; last took {:?})",
                    self.adaptive.limit(),
                    c.elapsed
                );
            }
        }
        let blame = if !c.items.iter().any(|i| failed(&i)) {
            Blame::Record
        } else if throttled {
            // The backend asked to slow down.
            Blame::Backend
        } else {
            self.spool
                .blame(c.items.iter().filter(failed).map(|i| i.name.as_str()), true)
        };
        let failures = c.items.iter().filter(failed).count();
        if failures > 0 {
            self.spool.note_backend_failure();
        }
        // A batch that fails while the backend takes other records carries a poisoned
        // record: its records are retried alone at once, which isolates it.
        let split = blame == Blame::Record && failures > 1;
        let mut gate_bumped = false;
        for item in c.items {
            self.complete_item(item, c.elapsed, now, (blame, split), &mut gate_bumped);
        }
    }

    /// `blame`: whom a backend-wide failure of this POST is blamed on, and whether it was
    /// a batch to split.
    fn complete_item(
        &mut self,
        item: ItemResult,
        elapsed: Duration,
        now: Instant,
        (blame, split): (Blame, bool),
        gate_bumped: &mut bool,
    ) {
        let minute = self.minute(now);
        let name = item.name;
        let (outcome, staged, remove_error) = match item.result {
            JobResult::Posted {
                outcome,
                staged,
                remove_error,
            } => (outcome, staged, remove_error),
            other => {
                self.rate
                    .finish_for(minute, item.size, false, spool::unprivileged_sender(&name));
                match other {
                    JobResult::Vanished => {
                        self.spool.remove(&name);
                    }
                    JobResult::Quarantine(reason) => {
                        self.quarantine(OsStr::new(&name), &reason);
                    }
                    JobResult::Unreadable(e) => {
                        tracing::warn!("cannot read {name}: {e}");
                        let delay = backoff_delay(1, self.settings.cap, self.jitter());
                        self.spool.requeue(&name, Some(now + delay));
                    }
                    JobResult::Skipped | JobResult::Deferred => self.spool.requeue(&name, None),
                    JobResult::Rerouted(lane) => {
                        if lane.is_some() {
                            // The lane is the override's server: not echoed.
                            tracing::debug!(
                                "{name} goes to the delivery lane of its override's server"
                            );
                        }
                        self.spool.set_lane(&name, lane);
                        self.spool.requeue(&name, None);
                    }
                    JobResult::Posted { .. } => {}
                }
                return;
            }
        };
        let accepted = outcome.is_accepted();
        self.rate.finish_for(
            minute,
            item.size,
            accepted,
            spool::unprivileged_sender(&name),
        );
        if !accepted {
            let (blame, split) = if outcome.is_global_failure() {
                (blame, split)
            } else {
                (Blame::Record, false)
            };
            self.record_failure(&name, &outcome, now, blame, split, !*gate_bumped);
            *gate_bumped |= blame == Blame::Backend;
            return;
        }
        self.spool.delivered(&name);
        self.note_delivered(&name, &outcome, *staged, remove_error, elapsed);
        if self.gate.on_success() {
            tracing::info!("backend reachable again; sending the spool");
        }
    }

    /// Trouble with one record, for the log (bounded: see [`logsummary`]).
    fn log_failure(&mut self, message: &str) {
        self.record_log.warn(Instant::now(), message);
    }

    /// Count, journal and log a delivered record (already out of the index).
    fn note_delivered(
        &mut self,
        name: &str,
        outcome: &Outcome,
        staged: StagedRecord,
        remove_error: Option<String>,
        elapsed: Duration,
    ) {
        tracing::debug!("delivered {name} ({}, {elapsed:?})", outcome.detail());
        match remove_error {
            None => {
                self.dir_sync
                    .get_or_insert_with(|| Instant::now() + DIR_SYNC_INTERVAL);
            }
            Some(e) => {
                // Never send it twice: leave it alone until restart.
                tracing::error!("cannot delete delivered {name}: {e}; ignoring it");
                self.ignored.insert(name.to_string());
            }
        }
        self.counters.add(COUNTER_DELIVERED, 1);
        self.counters.last_delivery(true, outcome.detail());
        self.persist.journal(staged, now_secs());
    }

    /// A failed attempt on `name`, blamed on `blame`; `split`: retry it alone at once;
    /// `bump_gate` false when the same POST already closed the backend gate (an OTLP batch).
    fn record_failure(
        &mut self,
        name: &str,
        outcome: &Outcome,
        now: Instant,
        blame: Blame,
        split: bool,
        bump_gate: bool,
    ) {
        self.counters.add(COUNTER_FAILED_ATTEMPTS, 1);
        self.counters.last_delivery(false, outcome.detail());
        if blame == Blame::Backend && bump_gate {
            let j = self.jitter();
            self.gate
                .on_failure_after(now, self.settings.cap, j, outcome.retry_after());
            // Jobs queued behind this one come back unsent.
            self.workers.set_paused(true);
        }
        let attempts = self.spool.get(name).map_or(0, |e| e.attempts) + 1;
        let j = self.jitter();
        let backoff = if split {
            Duration::ZERO
        } else {
            backoff_delay(attempts, self.settings.cap, j)
        };
        if !self.spool.fail(name, blame, now, backoff) {
            self.counters.add(COUNTER_SPOOLED, 1);
        }
        let message = match blame {
            Blame::Backend => format!(
                "delivery of {name} failed ({}); attempt {attempts}, kept in the spool",
                outcome.detail()
            ),
            Blame::Record => format!(
                "delivery of {name} failed ({}); attempt {attempts}, kept in the spool and \
                 retried on its own in {backoff:.1?}",
                outcome.detail()
            ),
        };
        self.log_failure(&message);
    }

    // --- policies --------------------------------------------------------------------

    fn expire(&mut self) {
        for name in self.spool.expired(SystemTime::now(), self.settings.expiry) {
            self.log_failure(&format!(
                "{name} expired after {} minutes in the spool; deleting it",
                self.settings.expiry.as_secs() / 60
            ));
            self.remove_file(&name);
            self.counters.add(COUNTER_EXPIRED, 1);
        }
    }

    fn enforce_quota(&mut self) {
        let Some(limit) = self.settings.quota else {
            return;
        };
        for name in self.spool.over_quota(limit) {
            self.log_failure(&format!(
                "spool over spool_max_size ({} KiB); evicting {name}",
                limit / 1024
            ));
            self.remove_file(&name);
            self.counters.add(COUNTER_EVICTED, 1);
        }
    }

    /// Delete a record's file and forget it.
    fn remove_file(&mut self, name: &str) {
        self.spool.remove(name);
        match std::fs::remove_file(self.spool_dir.join(name)) {
            Ok(()) => {
                self.dir_sync
                    .get_or_insert_with(|| Instant::now() + DIR_SYNC_INTERVAL);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // Never send it twice: leave it alone until restart.
                tracing::error!("cannot delete {name}: {e}; ignoring it from now on");
                self.ignored.insert(name.to_string());
            }
        }
    }

    fn sync_dir(&mut self) {
        if self.dir_sync.take().is_some() {
            self.persist.sync_dir(self.spool_dir.clone());
        }
    }

    // --- SIGHUP ----------------------------------------------------------------------

    fn reload(&mut self) {
        let result = Config::load(&self.paths, self.config_file.as_deref())
            .map_err(PostdError::from)
            .and_then(|(cfg, _)| Settings::from_config(cfg));
        let mut new = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("configuration reload failed, keeping the previous one: {e}");
                return;
            }
        };
        self.pending_spool_dir = None;
        if new.cfg.spool_dir != self.spool_dir {
            match create_spool_dir(&new.cfg.spool_dir) {
                Ok(()) => {
                    tracing::info!(
                        "spool_dir is now {}: switching once {} deliveries in flight finish",
                        new.cfg.spool_dir.display(),
                        self.spool.in_flight()
                    );
                    self.pending_spool_dir = Some(new.cfg.spool_dir.clone());
                }
                Err(e) => {
                    tracing::error!(
                        "cannot use the new spool_dir {}: {e}; keeping {}",
                        new.cfg.spool_dir.display(),
                        self.spool_dir.display()
                    );
                    new.cfg.spool_dir = self.spool_dir.clone();
                }
            }
        }
        if new.max_in_flight > self.workers.count() || new.keep_alive != self.settings.keep_alive {
            tracing::warn!(
                "delivery_max_in_flight above {} and delivery_keep_alive take effect at the next start",
                self.workers.count()
            );
        }
        self.adaptive
            .set_max(new.concurrency, new.max_in_flight.min(self.workers.count()));
        let mut rate = RateLimiter::from_config(&new.cfg);
        rate.inherit(&self.rate);
        self.rate = rate;
        self.persist.set_retention(new.cfg.record_retention_enabled);
        self.sender.reset();
        self.next_rescan = Instant::now();
        self.settings = new;
        tracing::info!("configuration reloaded");
    }
}

impl Postd {
    /// Use the `spool_dir` a reload named (no job in flight): watch it, move the records
    /// left in the previous one into it (same names, same creation times), and rebuild the
    /// index from a scan. If the new dir cannot be watched, the previous one stays in use.
    fn switch_spool_dir(&mut self, now: Instant) {
        let Some(new) = self.pending_spool_dir.take() else {
            return;
        };
        let generation = self.watch_generation + 1;
        let watcher = match pickup::spawn_watcher(&new, self.tx.clone(), move |ev| {
            Event::Watch(generation, ev)
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot watch the new spool_dir {}: {e}; keeping {}",
                    new.display(),
                    self.spool_dir.display()
                );
                self.settings.cfg.spool_dir = self.spool_dir.clone();
                return;
            }
        };
        if let Some(old) = self.watcher.replace(watcher) {
            old.stop();
        }
        self.watch_generation = generation;
        // Unlinks in the previous dir are made durable before it is left.
        self.sync_dir();
        let previous = std::mem::replace(&mut self.spool_dir, new.clone());
        self.spool_dir_shared = Arc::new(new.clone());
        self.previous_spool_dirs.retain(|d| *d != new);
        if !self.previous_spool_dirs.contains(&previous) {
            self.previous_spool_dirs.push(previous);
        }
        self.spool = Spool::new();
        self.ignored.clear();
        self.linger_since = None;
        tracing::info!("now watching the spool_dir {}", new.display());
        self.sweep_previous_spool_dirs(true);
        self.rescan(now);
    }

    /// Move records found in previous spool dirs into the current one: those left at the
    /// switch, and any a telemprobd that had not reloaded yet staged there since. Records
    /// that cannot be moved (another filesystem, a name taken) stay, logged as a warning
    /// when `loud` (at the switch), quietly afterwards.
    fn sweep_previous_spool_dirs(&mut self, loud: bool) {
        for dir in &self.previous_spool_dirs {
            match pickup::move_records(dir, &self.spool_dir) {
                Ok(report) => {
                    if report.moved > 0 {
                        tracing::info!(
                            "moved {} records from the previous spool_dir {} into {}",
                            report.moved,
                            dir.display(),
                            self.spool_dir.display()
                        );
                    }
                    for (name, e) in report.left {
                        if loud {
                            tracing::warn!(
                                "cannot move {name} from the previous spool_dir {}: {e}; \
                                 it stays there, undelivered",
                                dir.display()
                            );
                        } else {
                            tracing::debug!("cannot move {name} from {}: {e}", dir.display());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!("cannot sweep {}: {e}", dir.display()),
            }
        }
    }
}

/// Path helper for tests and telemctl: the quarantine of a spool dir.
pub fn quarantine_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join(pickup::QUARANTINE_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_checks() {
        let paths = Paths::default();
        let mut c = Config::defaults(&paths);
        let s = Settings::from_config(c.clone()).unwrap();
        assert_eq!(s.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(s.quota, Some(5120 * 1024));
        assert_eq!(s.expiry, Duration::from_secs(1200 * 60));
        let bad = Config::parse(
            "[settings]\ndelivery_max_in_flight=0\n",
            Path::new("t.conf"),
            &paths,
        )
        .unwrap();
        assert!(Settings::from_config(bad).is_err());
        c.delivery_max_in_flight = 8;
        c.delivery_keep_alive = false;
        let s = Settings::from_config(c.clone()).unwrap();
        assert_eq!((s.max_in_flight, s.keep_alive), (8, false));
        assert_eq!(s.concurrency, ConcurrencyMode::Adaptive);
        c.delivery_concurrency = ConcurrencyMode::Fixed;
        assert_eq!(
            Settings::from_config(c.clone()).unwrap().concurrency,
            ConcurrencyMode::Fixed
        );
        let bad = Config::parse(
            "[settings]\ndelivery_concurrency=sometimes\n",
            Path::new("t.conf"),
            &paths,
        )
        .unwrap();
        assert!(Settings::from_config(bad).is_err());
        c.delivery_concurrency = ConcurrencyMode::Adaptive;
        let window = c.record_limit.window;
        c.record_limit.window = Err(libtelemetry::config::OutOfRange);
        assert!(matches!(
            Settings::from_config(c.clone()),
            Err(PostdError::Config(_))
        ));
        c.record_limit.window = window;
        c.spool_max_bytes = None;
        assert_eq!(Settings::from_config(c).unwrap().quota, None);
    }
}
