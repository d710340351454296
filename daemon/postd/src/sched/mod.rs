//! The policy of telempostd as a pure scheduler: it is given events (a file picked up, a
//! delivery's outcome, a signal, the passing of time) with the instant they happen at, and
//! answers with [`Action`]s (submit a job, delete, quarantine, journal, sync the spool dir,
//! write the status file, …) that the event loop (`event_loop`) performs, feeding what
//! comes of them back as events. It does no I/O and never reads the clock, so its rules
//! (retries and blame, the backend gate, rate limits, expiry, the quota, lanes, shutdown,
//! idle exit) are unit-tested on made-up time.
//!
//! Architecture Invariant: a spooled file is deleted only after the backend answered
//! 200/201 for it (the worker deletes it), or by an explicit, counted and logged policy
//! ([`Action::Delete`]): expiry (`expired`), quota (`evicted`), the `drop` rate-limit
//! strategy (`dropped`), delivery disabled (`local`), or quarantine (`quarantined`, moved
//! rather than deleted).

mod complete;
mod dispatch;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::status::{
    DaemonStatus, COUNTER_DELIVERED, COUNTER_EVICTED, COUNTER_EXPIRED, COUNTER_QUARANTINED,
};
use libtelemetry::{Paths, StagedRecord};

use super::concurrency::AdaptiveLimit;
use super::counters::Counters;
use super::error::PostdError;
use super::gate::BackendGate;
use super::lanes::Lanes;
use super::logsummary::RecordLog;
use super::ratelimit::RateLimiter;
use super::settings::Settings;
use super::spool::{self, Spool};
use super::timers::{
    DirSync, IdleExit, Linger, MemoryRelease, RateGate, Rescan, Shutdown, Timer, TimerContext,
};
use super::workers::{Completion, Job};

/// A file found by a scan (not by a close/rename event) is left alone until its mtime is
/// this old, so a record the C telemprobd is still writing in place is not read half-done.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the in-flight POSTs after SIGTERM (each is bounded by 10 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// The loop wakes at least this often even with nothing to wait for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a look at a staged file found.
#[derive(Debug, Clone)]
pub enum Inspection {
    Found(Found),
    /// It is gone.
    Vanished,
    /// Not a record this daemon may read (not regular, foreign-owned, too large): it is to
    /// be quarantined.
    Refused(String),
}

/// A staged file that may be a record.
#[derive(Debug, Clone)]
pub struct Found {
    /// Creation time (order, expiry).
    pub created: SystemTime,
    /// Bytes it occupies (quota).
    pub size: u64,
    /// Its length (rate limits).
    pub len: u64,
    /// How long ago it was last modified.
    pub age: Duration,
}

/// Why a record is read by the loop rather than sent by a worker: a policy that journals
/// and deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The `drop` rate-limit strategy (`dropped`).
    Drop,
    /// `record_server_delivery_enabled=false` (`local`).
    Local,
}

/// A failed read of a record ([`Action::Read`]).
#[derive(Debug, Clone)]
pub enum ReadFailure {
    Vanished,
    /// Not a record this daemon may read, or unparsable: to be quarantined.
    Refused(String),
    /// A passing error: try again later.
    Passing(String),
}

/// What the scheduler is told.
pub enum Event {
    /// The watch saw `name` closed or renamed in (so complete), and what a look found
    /// (`None`: nothing to learn — a file left alone, or a passing error).
    Staged {
        name: String,
        found: Option<Inspection>,
    },
    /// A rescan listed `name` (asked for by [`Action::Inspect`]), and what a look found.
    Listed { name: String, found: Inspection },
    /// The complete listing of the spool dir ([`Action::Rescan`]).
    Scanned(Vec<String>),
    /// The watch lost events: the index is reconciled with a rescan.
    Overflow,
    /// The watch on the spool dir is gone.
    WatchLost(String),
    /// SIGTERM or SIGINT.
    Terminate(i32),
    /// SIGHUP: the new settings, checked (their `spool_dir` exists, or is the current one).
    Reload(Box<Settings>),
    /// A worker finished a job.
    Done(Box<Completion>),
    /// The workers are gone: this job was never started.
    NotSubmitted(Job),
    /// A record was moved to the quarantine ([`Action::Quarantine`]).
    Quarantined {
        name: String,
        reason: String,
        to: PathBuf,
    },
    /// The outcome of an [`Action::Read`].
    Read {
        name: String,
        purpose: Discard,
        result: Result<Box<StagedRecord>, ReadFailure>,
    },
    /// The outcome of an [`Action::SwitchSpoolDir`]: the dir now watched, or `None` when
    /// the new dir could not be watched (the current one stays in use).
    SpoolDirSwitched(Option<PathBuf>),
}

/// What the scheduler asks the loop to do.
#[derive(Debug)]
pub enum Action {
    /// Sweep the previous spool dirs, list the spool dir, answer [`Event::Scanned`].
    Rescan,
    /// Look at `name` (listed, not in the index), answer [`Event::Listed`].
    Inspect(String),
    /// Hand a job to the workers of its lane; answer [`Event::NotSubmitted`] if they are
    /// gone.
    Submit(Job),
    /// Pause (or resume) the default lane's workers: queued jobs not yet started come back
    /// unsent.
    PauseDefault(bool),
    /// Pause every worker: only the POSTs already started finish.
    PauseAll,
    /// Delete a record's file (a counted policy); if that fails, leave the file alone
    /// until restart (never send it twice).
    Delete(String),
    /// Move a record's file to the quarantine; answer [`Event::Quarantined`] when done, or
    /// leave the file alone until restart when it cannot be moved.
    Quarantine { name: String, reason: String },
    /// Read and parse a record, answer [`Event::Read`].
    Read { name: String, purpose: Discard },
    /// Leave `name` alone until restart (a delivered record whose file could not be
    /// deleted: never send it twice).
    Ignore(String),
    /// Append a journal entry (and retention copy) for a record.
    Journal(Box<StagedRecord>),
    /// Make the unlinks in this spool dir durable.
    SyncDir(Arc<PathBuf>),
    /// Write the status file (and the counters' totals).
    WriteStatus(Box<DaemonStatus>),
    /// Give back memory kept from a busy period.
    ReleaseMemory,
    /// Watch `dir` and move the previous spool dir's records into it, answer
    /// [`Event::SpoolDirSwitched`].
    SwitchSpoolDir(PathBuf),
}

/// The scheduler: all of telempostd's state but the directory side's.
pub struct Scheduler {
    settings: Settings,
    paths: Arc<Paths>,
    /// The spool dir jobs read from.
    spool_dir: Arc<PathBuf>,
    /// Default-lane workers (their count bounds the jobs given at once).
    workers: usize,
    spool: Spool,
    gate: BackendGate,
    rate_gate: RateGate,
    rate: RateLimiter,
    /// Default-lane jobs handed to the workers and not completed.
    jobs_in_flight: usize,
    /// How many of them the default backend is given at once.
    adaptive: AdaptiveLimit,
    /// The default lane's workers are paused (as last asked).
    default_paused: bool,
    /// Unprivileged senders whose share of the rate limit is used up, until when (their
    /// new records wait too).
    held_senders: HashMap<u32, Instant>,
    /// Per-record warnings, bounded per interval.
    record_log: RecordLog,
    /// Delivery lanes of records whose override names another server.
    lanes: Lanes,
    linger: Linger,
    counters: Counters,
    /// The rate limiter's clock starts here.
    started: Instant,
    /// The last new record or finished delivery.
    last_activity: Instant,
    memory: MemoryRelease,
    idle_exit: IdleExit,
    rescan: Rescan,
    shutdown: Shutdown,
    dir_sync: DirSync,
    /// Why the daemon is stopping, when that is a failure (the exit status says so).
    failure: Option<PostdError>,
    /// A new `spool_dir` from SIGHUP, used once the jobs in flight have finished (no job
    /// starts meanwhile).
    pending_spool_dir: Option<PathBuf>,
    /// The switch to `pending_spool_dir` was asked for ([`Action::SwitchSpoolDir`]).
    switch_asked: bool,
    /// Spreads retries (a generator of its own, so tests can seed it).
    rng: fastrand::Rng,
    /// Actions asked for by the event being handled.
    out: Vec<Action>,
}

impl Scheduler {
    /// A scheduler for `settings`, with the counters of previous runs, `workers`
    /// default-lane workers, recycling after `idle_exit` (when enabled), starting at `now`;
    /// `seed` seeds the retry jitter.
    pub fn new(
        settings: Settings,
        counters: Counters,
        paths: Arc<Paths>,
        workers: usize,
        idle_exit: Duration,
        now: Instant,
        seed: u64,
    ) -> Scheduler {
        let mut s = Scheduler {
            paths,
            spool_dir: Arc::new(settings.cfg.spool_dir.clone()),
            workers,
            spool: Spool::new(),
            gate: BackendGate::default(),
            rate_gate: RateGate::default(),
            rate: RateLimiter::from_config(&settings.cfg),
            jobs_in_flight: 0,
            adaptive: AdaptiveLimit::new(settings.concurrency, settings.max_in_flight, now),
            default_paused: false,
            held_senders: HashMap::new(),
            record_log: RecordLog::new(now),
            lanes: Lanes::default(),
            linger: Linger::default(),
            counters,
            started: now,
            last_activity: now,
            memory: MemoryRelease::default(),
            idle_exit: IdleExit {
                enabled: false,
                after: idle_exit,
            },
            rescan: Rescan { next: now },
            shutdown: Shutdown::default(),
            dir_sync: DirSync::default(),
            failure: None,
            pending_spool_dir: None,
            switch_asked: false,
            rng: fastrand::Rng::with_seed(seed),
            out: Vec::new(),
            settings,
        };
        s.apply_timing_settings();
        s
    }

    /// Deadlines that follow from the settings.
    fn apply_timing_settings(&mut self) {
        self.linger.linger = self.settings.target.otlp.as_ref().map(|o| o.linger);
        self.idle_exit.enabled = self.settings.cfg.daemon_recycling_enabled;
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The spool dir in use.
    pub fn spool_dir(&self) -> &Arc<PathBuf> {
        &self.spool_dir
    }

    /// The earliest deadline of any component (at most [`MAX_WAIT`] away).
    ///
    /// Every field of the scheduler is named here, so a new one does not compile until it
    /// is either a [`Timer`] in the list or marked as having no deadline.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let Scheduler {
            spool,
            gate,
            rate_gate,
            lanes,
            record_log,
            linger,
            counters,
            dir_sync,
            shutdown,
            memory,
            idle_exit,
            rescan,
            // No deadline of their own:
            settings: _,
            paths: _,
            spool_dir: _,
            workers: _,
            rate: _,
            jobs_in_flight: _,
            adaptive: _,
            default_paused: _,
            held_senders: _, // their records wait in `spool`
            started: _,
            last_activity: _,
            failure: _,
            pending_spool_dir: _, // waits for completions
            switch_asked: _,
            rng: _,
            out: _,
        } = self;
        let timers: [&dyn Timer; 12] = [
            spool, gate, rate_gate, lanes, record_log, linger, counters, dir_sync, shutdown,
            memory, idle_exit, rescan,
        ];
        let ctx = TimerContext {
            now,
            spool_empty: self.spool.is_empty(),
            last_activity: self.last_activity,
        };
        timers
            .iter()
            .filter_map(|t| t.deadline(&ctx))
            .fold(now + MAX_WAIT, Instant::min)
    }

    /// Everything due at `now` (`wall`: the wall clock, for expiry by creation time).
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<Action> {
        if !self.switch_asked && self.jobs_in_flight == 0 && self.lanes.jobs_in_flight() == 0 {
            if let Some(dir) = self.pending_spool_dir.clone() {
                // Unlinks in the previous dir are made durable before it is left.
                self.sync_dir();
                self.switch_asked = true;
                self.out.push(Action::SwitchSpoolDir(dir));
            }
        }
        if now >= self.rescan.next {
            self.start_rescan(now);
        }
        self.spool.promote(now);
        self.expire(now, wall);
        self.dispatch(now);
        self.enforce_quota(now);
        if self.dir_sync.due.is_some_and(|t| t <= now) {
            self.sync_dir();
        }
        if self.record_log.deadline().is_some_and(|t| t <= now) {
            self.record_log.flush(now);
        }
        if let Some(st) = self.counters.due(now) {
            self.out.push(Action::WriteStatus(Box::new(st)));
        }
        let ctx = self.timer_context(now);
        if self.memory.deadline(&ctx).is_some_and(|t| t <= now) {
            self.memory.busy = false;
            self.spool.shrink_to_fit();
            self.out.push(Action::ReleaseMemory);
        }
        std::mem::take(&mut self.out)
    }

    fn timer_context(&self, now: Instant) -> TimerContext {
        TimerContext {
            now,
            spool_empty: self.spool.is_empty(),
            last_activity: self.last_activity,
        }
    }

    /// Whether the daemon should stop now: shutting down with nothing in flight (or past
    /// the grace time), or idle for recycling with an empty spool.
    pub fn should_exit(&self, now: Instant) -> bool {
        if let Some(deadline) = self.shutdown.deadline {
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
        let ctx = self.timer_context(now);
        if self.idle_exit.deadline(&ctx).is_some_and(|t| t <= now) {
            tracing::info!("Daemon exiting for recycling");
            return true;
        }
        false
    }

    /// The last actions before exiting (summary, spool dir sync, status), and the failure
    /// that stops the daemon, if it is one.
    pub fn finish(&mut self, now: Instant) -> (Vec<Action>, Option<PostdError>) {
        self.record_log.flush(now);
        self.sync_dir();
        let st = self.counters.snapshot(now);
        self.out.push(Action::WriteStatus(Box::new(st)));
        tracing::info!(
            "telempostd exiting: {} delivered, {} in the spool",
            self.counters.get(COUNTER_DELIVERED),
            self.spool.len()
        );
        (std::mem::take(&mut self.out), self.failure.take())
    }

    /// The first actions: a scan of the spool dir.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.start_rescan(now);
        std::mem::take(&mut self.out)
    }

    /// Handle one event at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::Staged { name, found } => {
                self.last_activity = now;
                if let Some(found) = found {
                    self.pick(now, &name, found, true);
                }
            }
            Event::Listed { name, found } => self.pick(now, &name, found, false),
            Event::Scanned(names) => self.reconcile(names),
            Event::Overflow => {
                tracing::warn!("inotify queue overflow; rescanning the spool");
                self.start_rescan(now);
            }
            Event::WatchLost(why) if self.pending_spool_dir.is_some() => {
                tracing::warn!(
                    "lost the watch on the previous spool directory ({why}); the new one \
                     is used once the deliveries in flight finish"
                );
            }
            Event::WatchLost(why) => {
                tracing::error!("lost the watch on the spool directory ({why}); exiting");
                self.failure.get_or_insert(PostdError::WatchLost(why));
                self.shutdown.deadline.get_or_insert(now + SHUTDOWN_GRACE);
                self.pause_all();
            }
            Event::Terminate(sig) => {
                if self.shutdown.deadline.is_some() {
                    tracing::warn!("second termination signal; exiting now");
                    self.shutdown.deadline = Some(now);
                } else {
                    tracing::info!(
                        "signal {sig}: finishing {} deliveries in flight, then exiting",
                        self.spool.in_flight()
                    );
                    self.shutdown.deadline = Some(now + SHUTDOWN_GRACE);
                }
                // Only the POSTs already started are finished.
                self.pause_all();
            }
            Event::Reload(settings) => self.reload(now, *settings),
            Event::Done(c) => self.complete(*c, now),
            Event::NotSubmitted(job) => self.not_submitted(job, now),
            Event::Quarantined { name, reason, to } => {
                self.log_failure(
                    now,
                    &format!("quarantined {name} ({reason}) as {}", to.display()),
                );
                self.counters.add(COUNTER_QUARANTINED, 1);
            }
            Event::Read {
                name,
                purpose,
                result,
            } => self.discarded(now, &name, purpose, result),
            Event::SpoolDirSwitched(dir) => self.spool_dir_switched(now, dir),
        }
        std::mem::take(&mut self.out)
    }

    fn pause_all(&mut self) {
        self.default_paused = true;
        self.out.push(Action::PauseAll);
    }

    fn pause_default(&mut self, paused: bool) {
        if self.default_paused != paused {
            self.default_paused = paused;
            self.out.push(Action::PauseDefault(paused));
        }
    }

    /// A uniform 0.0..1.0 spreading retries.
    fn jitter(&mut self) -> f64 {
        self.rng.f64()
    }

    /// Minutes since start: the rate limiter's clock (monotonic).
    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs() / 60
    }

    fn next_minute(&self, now: Instant) -> Instant {
        self.started + Duration::from_secs((self.minute(now) + 1) * 60)
    }

    /// Trouble with one record, for the log (bounded: see [`super::logsummary`]).
    fn log_failure(&mut self, now: Instant, message: &str) {
        self.record_log.warn(now, message);
    }

    // --- pickup ----------------------------------------------------------------------

    /// Learn of `name`. `closed` = seen by a close/rename event, so complete.
    fn pick(&mut self, now: Instant, name: &str, found: Inspection, closed: bool) {
        let info = match found {
            Inspection::Found(info) => info,
            Inspection::Vanished => return self.forget(name),
            Inspection::Refused(reason) => return self.quarantine(name, reason),
        };
        let mut ready_at = if closed {
            None
        } else {
            (info.age < SETTLE).then(|| now + (SETTLE - info.age))
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
    /// `spool_process_time`): ask for the listing.
    fn start_rescan(&mut self, now: Instant) {
        self.rescan.next = now + self.settings.cap;
        self.out.push(Action::Rescan);
    }

    /// The listing: forget what is gone, look at what is new.
    fn reconcile(&mut self, names: Vec<String>) {
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
        for n in names {
            if self.spool.get(&n).is_none() {
                self.out.push(Action::Inspect(n));
            }
        }
    }

    /// Quarantine `name` (counted once the loop has moved it).
    fn quarantine(&mut self, name: &str, reason: String) {
        self.spool.remove(name);
        self.out.push(Action::Quarantine {
            name: name.to_string(),
            reason,
        });
    }

    // --- policies --------------------------------------------------------------------

    fn expire(&mut self, now: Instant, wall: SystemTime) {
        for name in self.spool.expired(wall, self.settings.expiry) {
            self.log_failure(
                now,
                &format!(
                    "{name} expired after {} minutes in the spool; deleting it",
                    self.settings.expiry.as_secs() / 60
                ),
            );
            self.remove_file(now, &name);
            self.counters.add(COUNTER_EXPIRED, 1);
        }
    }

    fn enforce_quota(&mut self, now: Instant) {
        let Some(limit) = self.settings.quota else {
            return;
        };
        for name in self.spool.over_quota(limit) {
            self.log_failure(
                now,
                &format!(
                    "spool over spool_max_size ({} KiB); evicting {name}",
                    limit / 1024
                ),
            );
            self.remove_file(now, &name);
            self.counters.add(COUNTER_EVICTED, 1);
        }
    }

    /// Delete a record's file and forget it.
    fn remove_file(&mut self, now: Instant, name: &str) {
        self.spool.remove(name);
        self.out.push(Action::Delete(name.to_string()));
        self.dir_sync.note(now);
    }

    fn sync_dir(&mut self) {
        if self.dir_sync.due.take().is_some() {
            self.out.push(Action::SyncDir(Arc::clone(&self.spool_dir)));
        }
    }

    // --- SIGHUP ----------------------------------------------------------------------

    fn reload(&mut self, now: Instant, new: Settings) {
        // A switch already asked for is finished first (the loop answers it at once).
        if !self.switch_asked {
            self.pending_spool_dir = None;
            if new.cfg.spool_dir != *self.spool_dir {
                tracing::info!(
                    "spool_dir is now {}: switching once {} deliveries in flight finish",
                    new.cfg.spool_dir.display(),
                    self.spool.in_flight()
                );
                self.pending_spool_dir = Some(new.cfg.spool_dir.clone());
            }
        }
        self.adaptive
            .set_max(new.concurrency, new.max_in_flight.min(self.workers));
        let mut rate = RateLimiter::from_config(&new.cfg);
        rate.inherit(&self.rate);
        self.rate = rate;
        self.rescan.next = now;
        self.settings = new;
        self.apply_timing_settings();
        tracing::info!("configuration reloaded");
    }

    /// The loop switched to a new spool dir (no job in flight), or could not.
    fn spool_dir_switched(&mut self, now: Instant, dir: Option<PathBuf>) {
        self.pending_spool_dir = None;
        self.switch_asked = false;
        let Some(dir) = dir else {
            self.settings.cfg.spool_dir = self.spool_dir.as_ref().clone();
            return;
        };
        self.spool_dir = Arc::new(dir);
        self.spool = Spool::new();
        self.linger.since = None;
        tracing::info!("now watching the spool_dir {}", self.spool_dir.display());
        self.start_rescan(now);
    }
}
