//! Log lines for refused records, bounded: a sender refused in a loop (or a full disk
//! refusing every record) must not flood the journal with one line per record.
//!
//! Refusals are grouped in windows of [`REFUSAL_LOG_WINDOW`] that start at the first
//! refusal after a quiet window. In a window, the first [`DETAILED_PER_WINDOW`] distinct
//! messages are logged in full at once (a misbehaving probe is diagnosed from its first
//! line); every further refusal is only counted by kind, and when the window ends one
//! summary line reports them: `N more records refused in the last 10 s: kind: n, ...`. So
//! at most `DETAILED_PER_WINDOW + 1` lines per window, whatever the load. Nothing is armed
//! while no record is refused (the daemon does not wake up for it).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Length of a window of refusals.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Distinct messages logged in full per window.
pub const DETAILED_PER_WINDOW: usize = 16;

#[derive(Default)]
struct Window {
    /// When the current window started; `None` while no refusal is pending.
    started: Option<Instant>,
    detailed: HashSet<String>,
    suppressed: BTreeMap<&'static str, u64>,
}

/// The refusal log of one daemon.
#[derive(Default)]
pub struct RefusalLog {
    window: Mutex<Window>,
    window_opened: Notify,
}

impl RefusalLog {
    /// Log (or count) one refused record of `kind` (a short fixed label, used in the
    /// summary), with its full `message`.
    pub fn refused(&self, kind: &'static str, message: std::fmt::Arguments<'_>) {
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        if w.started.is_none() {
            w.started = Some(Instant::now());
            self.window_opened.notify_one();
        }
        let message = message.to_string();
        if w.detailed.len() < DETAILED_PER_WINDOW && !w.detailed.contains(&message) {
            tracing::warn!("{message}");
            w.detailed.insert(message);
        } else {
            *w.suppressed.entry(kind).or_default() += 1;
        }
    }

    /// Write the summary of the current window (if it counted anything) and close it.
    pub fn flush(&self) {
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        let Some(started) = w.started.take() else {
            return;
        };
        w.detailed.clear();
        let suppressed = std::mem::take(&mut w.suppressed);
        let total: u64 = suppressed.values().sum();
        if total > 0 {
            let kinds: Vec<String> = suppressed
                .iter()
                .map(|(kind, n)| format!("{kind}: {n}"))
                .collect();
            tracing::warn!(
                "{total} more records refused in the last {} s: {}",
                started.elapsed().as_secs().max(1),
                kinds.join(", ")
            );
        }
    }

    /// Close each window when it ends, until the daemon stops (the caller drops the
    /// future, then calls [`RefusalLog::flush`]).
    pub async fn run(&self) {
        loop {
            self.window_opened.notified().await;
            let started = self.window.lock().ok().and_then(|w| w.started);
            if let Some(started) = started {
                tokio::time::sleep_until(started + REFUSAL_LOG_WINDOW).await;
            }
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_gives_a_bounded_number_of_lines() {
        let log = std::sync::Arc::new(RefusalLog::default());
        let task = tokio::spawn({
            let log = log.clone();
            async move { log.run().await }
        });
        for i in 0..1000 {
            log.refused("bad frame", format_args!("rejected frame: size {}", i % 20));
        }
        {
            let w = log.window.lock().unwrap();
            assert_eq!(w.detailed.len(), DETAILED_PER_WINDOW);
            assert_eq!(w.suppressed["bad frame"], 1000 - DETAILED_PER_WINDOW as u64);
        }
        tokio::time::sleep(REFUSAL_LOG_WINDOW + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        {
            let w = log.window.lock().unwrap();
            assert!(w.started.is_none() && w.suppressed.is_empty() && w.detailed.is_empty());
        }
        // A new window starts with the next refusal.
        log.refused("bad frame", format_args!("rejected frame: size 1"));
        assert_eq!(log.window.lock().unwrap().detailed.len(), 1);
        task.abort();
    }
}
