//! Bounded logging of per-record trouble (failed attempts, refusals, drops, evictions,
//! expiries, quarantines): at most [`LINES_PER_INTERVAL`] such lines per [`INTERVAL`], the
//! rest summarised in one line when the interval ends. A full disk or a flood of refused
//! records then costs a few lines every 10 s, not one per record.

use std::time::{Duration, Instant};

/// Length of a summary interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Lines logged in full per interval.
pub const LINES_PER_INTERVAL: u32 = 10;

#[derive(Debug)]
pub struct RecordLog {
    since: Instant,
    lines: u32,
    suppressed: u64,
    last: Option<String>,
}

impl RecordLog {
    pub fn new(now: Instant) -> RecordLog {
        RecordLog {
            since: now,
            lines: 0,
            suppressed: 0,
            last: None,
        }
    }

    /// Log `message` (a warning), or count it for the summary.
    pub fn warn(&mut self, now: Instant, message: &str) {
        if now >= self.since + INTERVAL {
            self.flush(now);
        }
        if self.lines < LINES_PER_INTERVAL {
            self.lines += 1;
            tracing::warn!("{message}");
        } else {
            self.suppressed += 1;
            self.last = Some(message.to_string());
        }
    }

    /// When the summary of the current interval is due (None: nothing to summarise).
    pub fn deadline(&self) -> Option<Instant> {
        (self.suppressed > 0).then_some(self.since + INTERVAL)
    }

    /// Log the summary of the interval, if any, and start a new one.
    pub fn flush(&mut self, now: Instant) {
        if self.suppressed > 0 {
            tracing::warn!(
                "{} more record messages in the last {:.0?} not logged one by one; the last: {}",
                self.suppressed,
                now.saturating_duration_since(self.since),
                self.last.as_deref().unwrap_or("")
            );
        }
        *self = RecordLog::new(now);
    }

    /// Messages counted but not logged yet.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_per_interval() {
        let t0 = Instant::now();
        let mut log = RecordLog::new(t0);
        for _ in 0..1000 {
            log.warn(t0, "x");
        }
        assert_eq!(log.suppressed(), 1000 - u64::from(LINES_PER_INTERVAL));
        assert_eq!(log.deadline(), Some(t0 + INTERVAL));
        log.warn(t0 + INTERVAL, "y");
        assert_eq!(
            (log.suppressed(), log.deadline()),
            (0, None),
            "a new interval"
        );
    }
}
