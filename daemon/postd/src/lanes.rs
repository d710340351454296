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

//!
//! This module keeps the lanes' state; the scheduler (`sched`) dispatches and completes
//! their jobs.

use std::collections::HashMap;
use std::time::Instant;

use super::gate::{BackendGate, GateState};
use super::spool::{Lane, Spool};

/// Lanes open at once (and workers serving them).
pub const MAX_LANES: usize = 4;

#[derive(Debug, Default)]
pub struct LaneState {
    pub gate: BackendGate,
    pub in_flight: bool,
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

    /// Close the lanes with no record left and no POST in flight.
    pub fn close_unused(&mut self, spool: &Spool) {
        self.lanes
            .retain(|lane, st| st.in_flight || spool.lane_len(lane) > 0);
    }

    /// The state of `lane`, opened if there is room for it (`None`: all lanes are taken).
    pub fn open(&mut self, lane: &Lane) -> Option<&mut LaneState> {
        if !self.lanes.contains_key(lane) {
            if self.lanes.len() >= MAX_LANES {
                return None;
            }
            self.lanes.insert(lane.clone(), LaneState::default());
        }
        self.lanes.get_mut(lane)
    }

    pub fn get_mut(&mut self, lane: &Lane) -> Option<&mut LaneState> {
        self.lanes.get_mut(lane)
    }
}
