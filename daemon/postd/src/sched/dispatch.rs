//! Handing out jobs: the default backend behind its gate and the adaptive limit, the lanes
//! of override servers, OTLP batching, the rate limits, and the policies that read a record
//! to delete it (`drop`, delivery disabled).

use std::sync::Arc;
use std::time::Instant;

use libtelemetry::config::RateLimitStrategy;
use libtelemetry::status::{COUNTER_DROPPED, COUNTER_SPOOLED};

use super::super::concurrency::ConcurrencyMode;
use super::super::counters::COUNTER_LOCAL;
use super::super::error::PostdError;
use super::super::gate::{backoff_delay, GateState};
use super::super::otlp;
use super::super::ratelimit::RateVerdict;
use super::super::spool::{self, Lane};
use super::super::workers::Job;
use super::{Action, Discard, ReadFailure, Scheduler};
use libtelemetry::StagedRecord;

impl Scheduler {
    pub(super) fn dispatch(&mut self, now: Instant) {
        // While switching spool dirs, the jobs in flight finish and no new one starts.
        if self.shutdown.deadline.is_some() || self.pending_spool_dir.is_some() {
            return;
        }
        if !self.settings.cfg.record_server_delivery_enabled {
            self.keep_local();
            return;
        }
        self.dispatch_default(now);
        self.dispatch_lanes(now);
    }

    /// Records for the default backend, behind its gate.
    fn dispatch_default(&mut self, now: Instant) {
        let workers = self.settings.max_in_flight.min(self.workers);
        let max = match self.settings.concurrency {
            // Twice as many jobs queued as POSTs at once: a worker finds its next job
            // waiting.
            ConcurrencyMode::Fixed => 2 * workers,
            // As many as the backend takes now.
            ConcurrencyMode::Adaptive => self.adaptive.limit().min(workers),
        };
        loop {
            if self.jobs_in_flight >= max {
                break;
            }
            let probing = match self.gate.state(now) {
                GateState::Closed(_) => break,
                GateState::HalfOpen if self.jobs_in_flight > 0 => break,
                GateState::HalfOpen => true,
                GateState::Open => false,
            };
            self.pause_default(false);
            if let Some(t) = self.rate_gate.until {
                if now < t {
                    break;
                }
                self.rate_gate.until = None;
            }
            if self.spool.oldest_ready().is_none() {
                self.linger.since = None;
                break;
            }
            let (max_records, max_bytes) = match &self.settings.target.otlp {
                None => (1, u64::MAX),
                Some(o) => (o.max_records, o.max_bytes as u64),
            };
            if let (Some(o), false) = (&self.settings.target.otlp, probing) {
                // A batch that is not full waits for the linger time.
                if !self.batch_is_full(max_records, max_bytes) {
                    let since = *self.linger.since.get_or_insert(now);
                    if now < since + o.linger {
                        break;
                    }
                }
            }
            self.linger.since = None;
            let candidates: Vec<String> = if probing {
                // One record tells whether the backend is back.
                self.spool.probe().map(str::to_string).into_iter().collect()
            } else {
                self.spool
                    .ready_names()
                    .take(max_records)
                    .map(str::to_string)
                    .collect()
            };
            let records = self.take_batch(now, candidates, max_bytes);
            if probing {
                if let Some((name, _)) = records.first() {
                    self.spool.mark_probe(name);
                }
            }
            if records.is_empty() {
                if self.rate_gate.until.is_some() {
                    break;
                }
                continue;
            }
            self.adaptive.on_start(self.jobs_in_flight);
            self.jobs_in_flight += 1;
            let job = self.job(records, None);
            self.out.push(Action::Submit(job));
        }
    }

    fn job(&self, records: Vec<(String, u64)>, lane: Option<Lane>) -> Job {
        Job {
            records,
            spool_dir: Arc::clone(&self.spool_dir),
            target: Arc::clone(&self.settings.target),
            paths: Arc::clone(&self.paths),
            lane,
        }
    }

    /// Start one POST in every lane that has a ready record, no POST in flight and an open
    /// gate.
    fn dispatch_lanes(&mut self, now: Instant) {
        self.lanes.close_unused(&self.spool);
        let ready: Vec<Lane> = self.spool.ready_lanes().cloned().collect();
        for lane in ready {
            if self.rate_gate.until.is_some_and(|t| now < t) {
                return;
            }
            let Some(st) = self.lanes.open(&lane) else {
                continue;
            };
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
            if let Some(st) = self.lanes.get_mut(&lane) {
                st.in_flight = true;
            }
            let job = self.job(records, Some(lane));
            self.out.push(Action::Submit(job));
        }
    }

    /// The workers are gone: `job` was never started. Its records go back; the daemon
    /// stops.
    pub(super) fn not_submitted(&mut self, job: Job, now: Instant) {
        tracing::error!("delivery workers are gone");
        self.failure.get_or_insert(PostdError::WorkersGone);
        match &job.lane {
            None => self.jobs_in_flight = self.jobs_in_flight.saturating_sub(1),
            Some(lane) => {
                if let Some(st) = self.lanes.get_mut(lane) {
                    st.in_flight = false;
                }
            }
        }
        let minute = self.minute(now);
        for (name, size) in job.records {
            self.rate
                .finish_for(minute, size, false, spool::unprivileged_sender(&name));
            self.spool.requeue(&name, None);
        }
        self.shutdown.deadline = Some(now);
    }

    /// Enough ready records (or bytes) for a full OTLP batch, or a record at the head that
    /// goes alone.
    fn batch_is_full(&self, max_records: usize, max_bytes: u64) -> bool {
        let mut bytes = 0u64;
        let mut n = 0;
        for name in self.spool.ready_names() {
            let Some(e) = self.spool.get(name) else {
                continue;
            };
            if e.own_fault {
                return true;
            }
            n += 1;
            bytes += otlp::estimated_size(e.len);
            if n >= max_records || bytes >= max_bytes {
                return true;
            }
        }
        false
    }

    /// Take `candidates` (ready records, in order) for one job, up to roughly `max_bytes`,
    /// within the rate limits: each is reserved and marked in flight. A rate-limited record
    /// is dropped (`drop`) or stops the batch and dispatching until the next minute
    /// (`spool`). A record blamed for its own last failure goes alone, so in a batching mode
    /// it cannot keep failing the records batched with it.
    fn take_batch(
        &mut self,
        now: Instant,
        candidates: Vec<String>,
        max_bytes: u64,
    ) -> Vec<(String, u64)> {
        let batching = candidates.len() > 1;
        let minute = self.minute(now);
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        for name in candidates {
            let Some((size, alone)) = self
                .spool
                .get(&name)
                .filter(|e| e.state == spool::EntryState::Ready)
                .map(|e| (e.len, e.own_fault))
            else {
                continue;
            };
            let alone = alone && batching;
            if alone && !batch.is_empty() {
                break;
            }
            let estimate = otlp::estimated_size(size);
            if !batch.is_empty() && bytes + estimate > max_bytes {
                break;
            }
            let uid = spool::unprivileged_sender(&name);
            let verdict = self.rate.check(minute, size, uid);
            if verdict != RateVerdict::Allowed {
                match self.settings.cfg.rate_limit_strategy {
                    RateLimitStrategy::Drop => {
                        self.discard(&name, Discard::Drop);
                        continue;
                    }
                    RateLimitStrategy::Spool => {
                        if let (RateVerdict::Sender, Some(uid)) = (verdict, uid) {
                            // Only this sender waits; the others go on.
                            let until = self.next_minute(now);
                            self.held_senders.insert(uid, until);
                            let newly = self.spool.hold_sender(uid, until);
                            self.counters.add(COUNTER_SPOOLED, newly);
                            tracing::info!(
                                "uid {uid} used its share of the rate limit: its records \
                                 stay in the spool until the next minute"
                            );
                            continue;
                        }
                        let newly = self.spool.mark_ready_spooled();
                        self.counters.add(COUNTER_SPOOLED, newly);
                        tracing::info!(
                            "rate limit reached: {} records stay in the spool",
                            self.spool.len() - self.spool.in_flight()
                        );
                        self.rate_gate.until = Some(self.next_minute(now));
                        break;
                    }
                }
            }
            self.rate.reserve_for(size, uid);
            self.spool.start(&name);
            bytes += estimate;
            batch.push((name, size));
            if alone {
                break;
            }
        }
        batch
    }

    /// `record_server_delivery_enabled=false`: journal, retain, delete.
    fn keep_local(&mut self) {
        self.spool.unlane_ready();
        let ready: Vec<String> = self.spool.ready_names().map(str::to_string).collect();
        for name in ready {
            self.discard(&name, Discard::Local);
        }
    }

    /// Have `name` read for a policy that journals and deletes it; it is in flight (taken
    /// by nobody else) until the read's outcome comes back.
    fn discard(&mut self, name: &str, purpose: Discard) {
        self.spool.start(name);
        self.out.push(Action::Read {
            name: name.to_string(),
            purpose,
        });
    }

    /// A record read for `purpose`: journal and delete it, or deal with a failed read
    /// (quarantined, forgotten or backed off).
    pub(super) fn discarded(
        &mut self,
        now: Instant,
        name: &str,
        purpose: Discard,
        result: Result<Box<StagedRecord>, ReadFailure>,
    ) {
        match result {
            Ok(staged) => {
                let counter = match purpose {
                    Discard::Drop => {
                        self.log_failure(now, &format!("rate limit reached: dropping {name}"));
                        COUNTER_DROPPED
                    }
                    Discard::Local => COUNTER_LOCAL,
                };
                self.remove_file(now, name);
                self.counters.add(counter, 1);
                self.out.push(Action::Journal(staged));
            }
            Err(ReadFailure::Vanished) => {
                self.spool.remove(name);
            }
            Err(ReadFailure::Refused(reason)) => self.quarantine(name, reason),
            Err(ReadFailure::Passing(e)) => {
                tracing::warn!("cannot read {name}: {e}");
                let delay = backoff_delay(1, self.settings.cap, self.jitter());
                self.spool.requeue(name, Some(now + delay));
            }
        }
    }
}
