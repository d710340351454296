//! The spool index: every staged record telempostd knows of, ordered by creation time, with
//! its retry state; the backoff schedule; the backend gate; expiry and quota selection.
//!
//! The spool itself is the directory (the files are the truth; a restart rebuilds this index
//! with a scan). Everything here is pure bookkeeping with the clock passed in, so the
//! policies are unit-tested without sleeping.
//!
//! Retry policy (replacing the C daemon's 300 s direct-spool window and its n² cycle):
//! * a failure the backend as a whole is responsible for (connection error, timeout, 5xx,
//!   429) closes the [`BackendGate`] for a backoff of 5 s × 1.5ⁿ with ±20 % jitter, capped at
//!   `spool_process_time`; when it reopens, one probe record (the oldest) goes out, and only
//!   its success reopens full parallelism and makes every record waiting on the gate ready;
//! * a failure of one record (another status, an invalid `CFG:` override) backs that record
//!   off on the same schedule without holding up the others; a record that keeps failing as
//!   the probe is backed off too, so one poisoned record cannot starve the spool;
//! * the oldest ready record is always sent first, and new records queue behind older ones,
//!   so a steady stream of new records cannot starve the spool.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Growth of the delay per consecutive failure.
pub const BACKOFF_FACTOR: f64 = 1.5;
/// Consecutive global failures a record may take as the probe before it gets its own backoff.
pub const PROBE_FAILURES_BEFORE_BACKOFF: u32 = 3;

/// Delay before retry number `failures` (1 = after the first failure), with `jitter` in
/// 0.0..1.0 spreading it over ±20 %, never more than `cap`.
pub fn backoff_delay(failures: u32, cap: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(64) as i32;
    let base = BACKOFF_BASE.as_secs_f64() * BACKOFF_FACTOR.powi(exp);
    let jittered = base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    Duration::from_secs_f64(jittered.min(cap.as_secs_f64()))
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// May be sent now.
    Ready,
    /// Not before this instant.
    Waiting(Instant),
    /// A worker is posting it.
    InFlight,
}

#[derive(Debug, Clone)]
pub struct SpoolEntry {
    pub name: String,
    /// Creation time of the staged file (orders the spool; expiry).
    pub created: SystemTime,
    /// Bytes it occupies (quota).
    pub size: u64,
    /// Its length (rate limiting counts real bytes).
    pub len: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Consecutive failures the backend as a whole was blamed for.
    pub global_failures: u32,
    pub state: EntryState,
    /// Counted once in the `spooled` counter.
    pub spooled: bool,
}

type AgeKey = (SystemTime, String);

/// The index. Invariant: `by_age` holds every entry; `ready` exactly the Ready ones;
/// `waiting` exactly the Waiting ones; `total_size` is the sum of all sizes.
#[derive(Debug, Default)]
pub struct Spool {
    entries: HashMap<String, SpoolEntry>,
    by_age: BTreeSet<AgeKey>,
    ready: BTreeSet<AgeKey>,
    waiting: BTreeSet<(Instant, String)>,
    total_size: u64,
    in_flight: usize,
}

impl Spool {
    pub fn new() -> Spool {
        Spool::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Give back the index's spare capacity (after a large spool has drained).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    pub fn get(&self, name: &str) -> Option<&SpoolEntry> {
        self.entries.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Add a record, or refresh its metadata when it is known and not in flight (a file
    /// written in place is seen again when closed). `ready_at` = `None` means ready now.
    /// Returns true when the record is new.
    pub fn upsert(
        &mut self,
        name: &str,
        created: SystemTime,
        size: u64,
        len: u64,
        ready_at: Option<Instant>,
    ) -> bool {
        if let Some(e) = self.entries.get(name) {
            if e.state == EntryState::InFlight {
                return false;
            }
            let (attempts, global, spooled) = (e.attempts, e.global_failures, e.spooled);
            self.remove(name);
            self.insert(SpoolEntry {
                name: name.to_string(),
                created,
                size,
                len,
                attempts,
                global_failures: global,
                state: EntryState::Ready,
                spooled,
            });
            self.set_state(
                name,
                ready_at.map_or(EntryState::Ready, EntryState::Waiting),
            );
            return false;
        }
        self.insert(SpoolEntry {
            name: name.to_string(),
            created,
            size,
            len,
            attempts: 0,
            global_failures: 0,
            state: EntryState::Ready,
            spooled: false,
        });
        self.set_state(
            name,
            ready_at.map_or(EntryState::Ready, EntryState::Waiting),
        );
        true
    }

    fn insert(&mut self, e: SpoolEntry) {
        self.by_age.insert((e.created, e.name.clone()));
        self.ready.insert((e.created, e.name.clone()));
        self.total_size = self.total_size.saturating_add(e.size);
        self.entries.insert(e.name.clone(), e);
    }

    /// Forget a record (delivered, deleted, quarantined, vanished).
    pub fn remove(&mut self, name: &str) -> Option<SpoolEntry> {
        let e = self.entries.remove(name)?;
        let key = (e.created, e.name.clone());
        self.by_age.remove(&key);
        match e.state {
            EntryState::Ready => {
                self.ready.remove(&key);
            }
            EntryState::Waiting(at) => {
                self.waiting.remove(&(at, e.name.clone()));
            }
            EntryState::InFlight => self.in_flight -= 1,
        }
        self.total_size = self.total_size.saturating_sub(e.size);
        Some(e)
    }

    fn set_state(&mut self, name: &str, state: EntryState) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        let key = (e.created, e.name.clone());
        match e.state {
            EntryState::Ready => {
                self.ready.remove(&key);
            }
            EntryState::Waiting(at) => {
                self.waiting.remove(&(at, key.1.clone()));
            }
            EntryState::InFlight => self.in_flight -= 1,
        }
        e.state = state;
        match state {
            EntryState::Ready => {
                self.ready.insert(key);
            }
            EntryState::Waiting(at) => {
                self.waiting.insert((at, key.1));
            }
            EntryState::InFlight => self.in_flight += 1,
        }
    }

    /// Make every record whose wait is over ready.
    pub fn promote(&mut self, now: Instant) {
        while let Some((at, name)) = self.waiting.first().cloned() {
            if at > now {
                break;
            }
            self.set_state(&name, EntryState::Ready);
        }
    }

    /// The oldest record that may be sent now.
    pub fn oldest_ready(&self) -> Option<&str> {
        self.ready.first().map(|(_, n)| n.as_str())
    }

    /// Ready records, oldest first.
    pub fn ready_names(&self) -> impl Iterator<Item = &str> {
        self.ready.iter().map(|(_, n)| n.as_str())
    }

    /// When the next waiting record becomes ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.waiting.first().map(|(at, _)| *at)
    }

    /// A worker takes `name`.
    pub fn start(&mut self, name: &str) {
        self.set_state(name, EntryState::InFlight);
    }

    /// Put `name` back: ready now (`None`) or at an instant.
    pub fn requeue(&mut self, name: &str, ready_at: Option<Instant>) {
        self.set_state(
            name,
            ready_at.map_or(EntryState::Ready, EntryState::Waiting),
        );
    }

    /// Record a failed attempt on `name`. `global` = the backend as a whole failed (the gate
    /// handles the wait) rather than this record. Returns the entry's `spooled` flag before
    /// this call (false = first time spooled).
    pub fn fail(&mut self, name: &str, global: bool, now: Instant, backoff: Duration) -> bool {
        let Some(e) = self.entries.get_mut(name) else {
            return true;
        };
        e.attempts = e.attempts.saturating_add(1);
        let was_spooled = e.spooled;
        e.spooled = true;
        let own_backoff = if global {
            e.global_failures = e.global_failures.saturating_add(1);
            e.global_failures >= PROBE_FAILURES_BEFORE_BACKOFF
        } else {
            true
        };
        self.requeue(name, own_backoff.then_some(now + backoff));
        was_spooled
    }

    /// Mark every ready record as spooled (they all wait behind a rate limit). Returns how
    /// many were not marked before.
    pub fn mark_ready_spooled(&mut self) -> u64 {
        let mut n = 0;
        for (_, name) in &self.ready {
            if let Some(e) = self.entries.get_mut(name) {
                if !std::mem::replace(&mut e.spooled, true) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The backend is back: every record that was only waiting for it is ready again.
    pub fn wake_gated(&mut self) {
        let names: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.global_failures > 0 && e.state != EntryState::InFlight)
            .map(|e| e.name.clone())
            .collect();
        for n in names {
            if let Some(e) = self.entries.get_mut(&n) {
                e.global_failures = 0;
            }
            self.set_state(&n, EntryState::Ready);
        }
        for e in self.entries.values_mut() {
            e.global_failures = 0;
        }
    }

    /// Records created before `now - max_age` and not in flight, oldest first.
    pub fn expired(&self, now: SystemTime, max_age: Duration) -> Vec<String> {
        let Some(limit) = now.checked_sub(max_age) else {
            return Vec::new();
        };
        self.by_age
            .iter()
            .take_while(|(created, _)| *created < limit)
            .filter(|(_, n)| {
                self.entries
                    .get(n)
                    .is_some_and(|e| e.state != EntryState::InFlight)
            })
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Records to evict, oldest first and never one in flight, so that the spool fits in
    /// `limit` bytes (or as close as records in flight allow).
    pub fn over_quota(&self, limit: u64) -> Vec<String> {
        let mut total = self.total_size;
        let mut out = Vec::new();
        for (_, n) in &self.by_age {
            if total <= limit {
                break;
            }
            let Some(e) = self.entries.get(n) else {
                continue;
            };
            if e.state == EntryState::InFlight {
                continue;
            }
            total = total.saturating_sub(e.size);
            out.push(n.clone());
        }
        out
    }
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

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

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
    fn oldest_first_and_new_records_queue_behind() {
        let now = Instant::now();
        let mut s = Spool::new();
        s.upsert("c", t(30), 10, 10, None);
        s.upsert("a", t(10), 10, 10, None);
        s.upsert("b", t(20), 10, 10, Some(now + Duration::from_secs(5)));
        assert_eq!(s.oldest_ready(), Some("a"));
        s.start("a");
        assert_eq!(s.oldest_ready(), Some("c"));
        s.promote(now + Duration::from_secs(5));
        assert_eq!(
            s.oldest_ready(),
            Some("b"),
            "a spooled record beats a newer one"
        );
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.total_size(), 30);
        s.remove("a");
        assert_eq!((s.in_flight(), s.total_size(), s.len()), (0, 20, 2));
    }

    #[test]
    fn failures_back_off_records_and_the_gate_wakes_them() {
        let now = Instant::now();
        let cap = Duration::from_secs(120);
        let mut s = Spool::new();
        s.upsert("old", t(1), 1, 1, None);
        s.upsert("new", t(2), 1, 1, None);
        s.start("old");
        assert!(
            !s.fail("old", false, now, Duration::from_secs(5)),
            "first spool"
        );
        assert_eq!(
            s.oldest_ready(),
            Some("new"),
            "a failed record does not block"
        );
        assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(5)));
        // Global failures leave the record to the gate until it has been the probe 3 times.
        s.start("new");
        s.fail("new", true, now, Duration::from_secs(5));
        assert_eq!(s.oldest_ready(), Some("new"));
        s.start("new");
        s.fail("new", true, now, Duration::from_secs(5));
        s.start("new");
        assert!(s.fail("new", true, now, Duration::from_secs(5)));
        assert_eq!(s.oldest_ready(), None, "a poisoned probe is backed off");
        s.wake_gated();
        assert_eq!(s.oldest_ready(), Some("new"));
        assert_eq!(s.get("old").unwrap().attempts, 1);

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

    #[test]
    fn expiry_and_quota_take_the_oldest_and_spare_records_in_flight() {
        let mut s = Spool::new();
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            s.upsert(n, t(i as u64 * 60), 100, 100, None);
        }
        s.start("a");
        let expired = s.expired(t(200), Duration::from_secs(100));
        assert_eq!(
            expired,
            vec!["b".to_string()],
            "a is in flight, c is too young"
        );
        assert_eq!(s.over_quota(400), Vec::<String>::new());
        assert_eq!(s.over_quota(250), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(s.over_quota(0), vec!["b", "c", "d"]);
        // A refresh keeps the retry state.
        s.fail("a", false, Instant::now(), Duration::from_secs(1));
        s.upsert("a", t(0), 120, 120, None);
        assert_eq!(s.get("a").unwrap().attempts, 1);
        assert_eq!(s.total_size(), 420);
    }
}
