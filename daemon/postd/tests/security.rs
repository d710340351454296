//! What a local sender can and cannot make telempostd do: spool hygiene, `CFG:` overrides
//! followed as untrusted input, per-sender fairness, counters that survive restarts.

use std::time::Duration;

use libtelemetry::status::{COUNTER_DELIVERED, COUNTER_EVICTED, COUNTER_QUARANTINED};
use telemetrics_tests::collector::{Behavior, Collector};
use telemetrics_tests::TestRoot;

use super::*;

/// Files in the spool dir whose names no stager creates are not records: never counted
/// toward `spool_max_size`, moved, quarantined or deleted. A staged name over the record
/// size limit is quarantined at sight and never counted either.
#[test]
fn foreign_files_never_count_toward_the_quota() {
    let c = Collector::start();
    c.refuse();
    let mut root = root_for(&c, "/v2/collector");
    root.set("spool_max_size", "200");
    for i in 0..20 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let spool = root.spool_dir();
    std::fs::write(spool.join("backup.tar"), vec![b'x'; 6 * 1024 * 1024]).unwrap();
    std::fs::write(spool.join("Huge00.u1000"), vec![b'y'; 100 * 1024]).unwrap();
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 1));
    c.resume();
    assert!(wait_counter(&root, COUNTER_DELIVERED, 20));
    let st = status(&root);
    assert_eq!(st.counter(COUNTER_EVICTED), 0, "{st:?}");
    assert_eq!(st.counter(COUNTER_QUARANTINED), 1, "{st:?}");
    assert_eq!(
        std::fs::metadata(spool.join("backup.tar")).unwrap().len(),
        6 * 1024 * 1024,
        "left alone"
    );
    let q = postd::quarantine_dir(&spool);
    assert!(q.join("Huge00.u1000").exists());
}

/// A `spool_dir` pointing at a directory of ordinary files (and a quarantine holding
/// files it did not put there) changes nothing in it.
#[test]
fn a_spool_dir_of_ordinary_files_is_left_alone() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    let spool = root.spool_dir();
    let mut ordinary = Vec::new();
    for i in 0..155 {
        let name = match i % 4 {
            0 => format!("file{i}.txt"),
            1 => format!("f{i}"),
            2 => format!("notes-{i}"),
            _ => format!("Ab{i:04}.bak"),
        };
        std::fs::write(spool.join(&name), format!("ordinary file {i}\n")).unwrap();
        ordinary.push(name);
    }
    let q = postd::quarantine_dir(&spool);
    std::fs::create_dir_all(&q).unwrap();
    for i in 0..120 {
        std::fs::write(q.join(format!("kept{i}")), b"not ours").unwrap();
    }
    for i in 0..5 {
        stage(&root, i, Duration::from_secs(10));
    }
    let d = spawn(&root);
    assert!(c.wait_for(5, SOON));
    // A rescan (start-up) has run and every record was delivered: give any stray
    // quarantine a turn by asking for a reload, which rescans.
    d.signal(libc::SIGHUP);
    assert!(d.wait_for_log("configuration reloaded", SOON));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 5));
    for name in &ordinary {
        assert!(spool.join(name).exists(), "{name} was touched");
    }
    assert_eq!(std::fs::read_dir(&q).unwrap().count(), 120);
    assert_eq!(status(&root).counter(COUNTER_QUARANTINED), 0);
}

/// Stage a record whose `CFG:` names `conf` (written with `text`) as `name`.
fn stage_override(root: &TestRoot, name: &str, i: usize, conf: &str, text: &str) {
    let path = root.dir().join(conf);
    std::fs::write(&path, text).unwrap();
    stage_bytes(
        root,
        name,
        &libtelemetry::encode_staged(&record(i), Some(path.to_str().unwrap())),
        Duration::from_secs(60),
    );
}

/// An override whose `cainfo` is `cainfo` is refused (quarantined), and everyone else's
/// records keep flowing; the daemon stops at once on SIGTERM.
fn override_cainfo_is_refused(cainfo: &str) {
    let c = Collector::start();
    let other = Collector::start();
    let root = root_for(&c, "/v2/collector");
    stage_override(
        &root,
        &own_name("Evil00"),
        99,
        "x.conf",
        &format!("[settings]\nserver={}\ncainfo={cainfo}\n", other.v2_url()),
    );
    for i in 0..10 {
        stage(&root, i, Duration::from_secs(30));
    }
    let mut d = spawn(&root);
    assert!(c.wait_for(10, SOON), "{}", d.log());
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 1), "{}", d.log());
    assert!(d.log().contains("x.conf"), "the config path is named");
    let started = std::time::Instant::now();
    let st = d.terminate(SOON).expect("exits");
    assert!(st.success(), "{st:?}\n{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(other.attempt_count(), 0);
    // And again at the next start: nothing left to trip over.
    stage(&root, 10, Duration::ZERO);
    let _d = spawn(&root);
    assert!(c.wait_for(11, SOON));
}

#[test]
fn an_override_cainfo_fifo_blocks_nothing() {
    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("ca.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    override_cainfo_is_refused(fifo.to_str().unwrap());
}

#[test]
fn an_override_cainfo_of_dev_zero_is_refused() {
    override_cainfo_is_refused("/dev/zero");
}

/// Values of an override config are never echoed in the log or the status file: errors
/// name the record and the config path.
#[test]
fn override_values_are_never_echoed() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    stage_override(
        &root,
        &own_name("Unrch0"),
        1,
        "unreachable.conf",
        "[settings]\nserver=http://127.0.0.1:1/v2/SECRET-PATH\n\
         tidheader=X-Telemetry-TID:\\sSECRET-TID\n",
    );
    stage_override(
        &root,
        &own_name("BadVal"),
        2,
        "badvalue.conf",
        "[settings]\nserver=http://127.0.0.1:1/\nrecord_expiry=SECRET-NUMBER\n",
    );
    stage_override(
        &root,
        &own_name("BadURL"),
        3,
        "badurl.conf",
        "[settings]\nserver=ftp://SECRET-HOST/\n",
    );
    let d = spawn(&root);
    assert!(wait_counter(
        &root,
        libtelemetry::status::COUNTER_FAILED_ATTEMPTS,
        3
    ));
    let status_text =
        std::fs::read_to_string(libtelemetry::status::status_file(&root.paths, "telempostd"))
            .unwrap();
    for conf in ["unreachable.conf", "badvalue.conf", "badurl.conf"] {
        assert!(d.log().contains(conf), "{conf} named\n{}", d.log());
    }
    assert!(!d.log().contains("SECRET"), "{}", d.log());
    assert!(!status_text.contains("SECRET"), "{status_text}");
}

/// Records whose override names a server that accepts and never answers go in a lane of
/// their own: one such record every 2 s does not delay anyone else's records, across the
/// lane's first 10 s timeout. (The lane's schedule over a longer run is unit-tested on
/// made-up time in `postd::sched`.)
#[test]
fn a_hanging_override_server_delays_no_one_else() {
    let c = Collector::start();
    let hang = telemetrics_tests::collector::SilentServer::start();
    let root = root_for(&c, "/v2/collector");
    let conf = root.dir().join("hang.conf");
    std::fs::write(
        &conf,
        format!("[settings]\nserver={}\n", hang.url("/v2/collector")),
    )
    .unwrap();
    let d = spawn(&root);
    assert!(wait_until(SOON, || d.log().contains("starting")));
    let mut worst = Duration::ZERO;
    for k in 0..6 {
        stage_bytes(
            &root,
            &own_name(&format!("Hang{k:02}")),
            &libtelemetry::encode_staged(&record(1000 + k), Some(conf.to_str().unwrap())),
            Duration::ZERO,
        );
        let t0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        stage(&root, k, Duration::ZERO);
        assert!(c.wait_for(k + 1, SOON), "{}", d.log());
        worst = worst.max(t0.elapsed());
        std::thread::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    }
    assert!(
        worst < Duration::from_secs(5),
        "a default record waited {worst:?}\n{}",
        d.log()
    );
    assert!(hang.connections() >= 1, "the override lane did try");
    assert!(
        hang.connections() <= 2,
        "one POST at a time in the lane, backing off: {}",
        hang.connections()
    );
    assert_eq!(c.accepted_count(), 6);
}

/// Per-sender fairness with the default limits: 3,000 junk records from one user, then 10
/// crash records from root, then 3,000 more junk. The user gets half the rate limit and
/// its records are evicted first when the spool is over its quota; root's 10 are delivered
/// and none is evicted.
#[test]
fn a_flooding_user_cannot_crowd_out_roots_records() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    let d = spawn(&root);
    assert!(wait_until(SOON, || d.log().contains("starting")));
    let junk = |from: usize| {
        for i in from..from + 3000 {
            stage_bytes(
                &root,
                &format!("J{i:05}.u65534"),
                &libtelemetry::encode_staged(&record(i), None),
                Duration::ZERO,
            );
        }
    };
    junk(0);
    let mut crash = Vec::new();
    for k in 0..10 {
        let i = 9000 + k;
        let mut r = record(i);
        r.headers.0[1] = format!("org.test/crash/r{i}");
        stage_bytes(
            &root,
            &format!("Root{k:02}.u0"),
            &libtelemetry::encode_staged(&r, None),
            Duration::ZERO,
        );
        crash.push(i);
    }
    junk(3000);
    let delivered = |c: &Collector| -> Vec<usize> {
        let mut v: Vec<usize> = c
            .requests()
            .iter()
            .map(|r| index_of(&r.text()))
            .filter(|i| *i >= 9000)
            .collect();
        v.sort();
        v
    };
    assert!(
        wait_until(SOON, || delivered(&c) == crash),
        "root's records: {:?}\n{}",
        delivered(&c),
        root.tree().lines().count()
    );
    assert!(
        wait_counter(&root, COUNTER_EVICTED, 1),
        "the flood went over quota"
    );
    let junk_sent = c
        .requests()
        .iter()
        .filter(|r| index_of(&r.text()) < 9000)
        .count();
    assert!(
        junk_sent <= 500,
        "the user's share is half of 1,000: {junk_sent}"
    );
    assert!(
        !d.log().contains("evicting Root"),
        "a root record was evicted"
    );
}

/// Counters are totals across restarts; a damaged counters file starts from zero with a
/// warning.
#[test]
fn counters_survive_restarts() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    for round in 0..3 {
        stage(&root, round, Duration::ZERO);
        let mut d = spawn(&root);
        assert!(c.wait_for(round + 1, SOON));
        assert!(wait_counter(&root, COUNTER_DELIVERED, round as u64 + 1));
        assert!(d.terminate(SOON).expect("exits").success());
    }
    assert_eq!(status(&root).counter(COUNTER_DELIVERED), 3);
    std::fs::write(
        root.paths.state_dir().join("telempostd.counters"),
        "{garbage",
    )
    .unwrap();
    stage(&root, 3, Duration::ZERO);
    let d = spawn(&root);
    assert!(c.wait_for(4, SOON));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 1));
    assert!(d.log().contains("starting from zero"), "{}", d.log());
    assert_eq!(status(&root).counter(COUNTER_DELIVERED), 1);
}

/// A response with more than 100 header fields is the backend's failure, not the record's;
/// and records refused one after another are summarised in the log, not one line each.
#[test]
fn a_response_with_too_many_headers_is_blamed_on_the_backend() {
    let c = Collector::start();
    c.set_behavior(Behavior::Respond {
        status: 201,
        headers: (0..150)
            .map(|i| (format!("X-H{i}"), "v".to_string()))
            .collect(),
        body: "{}".into(),
    });
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "1");
    for i in 0..5 {
        stage(&root, i, Duration::from_secs(10 - i as u64));
    }
    let d = spawn(&root);
    assert!(d.wait_for_log("delivery of", SOON));
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("delivery of"))
        .unwrap()
        .to_string();
    assert!(
        !line.contains("retried on its own"),
        "blamed on the record: {line}"
    );
    assert!(line.contains("header"), "{line}");
    c.set_behavior(Behavior::Normal);
    assert!(wait_counter(&root, COUNTER_DELIVERED, 5));
}

#[test]
fn refused_records_are_summarised_in_the_log() {
    let c = Collector::start();
    c.set_behavior(Behavior::Status(400));
    let root = root_for(&c, "/v2/collector");
    for i in 0..200 {
        stage(&root, i, Duration::from_secs(300 - i as u64));
    }
    let d = spawn(&root);
    assert!(wait_counter(
        &root,
        libtelemetry::status::COUNTER_FAILED_ATTEMPTS,
        200
    ));
    assert!(d.wait_for_log("not logged one by one", SOON), "{}", d.log());
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains("delivery of"))
        .count();
    assert!(lines <= 40, "{lines} lines for 200 refusals");
}
