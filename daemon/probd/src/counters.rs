//! The daemon's record counters, shared by the handlers, the stager and the status writer.

use std::sync::atomic::{AtomicU64, Ordering};

use libtelemetry::client::Ack;

use super::refusals::RefusalLog;

/// The daemon's record counters (reported in the status file).
#[derive(Default)]
pub struct Counters {
    staged: AtomicU64,
    rejected: AtomicU64,
    /// Log lines for refused records, bounded per interval.
    pub refusals: RefusalLog,
    /// Signalled at each count, so the status writer sleeps while nothing changes.
    pub changed: tokio::sync::Notify,
    /// Background flushes of `batched` records done.
    pub background_flushes: AtomicU64,
}

impl Counters {
    /// Count one answered record.
    pub fn count(&self, ack: Ack) {
        let c = if ack == Ack::Accepted {
            &self.staged
        } else {
            &self.rejected
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// (staged, rejected)
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.staged.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}
