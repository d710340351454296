//! Adaptive request concurrency: how many POSTs to the default backend may be in flight at
//! once, following what the backend can take (after Vector's adaptive request
//! concurrency), bounded by `delivery_max_in_flight`.
//!
//! AIMD over windows of one round-trip time:
//! * the limit starts at 1;
//! * a window ends once it has lasted the baseline round-trip time (at least
//!   [`MIN_WINDOW`]); if the limit was reached during it, no backpressure came and the
//!   window's mean response time stayed within the baseline plus a margin (2.5 mean
//!   deviations, at least a quarter of the baseline and [`MIN_RTT_MARGIN`]), the limit
//!   grows by one (additive increase);
//! * backpressure — a timeout, a reset or refused connection, HTTP 429 or 503 — halves the
//!   limit at once (at most once per window); a window whose mean response time exceeds
//!   the margin (requests queue in the backend) multiplies it by 0.9;
//! * the baseline is an exponentially weighted mean (α = 0.4) of the windows' means, fed
//!   only by windows that did not decrease the limit, so a backend that slows down under
//!   load does not raise its own bar; a window faster than the baseline becomes the
//!   baseline at once (the first requests also paid for connecting). The margin is at most
//!   1.25 times the baseline, however much the response times varied.
//!
//! The controller is pure: it takes the clock as an argument (tested on made-up time).

use std::time::{Duration, Instant};

/// Shortest window.
pub const MIN_WINDOW: Duration = Duration::from_millis(10);
/// Smallest response-time margin over the baseline.
pub const MIN_RTT_MARGIN: Duration = Duration::from_millis(2);
/// Weight of a new window in the baseline.
const ALPHA: f64 = 0.4;
/// Factor of a decrease for backpressure.
const BACKPRESSURE_DECREASE: f64 = 0.5;
/// Factor of a decrease for a response time over the margin.
const SLOWDOWN_DECREASE: f64 = 0.9;

/// `delivery_concurrency`: how the limit is chosen (typed in libtelemetry's config).
pub use libtelemetry::config::DeliveryConcurrency as ConcurrencyMode;

/// What a response said about the backend's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer (any status but 429/503): its response time counts.
    Answered,
    /// Timeout, reset or refused connection, 429, 503.
    Backpressure,
}

#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    mode: ConcurrencyMode,
    limit: usize,
    max: usize,
    /// Baseline response time and its mean deviation, in seconds.
    baseline: Option<(f64, f64)>,
    window_start: Instant,
    window_sum: f64,
    window_n: u32,
    /// The limit was reached in this window (a reason to grow).
    reached: bool,
    /// The limit was already decreased in this window.
    decreased: bool,
}

impl AdaptiveLimit {
    pub fn new(mode: ConcurrencyMode, max: usize, now: Instant) -> AdaptiveLimit {
        let max = max.max(1);
        AdaptiveLimit {
            mode,
            limit: match mode {
                ConcurrencyMode::Adaptive => 1,
                ConcurrencyMode::Fixed => max,
            },
            max,
            baseline: None,
            window_start: now,
            window_sum: 0.0,
            window_n: 0,
            reached: false,
            decreased: false,
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A new maximum (a reload); the limit is kept within it.
    pub fn set_max(&mut self, mode: ConcurrencyMode, max: usize) {
        self.mode = mode;
        self.max = max.max(1);
        self.limit = match mode {
            ConcurrencyMode::Adaptive => self.limit.clamp(1, self.max),
            ConcurrencyMode::Fixed => self.max,
        };
    }

    /// A request is about to start with `in_flight` others already running.
    pub fn on_start(&mut self, in_flight: usize) {
        if in_flight + 1 >= self.limit {
            self.reached = true;
        }
    }

    /// A response (or failure) after `rtt`.
    pub fn on_response(&mut self, now: Instant, rtt: Duration, signal: Signal) {
        if self.mode == ConcurrencyMode::Fixed {
            return;
        }
        match signal {
            Signal::Backpressure => {
                if !self.decreased {
                    self.decrease(BACKPRESSURE_DECREASE);
                }
            }
            Signal::Answered => {
                self.window_sum += rtt.as_secs_f64();
                self.window_n += 1;
            }
        }
        let window = self.baseline.map_or(MIN_WINDOW, |(b, _)| {
            Duration::from_secs_f64(b).max(MIN_WINDOW)
        });
        if now.saturating_duration_since(self.window_start) >= window {
            self.end_window(now);
        }
    }

    fn decrease(&mut self, factor: f64) {
        self.limit = ((self.limit as f64 * factor).floor() as usize).max(1);
        self.decreased = true;
    }

    fn end_window(&mut self, now: Instant) {
        if self.window_n > 0 {
            let mean = self.window_sum / f64::from(self.window_n);
            match self.baseline {
                None => self.baseline = Some((mean, 0.0)),
                Some((base, dev)) => {
                    let margin = (2.5 * dev.min(0.5 * base))
                        .max(0.25 * base)
                        .max(MIN_RTT_MARGIN.as_secs_f64());
                    if mean > base + margin {
                        if !self.decreased {
                            self.decrease(SLOWDOWN_DECREASE);
                        }
                    } else {
                        if !self.decreased && self.reached && self.limit < self.max {
                            self.limit += 1;
                        }
                        // A faster window is the backend's real speed (the first requests
                        // also paid for connecting): the baseline follows it down at once.
                        self.baseline = Some(if mean <= base {
                            (mean, (1.0 - ALPHA) * dev)
                        } else {
                            (
                                (1.0 - ALPHA) * base + ALPHA * mean,
                                (1.0 - ALPHA) * dev + ALPHA * (mean - base),
                            )
                        });
                    }
                }
            }
        }
        self.window_start = now;
        self.window_sum = 0.0;
        self.window_n = 0;
        self.reached = false;
        self.decreased = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that answers in `rtt(in_flight)`, driven at the controller's limit for
    /// `windows` windows of its response time; returns the limits seen.
    fn drive(
        c: &mut AdaptiveLimit,
        t: &mut Instant,
        windows: usize,
        rtt: impl Fn(usize) -> Duration,
    ) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..windows {
            let n = c.limit();
            let d = rtt(n);
            for i in 0..n {
                c.on_start(i);
            }
            *t += d;
            for _ in 0..n {
                c.on_response(*t, d, Signal::Answered);
            }
            seen.push(c.limit());
        }
        seen
    }

    #[test]
    fn grows_to_the_maximum_while_response_times_hold() {
        let mut t = Instant::now();
        let mut c = AdaptiveLimit::new(ConcurrencyMode::Adaptive, 8, t);
        assert_eq!(c.limit(), 1);
        let seen = drive(&mut c, &mut t, 40, |_| Duration::from_millis(20));
        assert_eq!(*seen.last().unwrap(), 8, "{seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1] <= w[0] + 1),
            "one step at a time"
        );
    }

    #[test]
    fn settles_at_what_a_slow_backend_can_take() {
        // Two workers, 20 ms per request: beyond 2 in flight, requests queue.
        let rtt = |n: usize| Duration::from_millis(20 * n.div_ceil(2) as u64);
        let mut t = Instant::now();
        let mut c = AdaptiveLimit::new(ConcurrencyMode::Adaptive, 16, t);
        let seen = drive(&mut c, &mut t, 200, rtt);
        let tail = &seen[100..];
        assert!(tail.iter().all(|&l| (1..=4).contains(&l)), "{tail:?}");
        assert!(
            tail.iter().filter(|&&l| l >= 2).count() > tail.len() / 2,
            "{tail:?}"
        );
    }

    #[test]
    fn a_slow_first_request_does_not_raise_the_bar() {
        let rtt = |n: usize| Duration::from_millis(20 * n.div_ceil(2) as u64);
        let mut t = Instant::now();
        let mut c = AdaptiveLimit::new(ConcurrencyMode::Adaptive, 16, t);
        c.on_start(0);
        t += Duration::from_millis(300);
        c.on_response(t, Duration::from_millis(300), Signal::Answered);
        let seen = drive(&mut c, &mut t, 100, rtt);
        assert!(seen.iter().all(|&l| l <= 4), "{seen:?}");
    }

    #[test]
    fn backpressure_halves_once_per_window() {
        let mut t = Instant::now();
        let mut c = AdaptiveLimit::new(ConcurrencyMode::Adaptive, 16, t);
        drive(&mut c, &mut t, 60, |_| Duration::from_millis(10));
        assert_eq!(c.limit(), 16);
        for _ in 0..5 {
            c.on_response(t, Duration::from_secs(10), Signal::Backpressure);
        }
        assert_eq!(c.limit(), 8, "one decrease for a burst of timeouts");
        t += Duration::from_millis(20);
        c.on_response(t, Duration::from_millis(10), Signal::Answered);
        c.on_response(t, Duration::from_secs(10), Signal::Backpressure);
        assert_eq!(c.limit(), 4, "a new window, a new decrease");
        for _ in 0..10 {
            t += Duration::from_millis(20);
            c.on_response(t, Duration::from_secs(10), Signal::Backpressure);
        }
        assert_eq!(c.limit(), 1, "never below one");
    }

    #[test]
    fn fixed_mode_never_moves() {
        let mut t = Instant::now();
        let mut c = AdaptiveLimit::new(ConcurrencyMode::Fixed, 6, t);
        c.on_response(t, Duration::from_secs(10), Signal::Backpressure);
        drive(&mut c, &mut t, 10, |n| Duration::from_millis(50 * n as u64));
        assert_eq!(c.limit(), 6);
        c.set_max(ConcurrencyMode::Adaptive, 3);
        assert_eq!(c.limit(), 3);
        assert_eq!(
            ConcurrencyMode::parse("Fixed"),
            Some(ConcurrencyMode::Fixed)
        );
        assert_eq!(ConcurrencyMode::parse("x"), None);
    }
}
