//! The status file `<state_dir>/telemprobd.status` (`staged` and `rejected` counters), for
//! `telemctl status`. Written at startup, after the counters change (at most once per
//! interval, off the runtime thread), and at exit — never per record, and never while
//! nothing changes (no periodic timer).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libtelemetry::status::{self, DaemonStatus, COUNTER_REJECTED, COUNTER_STAGED};
use libtelemetry::Paths;
use tokio::sync::watch;

use super::counters::Counters;
use super::DAEMON;

#[derive(Clone)]
pub struct StatusWriter {
    file: PathBuf,
    base: DaemonStatus,
    counters: Arc<Counters>,
}

impl StatusWriter {
    pub fn new(paths: &Paths, counters: Arc<Counters>) -> StatusWriter {
        StatusWriter {
            file: status::status_file(paths, DAEMON),
            base: DaemonStatus::new(DAEMON),
            counters,
        }
    }

    fn snapshot(&self) -> DaemonStatus {
        let (staged, rejected) = self.counters.snapshot();
        let mut s = self.base.clone();
        s.counters.insert(COUNTER_STAGED.to_string(), staged);
        s.counters.insert(COUNTER_REJECTED.to_string(), rejected);
        s
    }

    /// Write now, on the calling thread.
    pub fn write_now(&self) {
        if let Err(e) = status::write_status(&self.file, &self.snapshot()) {
            tracing::debug!("cannot write {}: {e}", self.file.display());
        }
    }

    /// Rewrite the file after the counters change, at most once per `interval`, until
    /// `stop` fires. Nothing is armed while the counters stand still: an idle daemon does
    /// not wake up for its status.
    pub async fn run(self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut last = self.counters.snapshot();
        loop {
            tokio::select! {
                _ = self.counters.changed.notified() => {}
                _ = stop.changed() => return,
            }
            let now = self.counters.snapshot();
            if now == last {
                continue;
            }
            last = now;
            let writer = self.clone();
            // fsyncs stay off the runtime thread.
            let _ = tokio::task::spawn_blocking(move || writer.write_now()).await;
            // Rate limit: the counts of the next `interval` go into one write.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
