//! The spool index: every staged record telempostd knows of, ordered by creation time, with
//! its retry state; expiry and quota selection (the backoff schedule and the backend gate
//! are in [`super::gate`]).
//!
//! The spool itself is the directory (the files are the truth; a restart rebuilds this index
//! with a scan). Everything here is pure bookkeeping with the clock passed in, so the
//! policies are unit-tested without sleeping.
//!
//! Retry policy (replacing the C daemon's 300 s direct-spool window and its n² cycle):
//! * every failed attempt is blamed either on the backend as a whole or on the record
//!   ([`Spool::blame`]). Only a failure of the backend-wide kind (connection error, timeout,
//!   5xx, 408, 429) can be the backend's, and it is, unless the record is evidently at
//!   fault: it had failed before, and since then another record was delivered with no
//!   failure after that delivery (the backend is healthy, this record is not), or its
//!   previous failure was already blamed on it and the backend has given no other answer
//!   since. A throttling answer (429, 503; in OTLP mode 502, 504) is always the backend's;
//! * a failure blamed on the backend closes the [`super::gate::BackendGate`] for a backoff of
//!   5 s × 1.5ⁿ with ±20 % jitter, capped at `spool_process_time`; the record stays ready
//!   behind the gate. When the gate reopens, one probe goes out ([`Spool::probe`]): the
//!   oldest ready record, unless it already failed as a probe since the last delivery, so a
//!   record that keeps failing is not the probe again and again; only a probe's success
//!   reopens full parallelism;
//! * a failure blamed on the record (another status, an invalid `CFG:` override, or a
//!   backend-wide kind of failure while other records get through) backs that record off
//!   on the same schedule, by its own count of attempts, and leaves the gate as it is: one
//!   poisoned record cannot hold up the spool. It is retried on its own until it is
//!   delivered or `record_expiry` deletes it (counted as `expired`);
//! * the oldest ready record is always sent first, and new records queue behind older ones,
//!   so a steady stream of new records cannot starve the spool.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use super::gate::backoff_delay;

/// The unprivileged sender of a record, from its staged name: `None` for a privileged
/// one — root, the daemon's own user (the system probes run as the telemetry user), or a
/// record of unknown sender (a bare C-compatible name: staged by the C telemprobd before an
/// upgrade, or by this suite's before senders were recorded; nobody can be charged for it,
/// and only a local stager can create such a name).
pub fn unprivileged_sender(name: &str) -> Option<u32> {
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    let own = unsafe { libc::geteuid() };
    match libtelemetry::parse_staged_name(name) {
        Some(libtelemetry::StagedSender::Uid(uid)) if uid != 0 && uid != own => Some(uid),
        _ => None,
    }
}

/// A delivery lane of its own: the server URL of records whose `CFG:` override sends them
/// somewhere other than the default backend.
pub type Lane = Arc<str>;

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
    /// The spool's verdict count right after this record's last failure (see
    /// [`Spool::blame`]); `None` = it never failed.
    pub failed_at: Option<u64>,
    /// Its last failure was blamed on the record itself: it waits on its own backoff, and
    /// in a batching mode it is sent alone.
    pub own_fault: bool,
    /// The verdict count after it last failed as the probe of a failing backend.
    pub probe_failed_at: Option<u64>,
    pub state: EntryState,
    /// Counted once in the `spooled` counter.
    pub spooled: bool,
    /// `Some` once a worker found that the record's override sends it to another server:
    /// it is then sent only in that lane.
    pub lane: Option<Lane>,
    /// The unprivileged uid that sent it ([`unprivileged_sender`]).
    pub uid: Option<u32>,
}

type AgeKey = (SystemTime, String);

/// The index. Invariant: `by_age` holds every entry; `ready` exactly the Ready ones of the
/// default lane, `lane_ready[l]` those of lane `l`; `waiting` exactly the Waiting ones;
/// `lane_len[l]` counts the entries of lane `l`; `total_size` is the sum of all sizes.
#[derive(Debug, Default)]
pub struct Spool {
    entries: HashMap<String, SpoolEntry>,
    by_age: BTreeSet<AgeKey>,
    ready: BTreeSet<AgeKey>,
    lane_ready: HashMap<Lane, BTreeSet<AgeKey>>,
    lane_len: HashMap<Lane, usize>,
    /// Per unprivileged sender: bytes held and records by age (quota fairness).
    senders: HashMap<u32, (u64, BTreeSet<AgeKey>)>,
    waiting: BTreeSet<(Instant, String)>,
    total_size: u64,
    in_flight: usize,
    /// Answers that say something about the backend as a whole: deliveries and failures of
    /// the backend-wide kind, one per POST.
    verdicts: u64,
    /// The verdict number of the latest delivery (0 = none yet).
    last_delivery: u64,
    /// The record in flight as the probe of a failing backend.
    probing: Option<String>,
}

/// Who a failed attempt is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The backend as a whole: the gate closes, the record waits behind it.
    Backend,
    /// The record itself: it backs off on its own; the gate is left as it is.
    Record,
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
            let old = e.clone();
            self.remove(name);
            self.insert(SpoolEntry {
                created,
                size,
                len,
                state: EntryState::Ready,
                ..old
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
            failed_at: None,
            own_fault: false,
            probe_failed_at: None,
            state: EntryState::Ready,
            spooled: false,
            lane: None,
            uid: unprivileged_sender(name),
        });
        self.set_state(
            name,
            ready_at.map_or(EntryState::Ready, EntryState::Waiting),
        );
        true
    }

    fn insert(&mut self, e: SpoolEntry) {
        let key = (e.created, e.name.clone());
        self.by_age.insert(key.clone());
        if let Some(l) = &e.lane {
            *self.lane_len.entry(Arc::clone(l)).or_default() += 1;
        }
        if let Some(uid) = e.uid {
            let s = self.senders.entry(uid).or_default();
            s.0 = s.0.saturating_add(e.size);
            s.1.insert(key.clone());
        }
        self.ready_set(e.lane.as_ref()).insert(key);
        self.total_size = self.total_size.saturating_add(e.size);
        self.entries.insert(e.name.clone(), e);
    }

    fn ready_set(&mut self, lane: Option<&Lane>) -> &mut BTreeSet<AgeKey> {
        match lane {
            None => &mut self.ready,
            Some(l) => self.lane_ready.entry(Arc::clone(l)).or_default(),
        }
    }

    fn ready_remove(&mut self, lane: Option<&Lane>, key: &AgeKey) {
        match lane {
            None => {
                self.ready.remove(key);
            }
            Some(l) => {
                if let Some(set) = self.lane_ready.get_mut(l) {
                    set.remove(key);
                    if set.is_empty() {
                        self.lane_ready.remove(l);
                    }
                }
            }
        }
    }

    /// Send `name` only in `lane` from now on (`None`: the default lane).
    pub fn set_lane(&mut self, name: &str, lane: Option<Lane>) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        if e.lane == lane {
            return;
        }
        let mut e = e.clone();
        self.remove(name);
        e.lane = lane;
        let state = std::mem::replace(&mut e.state, EntryState::Ready);
        let probing = self.probing.clone();
        self.insert(e);
        self.set_state(name, state);
        self.probing = probing.filter(|p| p != name);
    }

    /// Put every ready record of a lane back in the default lane.
    pub fn unlane_ready(&mut self) {
        let names: Vec<String> = self
            .lane_ready
            .values()
            .flat_map(|s| s.iter().map(|(_, n)| n.clone()))
            .collect();
        for n in names {
            self.set_lane(&n, None);
        }
    }

    /// Lanes with records ready to send.
    pub fn ready_lanes(&self) -> impl Iterator<Item = &Lane> {
        self.lane_ready.keys()
    }

    /// The oldest ready record of `lane`.
    pub fn lane_oldest_ready(&self, lane: &Lane) -> Option<&str> {
        self.lane_ready
            .get(lane)
            .and_then(|s| s.first())
            .map(|(_, n)| n.as_str())
    }

    /// Records known to be in `lane`, whatever their state.
    pub fn lane_len(&self, lane: &Lane) -> usize {
        self.lane_len.get(lane).copied().unwrap_or(0)
    }

    /// Forget a record (delivered, deleted, quarantined, vanished).
    pub fn remove(&mut self, name: &str) -> Option<SpoolEntry> {
        if self.probing.as_deref() == Some(name) {
            self.probing = None;
        }
        let e = self.entries.remove(name)?;
        let key = (e.created, e.name.clone());
        self.by_age.remove(&key);
        if let Some(l) = &e.lane {
            if let Some(n) = self.lane_len.get_mut(l) {
                *n -= 1;
                if *n == 0 {
                    self.lane_len.remove(l);
                }
            }
        }
        if let Some(uid) = e.uid {
            if let Some(s) = self.senders.get_mut(&uid) {
                s.0 = s.0.saturating_sub(e.size);
                s.1.remove(&key);
                if s.1.is_empty() {
                    self.senders.remove(&uid);
                }
            }
        }
        match e.state {
            EntryState::Ready => {
                self.ready_remove(e.lane.as_ref(), &key);
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
        let lane = e.lane.clone();
        let old = std::mem::replace(&mut e.state, state);
        match old {
            EntryState::Ready => self.ready_remove(lane.as_ref(), &key),
            EntryState::Waiting(at) => {
                self.waiting.remove(&(at, key.1.clone()));
            }
            EntryState::InFlight => self.in_flight -= 1,
        }
        match state {
            EntryState::Ready => {
                self.ready_set(lane.as_ref()).insert(key);
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

    /// The oldest record of the default lane that may be sent now.
    pub fn oldest_ready(&self) -> Option<&str> {
        self.ready.first().map(|(_, n)| n.as_str())
    }

    /// Ready records of the default lane, oldest first.
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

    /// `name`, in flight, is the probe of a failing backend.
    pub fn mark_probe(&mut self, name: &str) {
        self.probing = Some(name.to_string());
    }

    /// Put `name` back: ready now (`None`) or at an instant.
    pub fn requeue(&mut self, name: &str, ready_at: Option<Instant>) {
        if self.probing.as_deref() == Some(name) {
            self.probing = None;
        }
        self.set_state(
            name,
            ready_at.map_or(EntryState::Ready, EntryState::Waiting),
        );
    }

    /// Forget a record the backend accepted; a delivery is a verdict: the backend works.
    pub fn delivered(&mut self, name: &str) -> Option<SpoolEntry> {
        self.verdicts += 1;
        self.last_delivery = self.verdicts;
        self.remove(name)
    }

    /// Who is to blame for a failed POST that carried `names`: `backend_wide` = a failure of
    /// the kind the backend as a whole may be responsible for (connection error, timeout,
    /// 5xx, 408, 429); any other failure is the record's. A backend-wide failure is the
    /// record's only when every record of the POST is evidently at fault: it failed before,
    /// and either another record was delivered since with no backend-wide failure after
    /// that delivery, or its previous failure was already blamed on it and no other answer
    /// came since. Call before [`Spool::note_backend_failure`] and [`Spool::fail`].
    pub fn blame<'a>(&self, names: impl IntoIterator<Item = &'a str>, backend_wide: bool) -> Blame {
        if !backend_wide {
            return Blame::Record;
        }
        let mut any = false;
        for name in names {
            any = true;
            let Some(e) = self.entries.get(name) else {
                return Blame::Backend;
            };
            let at_fault = match e.failed_at {
                None => false,
                Some(at) => {
                    let healthy_since =
                        self.last_delivery > at && self.verdicts == self.last_delivery;
                    let nothing_new = e.own_fault && at == self.verdicts;
                    healthy_since || nothing_new
                }
            };
            if !at_fault {
                return Blame::Backend;
            }
        }
        if any {
            Blame::Record
        } else {
            Blame::Backend
        }
    }

    /// Count one POST that failed in a backend-wide way (whoever was blamed): a verdict
    /// that the backend may not be healthy. Once per POST, before its records' [`Spool::fail`].
    pub fn note_backend_failure(&mut self) {
        self.verdicts += 1;
    }

    /// Record a failed attempt on `name`, blamed as [`Spool::blame`] said: a record blamed
    /// for it waits `backoff`; one whose failure is the backend's stays ready behind the
    /// gate. Returns the entry's `spooled` flag before this call (false = first time
    /// spooled).
    pub fn fail(&mut self, name: &str, blame: Blame, now: Instant, backoff: Duration) -> bool {
        let verdicts = self.verdicts;
        let probe = self.probing.as_deref() == Some(name);
        let Some(e) = self.entries.get_mut(name) else {
            return true;
        };
        e.attempts = e.attempts.saturating_add(1);
        e.failed_at = Some(verdicts);
        e.own_fault = blame == Blame::Record;
        if probe && blame == Blame::Backend {
            e.probe_failed_at = Some(verdicts);
        }
        let was_spooled = std::mem::replace(&mut e.spooled, true);
        let ready_at = (blame == Blame::Record).then_some(now + backoff);
        self.requeue(name, ready_at);
        was_spooled
    }

    /// The record to probe a backend that has been failing with: the oldest ready record,
    /// unless it is at fault itself or already failed as a probe since the last delivery (a
    /// record that fails every time must not be the probe every time, or the spool would
    /// wait for it forever); when every ready record is, the one whose last failure is the
    /// oldest (so during a long outage the probes go round the spool).
    pub fn probe(&self) -> Option<&str> {
        let mut fallback: Option<(u64, &str)> = None;
        for (_, name) in &self.ready {
            let Some(e) = self.entries.get(name) else {
                continue;
            };
            let probed = e.probe_failed_at.is_some_and(|at| at > self.last_delivery);
            if !e.own_fault && !probed {
                return Some(name);
            }
            let at = e.failed_at.unwrap_or(0);
            match fallback {
                Some((f, _)) if f <= at => {}
                _ => fallback = Some((at, name)),
            }
        }
        fallback.map(|(_, n)| n)
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

    /// Hold `uid`'s ready records until `until` (its share of the rate limit is used up).
    /// Returns how many were not marked spooled before.
    pub fn hold_sender(&mut self, uid: u32, until: Instant) -> u64 {
        let names: Vec<String> = self
            .senders
            .get(&uid)
            .map(|(_, set)| set.iter().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default();
        let mut n = 0;
        for name in names {
            let Some(e) = self.entries.get_mut(&name) else {
                continue;
            };
            if e.state != EntryState::Ready {
                continue;
            }
            if !std::mem::replace(&mut e.spooled, true) {
                n += 1;
            }
            self.set_state(&name, EntryState::Waiting(until));
        }
        n
    }

    /// Records to evict, never one in flight, so that the spool fits in `limit` bytes (or
    /// as close as records in flight allow): the oldest record of the unprivileged sender
    /// holding the most bytes, again and again; records of privileged senders
    /// ([`unprivileged_sender`]), oldest first, only once no unprivileged record is left.
    pub fn over_quota(&self, limit: u64) -> Vec<String> {
        let mut total = self.total_size;
        let mut out = Vec::new();
        if total <= limit {
            return out;
        }
        let evictable = |n: &String| {
            self.entries
                .get(n)
                .filter(|e| e.state != EntryState::InFlight)
        };
        // (bytes still held, the sender's records oldest first)
        let mut heaviest: Vec<(u64, std::collections::btree_set::Iter<'_, AgeKey>)> = self
            .senders
            .values()
            .map(|(size, set)| (*size, set.iter()))
            .collect();
        while total > limit {
            // The heaviest sender; between equally heavy ones, the one whose next record is
            // the oldest (deterministic, whatever the map's order).
            let next_age = |i: usize| {
                heaviest[i]
                    .1
                    .clone()
                    .find(|(_, n)| evictable(n).is_some())
                    .map(|(t, _)| *t)
            };
            let Some(i) = (0..heaviest.len()).max_by(|&a, &b| {
                heaviest[a]
                    .0
                    .cmp(&heaviest[b].0)
                    .then_with(|| next_age(b).cmp(&next_age(a)))
            }) else {
                break;
            };
            let next = heaviest[i].1.by_ref().find_map(|(_, n)| evictable(n));
            match next {
                Some(e) => {
                    heaviest[i].0 = heaviest[i].0.saturating_sub(e.size);
                    total = total.saturating_sub(e.size);
                    out.push(e.name.clone());
                }
                None => {
                    let _ = heaviest.swap_remove(i);
                }
            }
        }
        for (_, n) in &self.by_age {
            if total <= limit {
                break;
            }
            let Some(e) = evictable(n).filter(|e| e.uid.is_none()) else {
                continue;
            };
            total = total.saturating_sub(e.size);
            out.push(n.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
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

    /// What the collector answered to one POST in the scenarios below.
    #[derive(Clone, Copy)]
    enum Answer {
        Delivered,
        /// 5xx, reset, timeout.
        BackendWide,
        /// 400, invalid override.
        RecordOnly,
    }

    /// Post `name` as the daemon does and return the blame (`None` = delivered).
    fn post(s: &mut Spool, name: &str, answer: Answer, now: Instant) -> Option<Blame> {
        s.start(name);
        let backend_wide = match answer {
            Answer::Delivered => {
                s.delivered(name);
                return None;
            }
            Answer::BackendWide => true,
            Answer::RecordOnly => false,
        };
        let blame = s.blame([name], backend_wide);
        if backend_wide {
            s.note_backend_failure();
        }
        s.fail(name, blame, now, Duration::from_secs(5));
        Some(blame)
    }

    /// Post the probe [`Spool::probe`] picks; returns its name and blame.
    fn probe(s: &mut Spool, answer: Answer, now: Instant) -> (String, Option<Blame>) {
        let name = s.probe().expect("a probe").to_string();
        s.start(&name);
        s.mark_probe(&name);
        let blame = post(s, &name, answer, now);
        (name, blame)
    }

    #[test]
    fn a_record_failing_while_others_get_through_is_blamed_not_the_backend() {
        use Answer::*;
        use Blame::*;
        let now = Instant::now();
        let mut s = Spool::new();
        for (i, n) in ["poison", "a", "b", "c", "d"].iter().enumerate() {
            s.upsert(n, t(i as u64), 1, 1, None);
        }
        // Its first failure says nothing about whom to blame: the backend.
        assert_eq!(post(&mut s, "poison", BackendWide, now), Some(Backend));
        assert_eq!(s.oldest_ready(), Some("poison"), "ready behind the gate");
        // The oldest record probes (oldest first after a short outage), once.
        assert_eq!(
            probe(&mut s, BackendWide, now),
            ("poison".into(), Some(Backend))
        );
        assert_eq!(probe(&mut s, Delivered, now), ("a".into(), None));
        // Failing again after another record got through: its own fault.
        assert_eq!(s.oldest_ready(), Some("poison"), "oldest first");
        assert_eq!(post(&mut s, "poison", BackendWide, now), Some(Record));
        assert_eq!(s.oldest_ready(), Some("b"), "it waits on its own backoff");
        assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(5)));
        assert!(s.get("poison").unwrap().own_fault);
        // Nothing else happened since: still its own fault (a spool holding only it does
        // not close the gate for the next records).
        s.promote(now + Duration::from_secs(5));
        assert_eq!(post(&mut s, "poison", BackendWide, now), Some(Record));
        assert_eq!(s.get("poison").unwrap().attempts, 4);
        // The backend goes down: a record that never failed is no evidence against itself.
        assert_eq!(post(&mut s, "b", BackendWide, now), Some(Backend));
        s.promote(now + Duration::from_secs(10));
        assert_eq!(s.oldest_ready(), Some("poison"));
        assert_eq!(
            probe(&mut s, BackendWide, now),
            ("b".into(), Some(Backend)),
            "not poison"
        );
        assert_eq!(probe(&mut s, BackendWide, now), ("c".into(), Some(Backend)));
        assert_eq!(probe(&mut s, BackendWide, now), ("d".into(), Some(Backend)));
        // Every ready record failed since the last delivery: the least recently failed,
        // round the spool.
        assert_eq!(
            probe(&mut s, BackendWide, now),
            ("poison".into(), Some(Backend))
        );
        assert_eq!(
            s.blame(["poison"], true),
            Backend,
            "the backend failed in between: no longer evidently the record"
        );
        assert_eq!(probe(&mut s, BackendWide, now), ("b".into(), Some(Backend)));
        assert_eq!(probe(&mut s, Delivered, now), ("c".into(), None));
        // Back up. The first record to fail again is blamed; a second failure before any
        // delivery is the backend's again (it may be flapping).
        assert_eq!(post(&mut s, "b", BackendWide, now), Some(Record));
        assert_eq!(post(&mut s, "d", BackendWide, now), Some(Backend));
        // A refusal of the record is always the record's and counts for nothing else.
        assert_eq!(post(&mut s, "d", RecordOnly, now), Some(Record));
        assert_eq!(
            s.blame(["d"], true),
            Record,
            "nothing new since its refusal"
        );
        assert_eq!(
            s.blame(["b", "poison"], true),
            Backend,
            "one POST, all must be at fault"
        );
        assert_eq!(s.blame(["b", "d"], true), Backend);
        assert_eq!(s.blame(Vec::<&str>::new(), true), Backend);
    }

    #[test]
    fn failed_records_do_not_block_newer_ones() {
        let now = Instant::now();
        let mut s = Spool::new();
        s.upsert("old", t(1), 1, 1, None);
        s.upsert("new", t(2), 1, 1, None);
        s.start("old");
        assert!(
            !s.fail("old", Blame::Record, now, Duration::from_secs(5)),
            "first spool"
        );
        assert_eq!(
            s.oldest_ready(),
            Some("new"),
            "a failed record does not block"
        );
        assert_eq!(s.next_wakeup(), Some(now + Duration::from_secs(5)));
        s.start("new");
        assert!(!s.fail("new", Blame::Backend, now, Duration::from_secs(5)));
        assert_eq!(
            s.oldest_ready(),
            Some("new"),
            "the gate holds it, not a backoff"
        );
        assert_eq!(s.get("old").unwrap().attempts, 1);
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
        assert!(s
            .over_quota(0)
            .iter()
            .all(|n| unprivileged_sender(n).is_none()));
        // A refresh keeps the retry state.
        s.fail("a", Blame::Record, Instant::now(), Duration::from_secs(1));
        s.upsert("a", t(0), 120, 120, None);
        assert_eq!(s.get("a").unwrap().attempts, 1);
        assert!(s.get("a").unwrap().own_fault);
        assert_eq!(s.total_size(), 420);
    }

    #[test]
    fn laned_records_leave_the_default_lane() {
        let now = Instant::now();
        let mut s = Spool::new();
        s.upsert("a", t(1), 10, 10, None);
        s.upsert("b", t(2), 10, 10, None);
        s.upsert("c", t(3), 10, 10, None);
        let lane: Lane = Arc::from("http://other/");
        s.start("a");
        s.set_lane("a", Some(Arc::clone(&lane)));
        s.requeue("a", None);
        assert_eq!(s.oldest_ready(), Some("b"), "not in the default lane");
        assert_eq!(s.lane_oldest_ready(&lane), Some("a"));
        assert_eq!(s.lane_len(&lane), 1);
        s.start("a");
        assert_eq!(s.ready_lanes().count(), 0);
        s.fail("a", Blame::Backend, now, Duration::ZERO);
        assert_eq!(s.lane_oldest_ready(&lane), Some("a"));
        assert_eq!((s.len(), s.in_flight(), s.total_size()), (3, 0, 30));
        s.set_lane("c", Some(Arc::clone(&lane)));
        assert_eq!(s.lane_len(&lane), 2);
        s.unlane_ready();
        assert_eq!(s.ready_names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(s.lane_len(&lane), 0);
        s.set_lane("b", Some(Arc::clone(&lane)));
        s.remove("b");
        assert_eq!((s.lane_len(&lane), s.ready_lanes().count()), (0, 0));
    }

    #[test]
    fn eviction_takes_from_the_heaviest_unprivileged_sender_first() {
        let mut s = Spool::new();
        // Oldest first: root's record, then a flood from uid 65534, then one of uid 4242.
        s.upsert("Root00.u0", t(0), 100, 100, None);
        s.upsert("Unknwn", t(1), 100, 100, None);
        for i in 0..5 {
            s.upsert(&format!("Junk{i:02}.u65534"), t(10 + i), 100, 100, None);
        }
        s.upsert("Other0.u4242", t(5), 100, 100, None);
        s.upsert("Other1.u4242", t(6), 100, 100, None);
        s.start("Junk00.u65534");
        assert_eq!(s.total_size(), 900);
        // 4 records to go: the heaviest sender first (oldest of its records not in flight),
        // until it is no heavier than the next.
        assert_eq!(
            s.over_quota(500),
            [
                "Junk01.u65534",
                "Junk02.u65534",
                "Junk03.u65534",
                "Other0.u4242"
            ]
        );
        // Everything unprivileged that can go goes before any privileged record.
        let all = s.over_quota(100);
        assert_eq!(all.len(), 8);
        assert!(all[..6].iter().all(|n| unprivileged_sender(n).is_some()));
        assert_eq!(
            all[6..],
            ["Root00.u0", "Unknwn"],
            "then privileged, oldest first"
        );
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        assert_eq!(s.hold_sender(65534, until), 4, "in flight is not held");
        assert_eq!(s.next_wakeup(), Some(until));
        assert_eq!(
            s.ready_names().collect::<Vec<_>>(),
            ["Root00.u0", "Unknwn", "Other0.u4242", "Other1.u4242"]
        );
        s.promote(until);
        assert_eq!(s.ready_names().count(), 8);
    }
}
