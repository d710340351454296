//! The thin I/O loop around the scheduler: start-up, then one thread that reads the
//! channel (watch events, signals, workers' completions) with a timeout of the scheduler's
//! next deadline, hands what it reads to the scheduler as events, and performs the actions
//! the scheduler answers with (on the directory side, the workers, the journal and status
//! writer), feeding their outcomes back, until the scheduler has nothing more to do.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::config::{check_config_path, ConfigSource};
use libtelemetry::status::now_secs;
use libtelemetry::{Config, Paths};

use super::cli::Options;
use super::counters::Counters;
use super::delivery::HttpSender;
use super::directory::{create_spool_dir, SpoolDirectory};
use super::error::PostdError;
use super::input::Input;
use super::lanes;
use super::persist::Persister;
use super::pickup::WatchEvent;
use super::sched::{Action, Event, Scheduler, SHUTDOWN_GRACE};
use super::settings::Settings;
use super::workers::Workers;

/// Idle time after which the daemon exits when `daemon_recycling_enabled` is set and the
/// spool is empty (the `.path` unit starts it again when a record is staged).
pub const IDLE_EXIT: Duration = Duration::from_secs(300);
/// Test-only override of [`IDLE_EXIT`], in (fractional) seconds. Not a configuration
/// interface: the integration tests use it to see recycling without waiting five minutes.
pub const IDLE_EXIT_ENV: &str = "TELEMETRICS_POSTD_IDLE_SECS";
/// Rounds of "everything due now" per turn of the loop; the scheduler answers with no
/// action long before this (each round's actions can make more work due only once).
const MAX_SETTLE_ROUNDS: usize = 32;

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
    let (tx, rx) = mpsc::channel::<Input>();
    // Signals are blocked before any thread starts, so every thread inherits the mask and
    // they arrive only through the signalfd.
    spawn_signal_thread(tx.clone()).map_err(|source| PostdError::Setup {
        what: "signal handling",
        source,
    })?;
    let directory = SpoolDirectory::watch(spool_dir.clone(), tx.clone()).map_err(|source| {
        PostdError::Setup {
            what: "the inotify watch on the spool directory",
            source,
        }
    })?;
    let sender = Arc::new(HttpSender::new(settings.max_in_flight, settings.keep_alive));
    let start_workers = |name: &str, count: usize| {
        Workers::start(name, count, Arc::clone(&sender), tx.clone(), |c| {
            Input::Done(Box::new(c))
        })
        .map_err(|source| PostdError::Setup {
            what: "delivery workers",
            source,
        })
    };
    let workers = start_workers("deliver", settings.max_in_flight)?;
    let lane_workers = start_workers("lane", lanes::MAX_LANES)?;
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
    let sched = Scheduler::new(
        settings,
        Counters::restored(&paths),
        Arc::new(paths.clone()),
        workers.count(),
        idle_exit,
        Instant::now(),
        fastrand::u64(..),
    );
    let event_loop = EventLoop {
        sched,
        directory,
        workers,
        lane_workers,
        sender,
        persist,
        paths,
        config_file: opts.config_file,
        _tx: tx,
    };
    event_loop.run(rx)
}

fn spawn_signal_thread(tx: mpsc::Sender<Input>) -> std::io::Result<()> {
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
                    if tx.send(Input::Signal(info.ssi_signo as i32)).is_err() {
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

struct EventLoop {
    sched: Scheduler,
    directory: SpoolDirectory,
    workers: Workers,
    lane_workers: Workers,
    sender: Arc<HttpSender>,
    persist: Persister,
    paths: Paths,
    config_file: Option<PathBuf>,
    /// Keeps the channel open even if every producer thread ends.
    _tx: mpsc::Sender<Input>,
}

impl EventLoop {
    fn run(mut self, rx: mpsc::Receiver<Input>) -> Result<(), PostdError> {
        let now = Instant::now();
        let first = self.sched.start(now);
        self.perform(now, first);
        daemon_common::notify::notify("READY=1");
        loop {
            let now = Instant::now();
            self.settle(now);
            if self.sched.should_exit(now) {
                break;
            }
            let wait = self
                .sched
                .next_deadline(now)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(input) => {
                    self.input(input);
                    while let Ok(input) = rx.try_recv() {
                        self.input(input);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        daemon_common::notify::notify("STOPPING=1");
        let now = Instant::now();
        let (last, failure) = self.sched.finish(now);
        self.perform(now, last);
        if !self.persist.finish(SHUTDOWN_GRACE) {
            tracing::warn!("the journal and status writer did not finish in time");
        }
        failure.map_or(Ok(()), Err)
    }

    /// Do everything due at `now`, until the scheduler asks for nothing more.
    fn settle(&mut self, now: Instant) {
        for _ in 0..MAX_SETTLE_ROUNDS {
            let actions = self.sched.tick(now, SystemTime::now());
            if actions.is_empty() {
                return;
            }
            self.perform(now, actions);
        }
        tracing::debug!("the scheduler still had work after {MAX_SETTLE_ROUNDS} rounds");
    }

    fn feed(&mut self, now: Instant, event: Event) {
        let actions = self.sched.handle(now, event);
        self.perform(now, actions);
    }

    fn input(&mut self, input: Input) {
        let now = Instant::now();
        let event = match input {
            // A stopped watch (the spool dir changed): the sweep of the previous dirs at
            // each rescan catches what it would have seen.
            Input::Watch(generation, _) if !self.directory.is_current(generation) => return,
            Input::Watch(_, WatchEvent::File(name)) => {
                let found = self.directory.inspect(&name);
                Event::Staged { name, found }
            }
            Input::Watch(_, WatchEvent::Overflow) => Event::Overflow,
            Input::Watch(_, WatchEvent::Lost(why)) => Event::WatchLost(why),
            Input::Signal(sig) if sig == libc::SIGHUP => match self.reload() {
                Some(settings) => Event::Reload(Box::new(settings)),
                None => return,
            },
            Input::Signal(sig) => Event::Terminate(sig),
            Input::Done(c) => Event::Done(c),
        };
        self.feed(now, event);
    }

    /// Perform `actions` in order, and those that their outcomes lead to.
    fn perform(&mut self, now: Instant, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            if let Some(event) = self.perform_one(action) {
                queue.extend(self.sched.handle(now, event));
            }
        }
    }

    /// Perform one action; the event that reports its outcome, if the scheduler wants one.
    fn perform_one(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Rescan => self.directory.scan().map(Event::Scanned),
            Action::Inspect(name) => {
                let found = self.directory.inspect(&name)?;
                Some(Event::Listed { name, found })
            }
            Action::Submit(job) => {
                let workers = match job.lane {
                    None => &self.workers,
                    Some(_) => &self.lane_workers,
                };
                workers.submit(job).err().map(Event::NotSubmitted)
            }
            Action::PauseDefault(paused) => {
                self.workers.set_paused(paused);
                None
            }
            Action::PauseAll => {
                self.workers.set_paused(true);
                self.lane_workers.set_paused(true);
                None
            }
            Action::Delete(name) => {
                self.directory.delete(&name);
                None
            }
            Action::Quarantine { name, reason } => {
                let to = self.directory.quarantine(&name, &reason)?;
                Some(Event::Quarantined { name, reason, to })
            }
            Action::Read { name, purpose } => {
                let result = self.directory.read(&name);
                Some(Event::Read {
                    name,
                    purpose,
                    result,
                })
            }
            Action::Ignore(name) => {
                self.directory.ignore(name);
                None
            }
            Action::Journal(staged) => {
                self.persist.journal(*staged, now_secs());
                None
            }
            Action::SyncDir(dir) => {
                self.persist.sync_dir(dir.as_ref().clone());
                None
            }
            Action::WriteStatus(status) => {
                self.persist.status(*status);
                None
            }
            Action::ReleaseMemory => {
                self.release_memory();
                None
            }
            Action::SwitchSpoolDir(dir) => {
                let switched = self.directory.switch(dir.clone());
                Some(Event::SpoolDirSwitched(switched.then_some(dir)))
            }
        }
    }

    /// A drained backlog of many records leaves the index's capacity and the allocator's
    /// free pages behind (the workers' threads each have an arena); give them back so the
    /// daemon returns to its idle footprint instead of keeping its peak.
    fn release_memory(&mut self) {
        self.directory.shrink_to_fit();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
        // pointers and is thread-safe in glibc.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// SIGHUP: the new settings, checked, with a `spool_dir` that exists (or the current
    /// one, when the new one cannot be created); `None` when the config is unusable.
    fn reload(&mut self) -> Option<Settings> {
        let result = Config::load(&self.paths, self.config_file.as_deref())
            .map_err(PostdError::from)
            .and_then(|(cfg, _)| Settings::from_config(cfg));
        let mut new = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("configuration reload failed, keeping the previous one: {e}");
                return None;
            }
        };
        let current = self.directory.dir().to_path_buf();
        if new.cfg.spool_dir != current {
            if let Err(e) = create_spool_dir(&new.cfg.spool_dir) {
                tracing::error!(
                    "cannot use the new spool_dir {}: {e}; keeping {}",
                    new.cfg.spool_dir.display(),
                    current.display()
                );
                new.cfg.spool_dir = current;
            }
        }
        if new.max_in_flight > self.workers.count()
            || new.keep_alive != self.sched.settings().keep_alive
        {
            tracing::warn!(
                "delivery_max_in_flight above {} and delivery_keep_alive take effect at the next start",
                self.workers.count()
            );
        }
        self.persist.set_retention(new.cfg.record_retention_enabled);
        self.sender.reset();
        Some(new)
    }
}
