//! The backoff schedule, and the gate that holds back the spool while the backend as a
//! whole is failing (see `spool` for who a failure is blamed on).

use std::time::{Duration, Instant};

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Growth of the delay per consecutive failure.
pub const BACKOFF_FACTOR: f64 = 1.5;

/// Delay before retry number `failures` (1 = after the first failure), with `jitter` in
/// 0.0..1.0 spreading it over ±20 %, never more than `cap`.
pub fn backoff_delay(failures: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(64) as i32;
    let base = BACKOFF_BASE.as_secs_f64() * BACKOFF_FACTOR.powi(exp);
    let jittered = base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.min(cap.as_secs_f64()))
}

/// State of the backend as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Send freely.
    Open,
    /// Wait until the instant.
    Closed(Instant),
    /// The backoff is over: one probe at a time until a success.
    HalfOpen,
}

/// Consecutive failures of the backend and the backoff they imply.
#[derive(Debug, Clone, Default)]
pub struct BackendGate {
    failures: u32,
    until: Option<Instant>,
}

impl BackendGate {
    pub fn state(&self, now: Instant) -> GateState {
        match self.until {
            None => GateState::Open,
            Some(t) if now < t => GateState::Closed(t),
            Some(_) => GateState::HalfOpen,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A global failure: close for the next backoff step.
    pub fn on_failure(&mut self, now: Instant, cap: Duration, jitter: f64) {
        self.on_failure_after(now, cap, jitter, None);
    }

    /// A global failure: close for the next backoff step, or for `retry_after` (the
    /// backend's `Retry-After`) when that is longer.
    pub fn on_failure_after(
        &mut self,
        now: Instant,
        cap: Duration,
        jitter: f64,
        retry_after: Option<Duration>,
    ) {
        self.failures = self.failures.saturating_add(1);
        let wait = backoff_delay(self.failures, cap, jitter).max(retry_after.unwrap_or_default());
        self.until = Some(now + wait);
    }

    /// A success; returns true when the gate had been closed (records waiting on it must be
    /// woken).
    pub fn on_success(&mut self) -> bool {
        let was_closed = self.until.is_some();
        self.failures = 0;
        self.until = None;
        was_closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let cap = Duration::from_secs(120);
        let mid = |n| backoff_delay(n, cap, 0.5).as_secs_f64();
        assert_eq!(mid(1), 5.0);
        assert_eq!(mid(2), 7.5);
        assert_eq!(mid(3), 11.25);
        assert_eq!(mid(30), 120.0, "capped at spool_process_time");
        assert_eq!(backoff_delay(1, cap, 0.0).as_secs_f64(), 4.0);
        assert_eq!(backoff_delay(1, cap, 1.0).as_secs_f64(), 6.0);
        assert_eq!(backoff_delay(u32::MAX, cap, 1.0), cap);
    }

    #[test]
    fn the_gate_backs_off() {
        let now = Instant::now();
        let cap = Duration::from_secs(120);
        let mut g = BackendGate::default();
        assert_eq!(g.state(now), GateState::Open);
        g.on_failure(now, cap, 0.5);
        assert_eq!(
            g.state(now),
            GateState::Closed(now + Duration::from_secs(5))
        );
        assert_eq!(g.state(now + Duration::from_secs(5)), GateState::HalfOpen);
        g.on_failure(now, cap, 0.5);
        assert_eq!(
            g.state(now),
            GateState::Closed(now + Duration::from_secs_f64(7.5))
        );
        assert!(g.on_success());
        assert!(!g.on_success());
        assert_eq!(g.state(now), GateState::Open);
        g.on_failure_after(now, cap, 0.5, Some(Duration::from_secs(30)));
        assert_eq!(
            g.state(now),
            GateState::Closed(now + Duration::from_secs(30)),
            "Retry-After beyond the backoff"
        );
    }
}
