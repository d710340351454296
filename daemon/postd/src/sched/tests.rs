//! The scheduler on made-up time: a fake loop performs its actions on an in-memory spool
//! dir and answers each job with the outcome a test chooses, so a minute of retries runs in
//! milliseconds.

use std::collections::BTreeMap;
use std::path::Path;

use libtelemetry::record::Headers;
use libtelemetry::status::{COUNTER_DROPPED, COUNTER_FAILED_ATTEMPTS, COUNTER_SPOOLED};
use libtelemetry::Config;

use super::*;
use crate::counters::COUNTER_LOCAL;
use crate::delivery::Outcome;
use crate::spool::Lane;
use crate::workers::{ItemResult, JobResult};

/// Bytes of every made-up record.
const LEN: u64 = 100;
/// Steps of the made-up clock between two looks at the scheduler.
const STEP: Duration = Duration::from_millis(100);

fn settings(extra: &str) -> Settings {
    settings_for("http://127.0.0.1:1/v2/collector", extra)
}

fn settings_for(server: &str, extra: &str) -> Settings {
    let text = format!("[settings]\nserver={server}\n{extra}");
    let cfg = Config::parse(&text, Path::new("t.conf"), &Paths::default()).unwrap();
    Settings::from_config(cfg).unwrap()
}

fn staged(name: &str) -> Box<StagedRecord> {
    Box::new(StagedRecord {
        cfg_path: None,
        headers: Headers(std::array::from_fn(|_| String::new())),
        body: format!("{name}\n").into_bytes(),
    })
}

/// The scheduler, a fake spool dir and everything the scheduler asked for.
struct Harness {
    s: Scheduler,
    t0: Instant,
    now: Instant,
    /// The spool dir: name → creation time.
    files: BTreeMap<String, SystemTime>,
    /// Jobs submitted and not answered yet.
    jobs: Vec<Job>,
    /// Names in the order their POSTs were answered 200/201.
    delivered: Vec<String>,
    /// POSTs per record, with the instant each was answered.
    attempts: BTreeMap<String, Vec<Instant>>,
    deleted: Vec<String>,
    quarantined: Vec<String>,
    journaled: usize,
    switched_to: Option<PathBuf>,
    synced: usize,
}

impl Harness {
    fn new(settings: Settings) -> Harness {
        // Counters start due (their first write announces the daemon): at the first tick.
        let t0 = Instant::now() + Duration::from_secs(1);
        let workers = settings.max_in_flight;
        let s = Scheduler::new(
            settings,
            Counters::new(),
            Arc::new(Paths::default()),
            workers,
            Duration::from_secs(300),
            t0,
            7,
        );
        let mut h = Harness {
            s,
            t0,
            now: t0,
            files: BTreeMap::new(),
            jobs: Vec::new(),
            delivered: Vec::new(),
            attempts: BTreeMap::new(),
            deleted: Vec::new(),
            quarantined: Vec::new(),
            journaled: 0,
            switched_to: None,
            synced: 0,
        };
        let first = h.s.start(t0);
        h.perform(first);
        h
    }

    /// The wall clock, in step with the monotonic one.
    fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + self.now.duration_since(self.t0)
    }

    fn secs(&self) -> f64 {
        self.now.duration_since(self.t0).as_secs_f64()
    }

    /// A record staged `age` ago, seen by the watch.
    fn stage(&mut self, name: &str, age: Duration) {
        let created = self.wall() - age;
        self.files.insert(name.to_string(), created);
        let found = Some(Inspection::Found(Found {
            created,
            size: LEN,
            len: LEN,
            age,
        }));
        let name = name.to_string();
        self.handle(Event::Staged { name, found });
    }

    fn handle(&mut self, event: Event) {
        let actions = self.s.handle(self.now, event);
        self.perform(actions);
    }

    /// Move the clock to `t0 + secs` and do what is due.
    fn at(&mut self, secs: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self.settle();
    }

    fn settle(&mut self) {
        for _ in 0..32 {
            let actions = self.s.tick(self.now, self.wall());
            if actions.is_empty() {
                return;
            }
            self.perform(actions);
        }
        panic!("the scheduler does not settle");
    }

    /// What the event loop does, on the fake dir.
    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            let event = match action {
                Action::Rescan => Some(Event::Scanned(self.files.keys().cloned().collect())),
                Action::Inspect(name) => {
                    let found = match self.files.get(&name) {
                        Some(created) => Inspection::Found(Found {
                            created: *created,
                            size: LEN,
                            len: LEN,
                            age: self.wall().duration_since(*created).unwrap_or_default(),
                        }),
                        None => Inspection::Vanished,
                    };
                    Some(Event::Listed { name, found })
                }
                Action::Submit(job) => {
                    self.jobs.push(job);
                    None
                }
                Action::Delete(name) => {
                    assert!(self.files.remove(&name).is_some(), "{name} deleted twice");
                    self.deleted.push(name);
                    None
                }
                Action::Quarantine { name, reason } => {
                    self.files.remove(&name);
                    self.quarantined.push(name.clone());
                    let to = PathBuf::from(".quarantine").join(&name);
                    Some(Event::Quarantined { name, reason, to })
                }
                Action::Read { name, purpose } => Some(Event::Read {
                    result: Ok(staged(&name)),
                    name,
                    purpose,
                }),
                Action::Journal(_) => {
                    self.journaled += 1;
                    None
                }
                Action::SyncDir(_) => {
                    self.synced += 1;
                    None
                }
                Action::SwitchSpoolDir(dir) => {
                    self.switched_to = Some(dir.clone());
                    Some(Event::SpoolDirSwitched(Some(dir)))
                }
                Action::PauseDefault(_)
                | Action::PauseAll
                | Action::Ignore(_)
                | Action::WriteStatus(_)
                | Action::ReleaseMemory => None,
            };
            if let Some(event) = event {
                self.handle(event);
            }
        }
    }

    /// Answer every job submitted so far: a job of one record with `answer(name)`; a batch
    /// (one POST) with the first failure `answer` gives for one of its records, if any.
    fn answer(&mut self, answer: impl Fn(&str) -> Outcome) {
        for job in std::mem::take(&mut self.jobs) {
            let verdict = job
                .records
                .iter()
                .map(|(name, _)| answer(name))
                .find(|o| !o.is_accepted())
                .unwrap_or(Outcome::Accepted(200));
            let items = job
                .records
                .iter()
                .map(|(name, size)| {
                    let outcome = verdict.clone();
                    self.attempts
                        .entry(name.clone())
                        .or_default()
                        .push(self.now);
                    if outcome.is_accepted() {
                        // The worker deletes what the backend accepted.
                        self.files.remove(name);
                        self.delivered.push(name.clone());
                    }
                    ItemResult {
                        name: name.clone(),
                        size: *size,
                        result: JobResult::Posted {
                            outcome,
                            staged: staged(name),
                            remove_error: None,
                        },
                    }
                })
                .collect();
            let lane = job.lane.clone();
            self.handle(Event::Done(Box::new(Completion {
                items,
                elapsed: Duration::from_millis(20),
                finished: self.wall(),
                lane,
            })));
        }
    }

    /// Run the clock from now to `t0 + until` in steps; at each, answer every job at once
    /// and go on while the scheduler hands out more (a backend that answers instantly).
    fn run_until(&mut self, until: f64, answer: impl Fn(&str) -> Outcome) {
        while self.secs() < until {
            let next = self.secs() + STEP.as_secs_f64();
            self.at(next);
            for _ in 0..1000 {
                if self.jobs.is_empty() {
                    break;
                }
                self.answer(&answer);
                self.settle();
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.s.counters().get(name)
    }

    fn submitted(&self) -> Vec<String> {
        self.jobs
            .iter()
            .flat_map(|j| j.records.iter().map(|(n, _)| n.clone()))
            .collect()
    }
}

fn name(i: usize) -> String {
    format!("rec{i:03}")
}

fn ok(_: &str) -> Outcome {
    Outcome::Accepted(201)
}

/// The oldest record fails every time (500 for it only, or a reset of its POST); 50 good
/// records behind it are delivered within two gate periods (≈ 12 s), oldest first, while
/// the poisoned one stays, retried on its own backoff, never deleted.
fn a_poisoned_record_costs_the_spool_two_gate_periods_once(poison: Outcome) {
    let mut h = Harness::new(settings("delivery_max_in_flight=1\n"));
    h.stage(&name(0), Duration::from_secs(600));
    for i in 1..=50 {
        h.stage(&name(i), Duration::from_secs(500 - i as u64));
    }
    let answer = |n: &str| {
        if n == name(0) {
            poison.clone()
        } else {
            ok(n)
        }
    };
    // Two gate periods: 5 s and 7.5 s, each ±20 %.
    h.run_until(16.0, answer);
    let good: Vec<String> = (1..=50).map(name).collect();
    assert_eq!(h.delivered, good, "all 50, oldest first, each once");
    let first_good = h.attempts[&name(1)][0].duration_since(h.t0);
    assert!(
        first_good >= Duration::from_secs_f64(0.8 * 12.5),
        "the gate held twice first: {first_good:?}"
    );
    assert_eq!(h.files.keys().collect::<Vec<_>>(), [&name(0)]);
    // From now on only the poisoned record fails, on its own schedule: the gate stays
    // open, so a new record goes at once.
    let failed_before = h.counter(COUNTER_FAILED_ATTEMPTS);
    h.run_until(60.0, answer);
    let retries = h.attempts[&name(0)].clone();
    assert!(
        h.counter(COUNTER_FAILED_ATTEMPTS) > failed_before,
        "{retries:?}"
    );
    for pair in retries.windows(2).skip(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_secs(4), "its own backoff: {gap:?}");
    }
    let t = h.secs();
    h.stage(&name(51), Duration::ZERO);
    h.at(t);
    assert_eq!(h.submitted(), [name(51)], "the gate is open");
    assert!(h.deleted.is_empty() && h.quarantined.is_empty());
    assert_eq!(
        h.s.spool().get(&name(0)).unwrap().attempts as usize,
        retries.len()
    );
}

#[test]
fn a_record_the_backend_answers_500_does_not_hold_up_the_spool() {
    a_poisoned_record_costs_the_spool_two_gate_periods_once(Outcome::Status(500));
}

#[test]
fn a_record_whose_post_is_reset_does_not_hold_up_the_spool() {
    a_poisoned_record_costs_the_spool_two_gate_periods_once(Outcome::Transport(
        "connection reset".into(),
    ));
}

/// A backend that fails everything: the gate backs off 5 s × 1.5ⁿ (±20 %), one probe at
/// a time; once it answers, everything goes, oldest first, each once.
fn backend_down_then_up(failure: Outcome) {
    let mut h = Harness::new(settings("delivery_max_in_flight=1\n"));
    for i in 0..5 {
        h.stage(&name(i), Duration::from_secs(600 - 10 * i as u64));
    }
    h.run_until(40.0, |_| failure.clone());
    // Only the probe went while the backend was down, once per gate period.
    let tries: Vec<Instant> = h.attempts.values().flatten().copied().collect();
    let mut tries = tries;
    tries.sort();
    let gaps: Vec<f64> = tries
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    assert!(gaps.len() >= 3, "{gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = 5.0 * 1.5f64.powi(i as i32);
        assert!(
            (0.8 * nominal - 0.2..=1.2 * nominal + 0.2).contains(gap),
            "gap {i}: {gap} s, nominal {nominal} s ({gaps:?})"
        );
    }
    assert!(h.delivered.is_empty());
    assert_eq!(h.files.len(), 5, "nothing deleted");
    assert!(h.counter(COUNTER_SPOOLED) >= 1);
    // Back: the probe reopens the gate, the rest follows at once, oldest first (after an
    // outage of several probes, the probe that succeeds may be a younger record).
    h.run_until(40.0 + 1.2 * 5.0 * 1.5f64.powi(gaps.len() as i32) + 1.0, ok);
    let mut all = h.delivered.clone();
    all.sort();
    assert_eq!(all, (0..5).map(name).collect::<Vec<_>>(), "each once");
    let after_probe = h.delivered[1..].to_vec();
    let mut sorted = after_probe.clone();
    sorted.sort();
    assert_eq!(after_probe, sorted, "oldest first after the probe");
    assert!(h.files.is_empty());
    assert_eq!(h.journaled, 5);
}

#[test]
fn a_refusing_backend_is_backed_off_then_drained_oldest_first() {
    backend_down_then_up(Outcome::Transport("connection refused".into()));
}

#[test]
fn http_500_is_retried_with_backoff() {
    backend_down_then_up(Outcome::Status(500));
}

#[test]
fn a_timeout_is_retried_with_backoff() {
    backend_down_then_up(Outcome::Transport("timed out".into()));
}

/// 400 is the record's fault: it backs off on its own, the gate stays open for others.
#[test]
fn http_400_is_retried_on_its_own_until_accepted() {
    let mut h = Harness::new(settings(""));
    h.stage(&name(0), Duration::from_secs(10));
    h.at(0.0);
    h.answer(|_| Outcome::Status(400));
    h.stage(&name(1), Duration::ZERO);
    h.at(0.1);
    assert_eq!(h.submitted(), [name(1)], "the gate is open");
    h.answer(ok);
    h.at(3.9);
    assert!(h.jobs.is_empty(), "its own backoff: ≥ 4 s");
    h.run_until(6.1, ok);
    assert_eq!(h.delivered, [name(1), name(0)]);
    assert_eq!(h.counter(COUNTER_FAILED_ATTEMPTS), 1);
}

/// `Retry-After` beyond the backoff holds the gate that long.
#[test]
fn retry_after_is_honoured() {
    let mut h = Harness::new(settings(""));
    h.stage(&name(0), Duration::from_secs(10));
    h.at(0.0);
    h.answer(|_| Outcome::Throttled(503, Some(Duration::from_secs(40))));
    // The status write the failure made due.
    h.at(1.0);
    assert_eq!(
        h.s.next_deadline(h.now),
        h.t0 + Duration::from_secs(40),
        "the loop sleeps until the gate reopens"
    );
    h.at(39.9);
    assert!(h.jobs.is_empty());
    h.at(40.0);
    assert_eq!(h.submitted(), [name(0)], "the probe");
    h.answer(ok);
    assert_eq!(h.delivered, [name(0)]);
}

/// 429/503 are the backend's even when other records get through.
#[test]
fn throttling_always_closes_the_gate() {
    let mut h = Harness::new(settings("delivery_max_in_flight=1\n"));
    for i in 0..3 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    h.at(0.0);
    h.answer(ok);
    h.at(0.1);
    h.answer(|_| Outcome::Throttled(429, None));
    h.at(0.2);
    assert!(h.jobs.is_empty(), "gate closed");
    h.run_until(7.0, ok);
    assert_eq!(h.delivered, [name(0), name(1), name(2)]);
}

#[test]
fn spool_strategy_keeps_rate_limited_records_until_the_next_minute() {
    let mut h = Harness::new(settings(
        "record_burst_limit=2\nrecord_window_length=1\ndelivery_max_in_flight=1\n",
    ));
    for i in 0..5 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    h.run_until(59.0, ok);
    assert_eq!(h.delivered, [name(0), name(1)]);
    assert_eq!(h.counter(COUNTER_SPOOLED), 3);
    assert_eq!(h.s.next_deadline(h.now), h.t0 + Duration::from_secs(60));
    h.run_until(61.0, ok);
    assert_eq!(h.delivered.len(), 4, "two more in the next minute");
    h.run_until(121.0, ok);
    assert_eq!(h.delivered, (0..5).map(name).collect::<Vec<_>>());
    assert!(h.deleted.is_empty(), "nothing dropped");
}

#[test]
fn drop_strategy_drops_and_journals_rate_limited_records() {
    let mut h = Harness::new(settings(
        "record_burst_limit=2\nrate_limit_strategy=drop\ndelivery_max_in_flight=1\n",
    ));
    for i in 0..5 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    h.run_until(1.0, ok);
    assert_eq!(h.delivered, [name(0), name(1)]);
    assert_eq!(h.deleted, [name(2), name(3), name(4)]);
    assert_eq!(h.counter(COUNTER_DROPPED), 3);
    assert_eq!(h.journaled, 5, "dropped records are journaled too");
    assert!(h.files.is_empty());
}

#[test]
fn byte_limit_counts_real_bytes() {
    let mut h = Harness::new(settings(&format!(
        "byte_burst_limit={}\ndelivery_max_in_flight=1\n",
        2 * LEN + 10
    )));
    for i in 0..4 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    h.run_until(1.0, ok);
    assert_eq!(h.delivered, [name(0), name(1)]);
    assert_eq!(h.counter(COUNTER_SPOOLED), 2);
    assert_eq!(h.files.len(), 2);
}

#[test]
fn expiry_deletes_records_older_than_record_expiry_continuously() {
    let mut h = Harness::new(settings("record_expiry=1\n"));
    h.stage(&name(0), Duration::from_secs(120));
    h.stage(&name(1), Duration::ZERO);
    h.at(0.0);
    assert_eq!(h.deleted, [name(0)], "expired at sight");
    assert_eq!(h.counter(COUNTER_EXPIRED), 1);
    assert_eq!(h.submitted(), [name(1)]);
    // The backend is down; the record ages in the spool and expires there (not while a
    // POST of it is in flight).
    h.run_until(59.0, |_| Outcome::Transport("connection refused".into()));
    assert!(h.deleted.len() == 1 && h.files.contains_key(&name(1)));
    h.run_until(80.0, |_| Outcome::Transport("connection refused".into()));
    assert_eq!(h.deleted, [name(0), name(1)]);
    assert_eq!(h.counter(COUNTER_EXPIRED), 2);
    assert!(h.delivered.is_empty());
}

#[test]
fn quota_evicts_the_oldest_records() {
    // Rate limited to nothing: records leave only by the quota.
    let mut h = Harness::new(settings(&format!(
        "record_burst_limit=0\nspool_max_size={}\n",
        1
    )));
    // 1 KiB holds ten records of LEN bytes.
    for i in 0..12 {
        h.stage(&name(i), Duration::from_secs(400 - i as u64));
    }
    h.at(0.0);
    assert_eq!(h.deleted, [name(0), name(1)]);
    assert_eq!(h.counter(COUNTER_EVICTED), 2);
    assert!(h.delivered.is_empty() && h.jobs.is_empty());
}

#[test]
fn delivery_disabled_journals_and_deletes() {
    let mut h = Harness::new(settings("record_server_delivery_enabled=false\n"));
    h.stage(&name(0), Duration::ZERO);
    h.stage(&name(1), Duration::ZERO);
    h.at(0.0);
    assert_eq!(h.deleted, [name(0), name(1)]);
    assert_eq!(h.counter(COUNTER_LOCAL), 2);
    assert_eq!(h.journaled, 2);
    assert!(h.jobs.is_empty());
}

/// A record a scan finds (not a close event) waits until it is 2 s old.
#[test]
fn a_scanned_file_settles_before_it_is_read() {
    let mut h = Harness::new(settings(""));
    h.files.insert(name(0), h.wall());
    h.handle(Event::Overflow);
    h.at(0.0);
    assert!(h.jobs.is_empty());
    assert_eq!(h.s.next_deadline(h.now), h.t0 + SETTLE);
    h.at(2.0);
    assert_eq!(h.submitted(), [name(0)]);
}

#[test]
fn a_new_spool_dir_is_used_once_the_jobs_in_flight_finish() {
    let mut h = Harness::new(settings("delivery_max_in_flight=1\n"));
    h.stage(&name(0), Duration::from_secs(10));
    h.stage(&name(1), Duration::from_secs(5));
    h.at(0.0);
    assert_eq!(h.submitted(), [name(0)]);
    let mut new = settings("delivery_max_in_flight=1\n");
    new.cfg.spool_dir = PathBuf::from("/new/spool");
    h.handle(Event::Reload(Box::new(new)));
    h.at(0.1);
    assert!(h.switched_to.is_none(), "r0 is in flight");
    h.answer(ok);
    h.at(0.2);
    assert_eq!(h.switched_to.as_deref(), Some(Path::new("/new/spool")));
    assert_eq!(h.s.spool_dir().as_path(), Path::new("/new/spool"));
    assert!(h.synced >= 1, "unlinks in the old dir made durable first");
    // The rescan of the new dir (the fake one still lists r1) picks it up.
    h.at(2.5);
    assert_eq!(h.submitted(), [name(1)]);
}

#[test]
fn shutdown_waits_for_the_posts_in_flight_only() {
    let mut h = Harness::new(settings("delivery_max_in_flight=1\n"));
    h.stage(&name(0), Duration::from_secs(10));
    h.stage(&name(1), Duration::from_secs(5));
    h.at(0.0);
    h.handle(Event::Terminate(libc::SIGTERM));
    assert!(!h.s.should_exit(h.now));
    assert_eq!(h.s.next_deadline(h.now), h.now + SHUTDOWN_GRACE);
    h.answer(ok);
    h.at(0.1);
    assert!(h.jobs.is_empty(), "no new job");
    assert!(h.s.should_exit(h.now));
    assert_eq!(h.delivered, [name(0)]);
    assert!(h.files.contains_key(&name(1)));
}

#[test]
fn recycling_exits_when_idle_with_an_empty_spool() {
    let mut h = Harness::new(settings("daemon_recycling_enabled=true\n"));
    h.stage(&name(0), Duration::ZERO);
    h.at(0.0);
    h.answer(ok);
    // The status write the delivery made due.
    h.at(1.0);
    // Memory is given back 5 s after the last activity, then the daemon exits after
    // 300 s.
    assert_eq!(h.s.next_deadline(h.now), h.t0 + MemoryRelease::IDLE);
    let mut t = 1.0;
    while !h.s.should_exit(h.now) {
        let next = h.s.next_deadline(h.now);
        assert!(next > h.now);
        t = next.duration_since(h.t0).as_secs_f64();
        h.at(t);
    }
    assert_eq!(t, 300.0);
}

#[test]
fn the_deadline_is_never_past_after_a_tick() {
    // Whatever is due is done by the tick, so the loop never spins on a past deadline.
    let mut h = Harness::new(settings(
        "record_burst_limit=2\nrecord_window_length=1\ndelivery_max_in_flight=2\n",
    ));
    for i in 0..6 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    let mut t = 0.0;
    while t < 130.0 {
        h.at(t);
        assert!(h.s.next_deadline(h.now) > h.now, "at {t} s");
        h.answer(|n| {
            if n == name(1) {
                Outcome::Status(500)
            } else {
                ok(n)
            }
        });
        t += 0.25;
    }
}

/// OTLP: a batch that fails while the backend takes other records carries a poisoned
/// record; the batch is split and the poisoned record goes alone from then on.
#[test]
fn a_poisoned_record_is_isolated_from_its_otlp_batch() {
    let mut h = Harness::new(settings_for("http://127.0.0.1:1/v1/logs", ""));
    h.stage(&name(0), Duration::from_secs(600));
    for i in 1..=20 {
        h.stage(&name(i), Duration::from_secs(500 - i as u64));
    }
    h.at(0.0);
    assert!(h.jobs.is_empty(), "the batch lingers");
    h.at(0.2);
    assert_eq!(h.jobs.len(), 1);
    assert_eq!(h.jobs[0].records.len(), 21, "one batch");
    let poisoned = |n: &str| {
        if n == name(0) {
            Outcome::Status(500)
        } else {
            Outcome::Accepted(200)
        }
    };
    h.run_until(30.0, poisoned);
    let mut seen = h.delivered.clone();
    seen.sort();
    assert_eq!(seen, (1..=20).map(name).collect::<Vec<_>>(), "each once");
    assert_eq!(h.files.keys().collect::<Vec<_>>(), [&name(0)]);
    assert!(
        h.quarantined.is_empty(),
        "a 500 is retried, not quarantined"
    );
    // From now on it goes alone, and fails alone.
    h.stage(&name(21), Duration::ZERO);
    h.run_until(90.0, poisoned);
    assert!(h.delivered.contains(&name(21)));
    let alone = h.attempts[&name(0)].len();
    assert!(alone >= 4, "retried on its own: {alone}");
}

/// The rate gate expires while the backend gate is closed: the loop sleeps until the
/// backend gate reopens instead of waking every millisecond for the expired rate gate.
#[test]
fn an_expired_rate_gate_behind_a_closed_backend_gate_is_no_busy_loop() {
    let mut h = Harness::new(settings(
        "record_burst_limit=2\nrecord_window_length=1\ndelivery_max_in_flight=2\n\
         delivery_concurrency=fixed\n",
    ));
    for i in 0..3 {
        h.stage(&name(i), Duration::from_secs(100 - i as u64));
    }
    h.at(0.0);
    assert_eq!(h.submitted(), [name(0), name(1)]);
    // r1's POST is slow; r2 waits for the next minute (r1 is reserved).
    let slow = h.jobs.pop().unwrap();
    h.answer(ok);
    h.at(0.1);
    assert_eq!(h.counter(COUNTER_SPOOLED), 1);
    // At last the backend throttles it for two minutes.
    h.at(59.0);
    h.jobs.push(slow);
    h.answer(|_| Outcome::Throttled(503, Some(Duration::from_secs(120))));
    h.at(60.0);
    assert!(h.jobs.is_empty(), "the backend gate is closed");
    let next = h.s.next_deadline(h.now);
    assert!(next > h.now + Duration::from_secs(1), "{:?}", next - h.now);
    // The backend gate reopens at 59 s + Retry-After.
    h.at(178.9);
    assert!(h.jobs.is_empty());
    h.run_until(180.0, ok);
    assert_eq!(h.delivered, [name(0), name(1), name(2)]);
}

/// Take the jobs of `lane` out of the harness (answered by the test itself).
fn take_lane_jobs(h: &mut Harness, lane: &Lane) -> Vec<Job> {
    let (ours, rest) = std::mem::take(&mut h.jobs)
        .into_iter()
        .partition(|j| j.lane.as_ref() == Some(lane));
    h.jobs = rest;
    ours
}

/// A default worker read `name` and found its override sends it to `lane`.
fn reroute(h: &mut Harness, name: &str, lane: &Lane) {
    let pos = h
        .jobs
        .iter()
        .position(|j| j.records.iter().any(|(n, _)| n == name))
        .expect("a job of the record");
    let job = h.jobs.remove(pos);
    assert!(job.lane.is_none());
    let items = job
        .records
        .iter()
        .map(|(n, size)| ItemResult {
            name: n.clone(),
            size: *size,
            result: if n == name {
                JobResult::Rerouted(Some(lane.clone()))
            } else {
                JobResult::Skipped
            },
        })
        .collect();
    let finished = h.wall();
    h.handle(Event::Done(Box::new(Completion {
        items,
        elapsed: Duration::from_millis(1),
        finished,
        lane: None,
    })));
}

/// Records whose override names a server that accepts and never answers go in a lane of
/// their own, one POST at a time behind the lane's own gate: the default backend's records
/// go on as if it did not exist.
#[test]
fn a_hanging_override_server_delays_no_one_else() {
    let mut h = Harness::new(settings(""));
    let lane: Lane = Arc::from("http://192.0.2.1/v2/collector");
    h.stage("hang00", Duration::ZERO);
    h.at(0.0);
    reroute(&mut h, "hang00", &lane);
    h.at(0.0);
    let mut hanging = take_lane_jobs(&mut h, &lane);
    assert_eq!(hanging.len(), 1, "the lane's POST");
    let mut lane_posts = 1;
    for k in 0..20 {
        let t = k as f64;
        h.at(t);
        h.stage(&name(k), Duration::ZERO);
        if k % 2 == 0 {
            // Another record for the hanging server, every 2 s.
            let hang = format!("hang{:02}", k + 1);
            h.stage(&hang, Duration::ZERO);
            h.at(t);
            reroute(&mut h, &hang, &lane);
        }
        h.at(t);
        let more = take_lane_jobs(&mut h, &lane);
        assert!(
            more.is_empty() || hanging.is_empty(),
            "one POST at a time in the lane"
        );
        lane_posts += more.len();
        hanging.extend(more);
        // The default backend answers at once.
        h.answer(ok);
        assert_eq!(h.delivered.last(), Some(&name(k)), "at once, at {t} s");
        if t == 10.0 {
            // The hanging POST times out (10 s): the lane's gate closes, not the default
            // one.
            let job = hanging.pop().unwrap();
            h.jobs.push(job);
            h.answer(|_| Outcome::Transport("timed out".into()));
        }
    }
    assert_eq!(lane_posts, 2, "a second try after the lane's backoff");
    assert_eq!(h.delivered.len(), 20);
    assert!(h.files.keys().all(|n| n.starts_with("hang")));
}
