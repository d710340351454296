//! telempostd's status file (`<state_dir>/telempostd.status`): counters and the last delivery
//! result, replaced atomically at most once per [`WRITE_INTERVAL`] and at exit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use libtelemetry::status::{now_secs, status_file, write_status, DaemonStatus, LastDelivery};
use libtelemetry::Paths;

pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Records kept local because `record_server_delivery_enabled` is false.
pub const COUNTER_LOCAL: &str = "local";

pub struct Counters {
    status: DaemonStatus,
    path: PathBuf,
    dirty: bool,
    last_write: Instant,
}

impl Counters {
    pub fn new(paths: &Paths) -> Counters {
        Counters {
            status: DaemonStatus::new("telempostd"),
            path: status_file(paths, "telempostd"),
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

    pub fn flush_if_due(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        self.last_write = Instant::now();
        self.dirty = false;
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = write_status(&self.path, &self.status) {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }
}
