//! The spool: outages and retries, failure kinds, expiry, quota, rate-limit strategies,
//! quarantine, delivery disabled.

use std::time::Duration;

use libtelemetry::status::{
    COUNTER_DELIVERED, COUNTER_DROPPED, COUNTER_EVICTED, COUNTER_EXPIRED, COUNTER_FAILED_ATTEMPTS,
    COUNTER_QUARANTINED, COUNTER_SPOOLED,
};
use telemetrics_tests::collector::{Behavior, Collector};

use super::*;

#[test]
fn backend_down_then_up_delivers_everything_once_oldest_first() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "1");
    c.refuse();
    for i in 0..5 {
        stage(&root, i, Duration::from_secs(600 - 10 * i as u64));
    }
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_FAILED_ATTEMPTS, 1));
    // More records while the backend is down: the spool grows.
    for i in 5..8 {
        stage(&root, i, Duration::from_secs(300 - 10 * i as u64));
    }
    assert!(wait_until(SOON, || spool_names(&root).len() == 8));
    c.resume();
    assert!(c.wait_for(8, Duration::from_secs(60)));
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    let order: Vec<usize> = c.requests().iter().map(|r| index_of(&r.text())).collect();
    assert_eq!(order, (0..8).collect::<Vec<_>>(), "each once, oldest first");
    assert!(wait_counter(&root, COUNTER_DELIVERED, 8));
    assert_eq!(
        journal(&root).len(),
        8,
        "spool deliveries are journaled too"
    );
    assert!(status(&root).counter(COUNTER_SPOOLED) >= 1);
}

/// A failing backend leaves the record spooled; once it answers 201 the record goes. (How
/// each status is blamed and backed off is unit-tested on made-up time in `postd::sched`;
/// these are the failures that need a real connection: a reset, the 10 s timeout.)
fn failure_then_recovery(behavior: Behavior, min_attempts: usize) {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    c.set_behavior(behavior.clone());
    stage(&root, 0, Duration::from_secs(10));
    let _d = spawn(&root);
    assert!(
        c.wait_for_attempts(min_attempts, Duration::from_secs(40)),
        "{behavior:?}"
    );
    assert!(wait_counter(&root, COUNTER_FAILED_ATTEMPTS, 1));
    assert_eq!(
        spool_names(&root),
        ["rec000"],
        "{behavior:?}: still spooled"
    );
    let last = status(&root).last_delivery.expect("last delivery");
    assert!(!last.ok, "{last:?}");
    // A slow answer arrives after the client gave up: the collector counted it, the
    // daemon did not (a duplicate on retry is the price of never losing the record).
    let late = c.accepted_count();
    c.set_behavior(Behavior::Normal);
    assert!(
        c.wait_for(late + 1, Duration::from_secs(40)),
        "{behavior:?}"
    );
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 1));
    assert_eq!(c.accepted_count(), late + 1);
}

#[test]
fn connection_reset_is_retried() {
    failure_then_recovery(Behavior::Reset, 1);
}

#[test]
fn slow_backend_times_out_after_10_s() {
    failure_then_recovery(Behavior::Slow(Duration::from_secs(12)), 1);
}

/// One record the collector answers 500, always, the oldest, and 50 good ones: the 50 are
/// delivered within seconds, oldest first, while the poisoned record stays in the spool
/// and is retried on its own backoff. (The same for a record whose POST is reset, and in
/// OTLP batches, and the schedule itself, are unit-tested on made-up time in
/// `postd::sched`.)
#[test]
fn a_record_the_collector_answers_500_does_not_hold_up_the_spool() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    // One POST at a time: the poisoned record cannot ride along with good ones in flight.
    root.set("delivery_max_in_flight", "1");
    let mut bad = record(0);
    bad.payload = b"record 0 poison".to_vec();
    c.set_behavior(Behavior::StatusIfBodyContains {
        marker: "poison".into(),
        status: 500,
    });
    stage_poisoned_spool(&root, &bad);
    let d = spawn(&root);
    let started = std::time::Instant::now();
    assert!(
        c.wait_for(50, SOON),
        "{} of 50 delivered in {SOON:?}",
        c.accepted_count()
    );
    eprintln!("50 delivered in {:?}", started.elapsed());
    let order: Vec<usize> = c.requests().iter().map(|r| index_of(&r.text())).collect();
    assert_eq!(order, (1..=50).collect::<Vec<_>>(), "oldest first");
    assert!(wait_until(SOON, || spool_names(&root) == ["rec000"]));
    // Still retried, on its own schedule, and never deleted.
    assert!(wait_counter(&root, COUNTER_FAILED_ATTEMPTS, 3));
    assert!(wait_until(SOON, || d.log().contains("retried on its own")));
    assert_eq!(spool_names(&root), ["rec000"]);
    assert_eq!(status(&root).counter(COUNTER_DELIVERED), 50);
}

#[test]
fn expiry_deletes_records_older_than_record_expiry() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_expiry", "1");
    c.refuse();
    stage(&root, 0, Duration::from_secs(120));
    stage(&root, 1, Duration::ZERO);
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_EXPIRED, 1));
    assert_eq!(spool_names(&root), ["rec001"]);
    c.resume();
    assert!(c.wait_for(1, Duration::from_secs(40)));
    assert_eq!(index_of(&c.requests()[0].text()), 1);
}

#[test]
fn quota_evicts_the_oldest_records() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    // Rate limited to 0 records with the spool strategy: nothing leaves but by the quota.
    root.set("record_burst_limit", "0");
    let paths: Vec<_> = (0..4)
        .map(|i| stage(&root, i, Duration::from_secs(400 - 100 * i as u64)))
        .collect();
    let size = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(p).unwrap();
        md.len().max(md.blocks() * 512)
    };
    let each = paths.iter().map(|p| size(p)).max().unwrap();
    // Room for two records, not three.
    let kib = (2 * each).div_ceil(1024);
    assert!(kib * 1024 < 3 * each);
    root.set("spool_max_size", &kib.to_string());
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_EVICTED, 2));
    assert_eq!(spool_names(&root), ["rec002", "rec003"]);
    assert!(wait_counter(&root, COUNTER_SPOOLED, 1));
    assert_eq!(c.attempt_count(), 0);
}

#[test]
fn drop_strategy_drops_and_journals_rate_limited_records() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_burst_limit", "2")
        .set("rate_limit_strategy", "drop")
        .set("delivery_max_in_flight", "1");
    for i in 0..5 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_DROPPED, 3));
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    assert!(wait_until(SOON, || journal(&root).len() == 5));
    assert_eq!(c.accepted_count(), 2);
    assert_eq!(status(&root).counter(COUNTER_DELIVERED), 2);
}

#[test]
fn spool_strategy_keeps_rate_limited_records() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_burst_limit", "2")
        .set("byte_burst_limit", "-1")
        .set("delivery_max_in_flight", "1");
    for i in 0..5 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let _d = spawn(&root);
    assert!(c.wait_for(2, SOON));
    assert!(wait_counter(&root, COUNTER_SPOOLED, 3));
    assert_eq!(spool_names(&root), ["rec002", "rec003", "rec004"]);
    assert_eq!(c.accepted_count(), 2);
    assert!(wait_until(SOON, || journal(&root).len() == 2));
}

#[test]
fn byte_limit_counts_real_bytes() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    let one = libtelemetry::encode_staged(&record(0), None).len();
    // Room for two records' bytes (the C daemon would have counted 4 per record).
    root.set("byte_burst_limit", &(2 * one + 10).to_string())
        .set("delivery_max_in_flight", "1");
    for i in 0..4 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let _d = spawn(&root);
    assert!(c.wait_for(2, SOON));
    assert!(wait_counter(&root, COUNTER_SPOOLED, 2));
    assert_eq!(c.accepted_count(), 2);
    assert_eq!(spool_names(&root).len(), 2);
}

#[test]
fn corrupt_files_are_quarantined() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    let old = Duration::from_secs(60);
    stage_bytes(&root, "emptym", b"", old);
    stage_bytes(&root, "incorr", b"test\n", old);
    stage_bytes(
        &root,
        "incohd",
        b"record_format_version: 1\nnclassificatioooon: crash/kernel/bug\nseverity: 0\n\
machine_id: 1234\ncreation_timestamp: 1531420323\narch: x86_64\nhost_type: macbookpro\n\
build: 23550\nkernel_version: 4.17.4-589.native\ntest message\n",
        old,
    );
    std::os::unix::fs::symlink(
        root.dir().join("elsewhere"),
        root.spool_dir().join("symlnk"),
    )
    .unwrap();
    stage(&root, 1, old);
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 4));
    assert!(c.wait_for(1, SOON));
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    let q = postd::quarantine_dir(&root.spool_dir());
    let mut names: Vec<String> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["emptym", "incohd", "incorr", "symlnk"]);
    assert_eq!(std::fs::read(q.join("incorr")).unwrap(), b"test\n");
    assert_eq!(c.attempt_count(), 1, "nothing corrupt was sent");
    assert!(wait_until(SOON, || journal(&root).len() == 1));
}

#[test]
fn delivery_disabled_keeps_records_local() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_server_delivery_enabled", "false")
        .set("record_retention_enabled", "true");
    stage(&root, 0, Duration::ZERO);
    stage(&root, 1, Duration::ZERO);
    let _d = spawn(&root);
    assert!(wait_counter(&root, "local", 2));
    assert!(wait_until(SOON, || journal(&root).len() == 2));
    assert!(spool_names(&root).is_empty());
    let j = journal(&root);
    for e in &j {
        let copy = root.paths.records_dir().join(&e.record_id);
        let i = index_of(&e.classification);
        assert_eq!(
            std::fs::read(copy).unwrap(),
            format!("record {i}\nline \"two\"\t/\n\n").into_bytes()
        );
    }
    assert_eq!(c.attempt_count(), 0);
}

#[test]
fn files_of_other_users_are_quarantined_not_read() {
    // SAFETY: geteuid(2) has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    let p = stage(&root, 0, Duration::from_secs(10));
    std::os::unix::fs::chown(&p, Some(12345), Some(12345)).unwrap();
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 1));
    assert!(spool_names(&root).is_empty());
    assert_eq!(c.attempt_count(), 0);
}
