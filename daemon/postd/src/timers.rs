//! Everything telempostd waits for has a deadline, owned by the component that keeps it.
//!
//! Each timer-owning component implements [`Timer`]; the scheduler's next deadline is the
//! earliest over all of them (`Scheduler::next_deadline`, which names every field of the
//! scheduler, so a new component cannot be left out of the wait without the compiler
//! noticing). A deadline that is forgotten is a stall: the loop would sleep through it.

use std::time::{Duration, Instant};

use super::counters::Counters;
use super::gate::{BackendGate, GateState};
use super::lanes::Lanes;
use super::logsummary::RecordLog;
use super::spool::Spool;

/// Facts several deadlines depend on.
#[derive(Debug, Clone, Copy)]
pub struct TimerContext {
    pub now: Instant,
    pub spool_empty: bool,
    /// The last new record or finished delivery.
    pub last_activity: Instant,
}

/// A component that needs the loop to wake up at some instant.
pub trait Timer {
    /// When the component next has something to do; `None`: not before an event.
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant>;
}

/// Records waiting on their own backoff or on the settle time become ready.
impl Timer for Spool {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        self.next_wakeup()
    }
}

/// The backend gate reopens (half-open: a probe may go).
impl Timer for BackendGate {
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant> {
        match self.state(ctx.now) {
            GateState::Closed(t) => Some(t),
            _ => None,
        }
    }
}

/// A lane's gate reopens.
impl Timer for Lanes {
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant> {
        self.next_reopening(ctx.now)
    }
}

/// The summary of suppressed per-record warnings is due.
impl Timer for RecordLog {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        RecordLog::deadline(self)
    }
}

/// The status file is due.
impl Timer for Counters {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        Counters::deadline(self)
    }
}

/// The index is reconciled with the directory every `spool_process_time`.
#[derive(Debug, Clone, Copy)]
pub struct Rescan {
    pub next: Instant,
}

impl Timer for Rescan {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        Some(self.next)
    }
}

/// Rate-limited (`spool` strategy): nothing is dispatched before this instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateGate {
    pub until: Option<Instant>,
}

impl Timer for RateGate {
    /// Only while it is ahead: once past, dispatching is held by something else (a closed
    /// backend gate, the in-flight limit), whose own deadline or event wakes the loop; a
    /// past instant would make the loop spin until then.
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant> {
        self.until.filter(|t| *t > ctx.now)
    }
}

/// OTLP: ready records wait for a fuller batch for at most the linger time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linger {
    /// Since when records wait.
    pub since: Option<Instant>,
    /// `otlp_linger_ms` (`None`: not batching).
    pub linger: Option<Duration>,
}

impl Timer for Linger {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        Some(self.since? + self.linger?)
    }
}

/// Unlinks not yet made durable (spool dir fsync), and when they must be.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirSync {
    pub due: Option<Instant>,
}

impl DirSync {
    /// Unlinks are made durable at most this late.
    pub const INTERVAL: Duration = Duration::from_millis(200);

    /// An unlink happened at `now`.
    pub fn note(&mut self, now: Instant) {
        self.due.get_or_insert(now + Self::INTERVAL);
    }
}

impl Timer for DirSync {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        self.due
    }
}

/// Set by SIGTERM/SIGINT (or a fatal error): the deadline for the POSTs in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shutdown {
    pub deadline: Option<Instant>,
}

impl Timer for Shutdown {
    fn deadline(&self, _: &TimerContext) -> Option<Instant> {
        self.deadline
    }
}

/// After a busy period, once the spool has been empty and quiet for [`MemoryRelease::IDLE`],
/// memory used by the busy period is given back.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryRelease {
    /// Records were handled since memory was last given back.
    pub busy: bool,
}

impl MemoryRelease {
    pub const IDLE: Duration = Duration::from_secs(5);
}

impl Timer for MemoryRelease {
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant> {
        (self.busy && ctx.spool_empty).then(|| ctx.last_activity + Self::IDLE)
    }
}

/// `daemon_recycling_enabled`: exit after this long without new records, when the spool
/// is empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleExit {
    /// `daemon_recycling_enabled`.
    pub enabled: bool,
    pub after: Duration,
}

impl Timer for IdleExit {
    fn deadline(&self, ctx: &TimerContext) -> Option<Instant> {
        (self.enabled && ctx.spool_empty).then(|| ctx.last_activity + self.after)
    }
}
