//! Delivery lanes for records whose `CFG:` override sends them to a server other than the
//! default backend.
//!
//! Such a server is the sender's choice, and may be slow, down or hostile (accept and never
//! answer). Its records must not cost anyone else anything: they never go in a POST of the
//! default lane, never move the default backend's gate, and never take one of its workers
//! for longer than the read that finds out where they go.
//! * A worker of the default lane that reads a record whose override names another server
//!   sends nothing and reports [`JobResult::Rerouted`]; the index then keeps the record in
//!   that server's lane (one read per record and start of the daemon).
//! * Each lane (one per server URL, at most [`MAX_LANES`] at once; records of further
//!   servers wait until a lane is free) has its own [`BackendGate`] and at most one POST in
//!   flight, on a pool of [`MAX_LANES`] workers of its own. A failure of the backend-wide
//!   kind closes the lane's gate (5 s × 1.5ⁿ, capped at `spool_process_time`); another
//!   failure backs the record off on its own schedule; a delivery reopens the gate.
//! * Rate limits, expiry and the quota apply to laned records as to any other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libtelemetry::status::{COUNTER_FAILED_ATTEMPTS, COUNTER_SPOOLED};

use super::delivery::{Completion, ItemResult, Job, JobResult};
use super::spool::{backoff_delay, unprivileged_sender, BackendGate, Blame, GateState, Lane};
use super::{Postd, PostdError};

/// Lanes open at once (and workers serving them).
pub const MAX_LANES: usize = 4;

#[derive(Debug, Default)]
struct LaneState {
    gate: BackendGate,
    in_flight: bool,
}

/// The open lanes.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<Lane, LaneState>,
}

impl Lanes {
    /// Jobs of all lanes in flight.
    pub fn jobs_in_flight(&self) -> usize {
        self.lanes.values().filter(|l| l.in_flight).count()
    }

    /// The earliest instant a closed lane gate reopens.
    pub fn next_reopening(&self, now: Instant) -> Option<Instant> {
        self.lanes
            .values()
            .filter_map(|l| match l.gate.state(now) {
                GateState::Closed(t) => Some(t),
                _ => None,
            })
            .min()
    }
}

impl Postd {
    /// Start one POST in every lane that has a ready record, no POST in flight and an open
    /// gate.
    pub(super) fn dispatch_lanes(&mut self, now: Instant) {
        let spool = &self.spool;
        self.lanes
            .lanes
            .retain(|lane, st| st.in_flight || spool.lane_len(lane) > 0);
        let ready: Vec<Lane> = self.spool.ready_lanes().cloned().collect();
        for lane in ready {
            if self.rate_gate.is_some_and(|t| now < t) {
                return;
            }
            if !self.lanes.lanes.contains_key(&lane) {
                if self.lanes.lanes.len() >= MAX_LANES {
                    continue;
                }
                self.lanes.lanes.insert(lane.clone(), LaneState::default());
            }
            let st = &self.lanes.lanes[&lane];
            if st.in_flight || matches!(st.gate.state(now), GateState::Closed(_)) {
                continue;
            }
            let Some(name) = self.spool.lane_oldest_ready(&lane).map(str::to_string) else {
                continue;
            };
            let records = self.take_batch(now, vec![name], u64::MAX);
            if records.is_empty() {
                continue;
            }
            let job = Job {
                records,
                spool_dir: std::sync::Arc::clone(&self.spool_dir_shared),
                target: std::sync::Arc::clone(&self.settings.target),
                paths: std::sync::Arc::clone(&self.paths_shared),
                lane: Some(lane.clone()),
            };
            let names = job.records.clone();
            if !self.lane_workers.submit(job) {
                tracing::error!("delivery workers are gone");
                self.failure.get_or_insert(PostdError::WorkersGone);
                let minute = self.minute(now);
                for (name, size) in names {
                    self.rate
                        .finish_for(minute, size, false, unprivileged_sender(&name));
                    self.spool.requeue(&name, None);
                }
                self.shutting_down = Some(now);
                return;
            }
            if let Some(st) = self.lanes.lanes.get_mut(&lane) {
                st.in_flight = true;
            }
        }
    }

    /// A lane's POST is done.
    pub(super) fn complete_lane(&mut self, lane: &Lane, c: Completion, now: Instant) {
        if let Some(st) = self.lanes.lanes.get_mut(lane) {
            st.in_flight = false;
        }
        let mut gate_bumped = false;
        for item in c.items {
            match item.result {
                JobResult::Posted { .. } => {
                    self.complete_lane_item(lane, item, c.elapsed, now, &mut gate_bumped)
                }
                // Not sent: handled as in the default lane (no gate is involved).
                _ => self.complete_item(item, c.elapsed, now, (Blame::Record, false), &mut true),
            }
        }
    }

    fn complete_lane_item(
        &mut self,
        lane: &Lane,
        item: ItemResult,
        elapsed: Duration,
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
            .finish_for(minute, size, accepted, unprivileged_sender(&name));
        if accepted {
            self.spool.remove(&name);
            self.note_delivered(&name, &outcome, *staged, remove_error, elapsed);
            if let Some(st) = self.lanes.lanes.get_mut(lane) {
                st.gate.on_success();
            }
            return;
        }
        self.counters.add(COUNTER_FAILED_ATTEMPTS, 1);
        self.counters.last_delivery(false, outcome.detail());
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
            if let Some(st) = self.lanes.lanes.get_mut(lane) {
                st.gate.on_failure_after(now, cap, j, outcome.retry_after());
            }
        }
        let j = self.jitter();
        let backoff = backoff_delay(attempts, self.settings.cap, j);
        if !self.spool.fail(&name, blame, now, backoff) {
            self.counters.add(COUNTER_SPOOLED, 1);
        }
        self.log_failure(&format!(
            "delivery of {name} in its own lane failed ({}); attempt {attempts}, kept in \
             the spool",
            outcome.detail()
        ));
    }
}
