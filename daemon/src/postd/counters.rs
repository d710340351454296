//! telempostd's counters and last delivery result, for its status file
//! (`<state_dir>/telempostd.status`, written by the [`super::persist`] thread) at most once
//! per [`WRITE_INTERVAL`] and at exit.

use std::time::{Duration, Instant};

use libtelemetry::status::{now_secs, DaemonStatus, LastDelivery};

pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

pub use libtelemetry::status::COUNTER_LOCAL;

pub struct Counters {
    status: DaemonStatus,
    dirty: bool,
    last_write: Instant,
}

impl Counters {
    pub fn new() -> Counters {
        Counters {
            status: DaemonStatus::new("telempostd"),
            dirty: true,
            // Due at once: the first write announces the daemon.
            last_write: Instant::now()
                .checked_sub(WRITE_INTERVAL)
                .unwrap_or_else(Instant::now),
        }
    }

    pub fn add(&mut self, counter: &str, n: u64) {
        self.status.add(counter, n);
        self.dirty = true;
    }

    pub fn get(&self, counter: &str) -> u64 {
        self.status.counter(counter)
    }

    pub fn last_delivery(&mut self, ok: bool, detail: String) {
        self.status.last_delivery = Some(LastDelivery {
            time: now_secs(),
            ok,
            detail,
        });
        self.dirty = true;
    }

    /// When the next write is due (None when nothing changed).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(self.last_write + WRITE_INTERVAL)
    }

    /// The status to write when a write is due (and mark it written).
    pub fn due(&mut self, now: Instant) -> Option<DaemonStatus> {
        if self.deadline().is_some_and(|d| d <= now) {
            Some(self.snapshot())
        } else {
            None
        }
    }

    /// The status to write now (and mark it written).
    pub fn snapshot(&mut self) -> DaemonStatus {
        self.last_write = Instant::now();
        self.dirty = false;
        self.status.clone()
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}
