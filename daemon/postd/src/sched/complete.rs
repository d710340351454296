//! A job's outcome: one verdict on the backend per POST (blame, the gate, the adaptive
//! limit), then each record delivered, backed off, sent elsewhere or put back.

use std::time::{Duration, Instant};

use libtelemetry::status::{COUNTER_DELIVERED, COUNTER_FAILED_ATTEMPTS, COUNTER_SPOOLED};
use libtelemetry::StagedRecord;

use super::super::concurrency::Signal;
use super::super::delivery::Outcome;
use super::super::gate::backoff_delay;
use super::super::spool::{self, Blame, Lane};
use super::super::workers::{Completion, ItemResult, JobResult};
use super::{Action, Scheduler};

/// When a job's answer came: its round trip, and the wall-clock second the worker finished
/// (the status file's last delivery).
#[derive(Debug, Clone, Copy)]
struct Answered {
    elapsed: Duration,
    unix_secs: i64,
}

impl Answered {
    fn of(c: &Completion) -> Answered {
        Answered {
            elapsed: c.elapsed,
            unix_secs: c
                .finished
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }
}

impl Scheduler {
    pub(super) fn complete(&mut self, c: Completion, now: Instant) {
        self.last_activity = now;
        self.memory.busy = true;
        if let Some(lane) = c.lane.clone() {
            self.complete_lane(&lane, c, now);
            return;
        }
        self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1);
        // One POST, one verdict on the backend, however many records it carried.
        let failed = |i: &&ItemResult| match &i.result {
            JobResult::Posted { outcome, .. } => outcome.is_global_failure(),
            _ => false,
        };
        let throttled = c.items.iter().any(|i| {
            matches!(
                &i.result,
                JobResult::Posted {
                    outcome: Outcome::Throttled(..),
                    ..
                }
            )
        });
        let posted = c
            .items
            .iter()
            .any(|i| matches!(i.result, JobResult::Posted { .. }));
        if posted {
            let backpressure = c.items.iter().any(|i| {
                matches!(
                    &i.result,
                    JobResult::Posted {
                        outcome: Outcome::Throttled(..) | Outcome::Transport(_),
                        ..
                    }
                )
            });
            let signal = if backpressure {
                Signal::Backpressure
            } else {
                Signal::Answered
            };
            let before = self.adaptive.limit();
            self.adaptive.on_response(now, c.elapsed, signal);
            if self.adaptive.limit() != before {
                tracing::debug!(
                    "requests in flight to the backend: at most {} (was {before}; last took {:?})",
                    self.adaptive.limit(),
                    c.elapsed
                );
            }
        }
        let blame = if !c.items.iter().any(|i| failed(&i)) {
            Blame::Record
        } else if throttled {
            // The backend asked to slow down.
            Blame::Backend
        } else {
            self.spool
                .blame(c.items.iter().filter(failed).map(|i| i.name.as_str()), true)
        };
        let failures = c.items.iter().filter(failed).count();
        if failures > 0 {
            self.spool.note_backend_failure();
        }
        // A batch that fails while the backend takes other records carries a poisoned
        // record: its records are retried alone at once, which isolates it.
        let split = blame == Blame::Record && failures > 1;
        let mut gate_bumped = false;
        let answered = Answered::of(&c);
        for item in c.items {
            self.complete_item(item, answered, now, (blame, split), &mut gate_bumped);
        }
    }

    /// `blame`: whom a backend-wide failure of this POST is blamed on, and whether it was
    /// a batch to split.
    fn complete_item(
        &mut self,
        item: ItemResult,
        answered: Answered,
        now: Instant,
        (blame, split): (Blame, bool),
        gate_bumped: &mut bool,
    ) {
        let minute = self.minute(now);
        let name = item.name;
        let (outcome, staged, remove_error) = match item.result {
            JobResult::Posted {
                outcome,
                staged,
                remove_error,
            } => (outcome, staged, remove_error),
            other => {
                self.rate
                    .finish_for(minute, item.size, false, spool::unprivileged_sender(&name));
                self.not_sent(&name, other, now);
                return;
            }
        };
        let accepted = outcome.is_accepted();
        self.rate.finish_for(
            minute,
            item.size,
            accepted,
            spool::unprivileged_sender(&name),
        );
        if !accepted {
            let (blame, split) = if outcome.is_global_failure() {
                (blame, split)
            } else {
                (Blame::Record, false)
            };
            self.record_failure(
                &name,
                &outcome,
                now,
                answered,
                (blame, split),
                !*gate_bumped,
            );
            *gate_bumped |= blame == Blame::Backend;
            return;
        }
        self.spool.delivered(&name);
        self.note_delivered(now, &name, &outcome, staged, remove_error, answered);
        if self.gate.on_success() {
            tracing::info!("backend reachable again; sending the spool");
        }
    }

    /// A record of a job that was not POSTed (the same in every lane: no gate is
    /// involved).
    fn not_sent(&mut self, name: &str, result: JobResult, now: Instant) {
        match result {
            JobResult::Vanished => {
                self.spool.remove(name);
            }
            JobResult::Quarantine(reason) => self.quarantine(name, reason),
            JobResult::Unreadable(e) => {
                tracing::warn!("cannot read {name}: {e}");
                let delay = backoff_delay(1, self.settings.cap, self.jitter());
                self.spool.requeue(name, Some(now + delay));
            }
            JobResult::Skipped | JobResult::Deferred => self.spool.requeue(name, None),
            JobResult::Rerouted(lane) => {
                if lane.is_some() {
                    // The lane is the override's server: not echoed.
                    tracing::debug!("{name} goes to the delivery lane of its override's server");
                }
                self.spool.set_lane(name, lane);
                self.spool.requeue(name, None);
            }
            JobResult::Posted { .. } => {}
        }
    }

    /// Count, journal and log a delivered record (already out of the index; the worker
    /// deleted its file).
    fn note_delivered(
        &mut self,
        now: Instant,
        name: &str,
        outcome: &Outcome,
        staged: Box<StagedRecord>,
        remove_error: Option<String>,
        answered: Answered,
    ) {
        tracing::debug!(
            "delivered {name} ({}, {:?})",
            outcome.detail(),
            answered.elapsed
        );
        match remove_error {
            None => self.dir_sync.note(now),
            Some(e) => {
                // Never send it twice: leave it alone until restart.
                tracing::error!("cannot delete delivered {name}: {e}; ignoring it");
                self.out.push(Action::Ignore(name.to_string()));
            }
        }
        self.counters.add(COUNTER_DELIVERED, 1);
        self.counters
            .last_delivery(answered.unix_secs, true, outcome.detail());
        self.out.push(Action::Journal(staged));
    }

    /// A failed attempt on `name`, blamed on `blame`; `split`: retry it alone at once;
    /// `bump_gate` false when the same POST already closed the backend gate (an OTLP batch).
    fn record_failure(
        &mut self,
        name: &str,
        outcome: &Outcome,
        now: Instant,
        answered: Answered,
        (blame, split): (Blame, bool),
        bump_gate: bool,
    ) {
        self.counters.add(COUNTER_FAILED_ATTEMPTS, 1);
        self.counters
            .last_delivery(answered.unix_secs, false, outcome.detail());
        if blame == Blame::Backend && bump_gate {
            let j = self.jitter();
            self.gate
                .on_failure_after(now, self.settings.cap, j, outcome.retry_after());
            // Jobs queued behind this one come back unsent.
            self.pause_default(true);
        }
        let attempts = self.spool.get(name).map_or(0, |e| e.attempts) + 1;
        let j = self.jitter();
        let backoff = if split {
            Duration::ZERO
        } else {
            backoff_delay(attempts, self.settings.cap, j)
        };
        if !self.spool.fail(name, blame, now, backoff) {
            self.counters.add(COUNTER_SPOOLED, 1);
        }
        let message = match blame {
            Blame::Backend => format!(
                "delivery of {name} failed ({}); attempt {attempts}, kept in the spool",
                outcome.detail()
            ),
            Blame::Record => format!(
                "delivery of {name} failed ({}); attempt {attempts}, kept in the spool and \
                 retried on its own in {backoff:.1?}",
                outcome.detail()
            ),
        };
        self.log_failure(now, &message);
    }

    /// A lane's POST is done.
    fn complete_lane(&mut self, lane: &Lane, c: Completion, now: Instant) {
        if let Some(st) = self.lanes.get_mut(lane) {
            st.in_flight = false;
        }
        let mut gate_bumped = false;
        let answered = Answered::of(&c);
        for item in c.items {
            match item.result {
                JobResult::Posted { .. } => {
                    self.complete_lane_item(lane, item, answered, now, &mut gate_bumped)
                }
                // Not sent: handled as in the default lane (no gate is involved).
                _ => self.complete_item(item, answered, now, (Blame::Record, false), &mut true),
            }
        }
    }

    fn complete_lane_item(
        &mut self,
        lane: &Lane,
        item: ItemResult,
        answered: Answered,
        now: Instant,
        gate_bumped: &mut bool,
    ) {
        let ItemResult { name, size, result } = item;
        let JobResult::Posted {
            outcome,
            staged,
            remove_error,
        } = result
        else {
            return;
        };
        let minute = self.minute(now);
        let accepted = outcome.is_accepted();
        self.rate
            .finish_for(minute, size, accepted, spool::unprivileged_sender(&name));
        if accepted {
            self.spool.remove(&name);
            self.note_delivered(now, &name, &outcome, staged, remove_error, answered);
            if let Some(st) = self.lanes.get_mut(lane) {
                st.gate.on_success();
            }
            return;
        }
        self.counters.add(COUNTER_FAILED_ATTEMPTS, 1);
        self.counters
            .last_delivery(answered.unix_secs, false, outcome.detail());
        let attempts = self.spool.get(&name).map_or(0, |e| e.attempts) + 1;
        let blame = if outcome.is_global_failure() {
            Blame::Backend
        } else {
            Blame::Record
        };
        if blame == Blame::Backend && !*gate_bumped {
            *gate_bumped = true;
            let j = self.jitter();
            let cap = self.settings.cap;
            if let Some(st) = self.lanes.get_mut(lane) {
                st.gate.on_failure_after(now, cap, j, outcome.retry_after());
            }
        }
        let j = self.jitter();
        let backoff = backoff_delay(attempts, self.settings.cap, j);
        if !self.spool.fail(&name, blame, now, backoff) {
            self.counters.add(COUNTER_SPOOLED, 1);
        }
        self.log_failure(
            now,
            &format!(
                "delivery of {name} in its own lane failed ({}); attempt {attempts}, kept in \
                 the spool",
                outcome.detail()
            ),
        );
    }
}
