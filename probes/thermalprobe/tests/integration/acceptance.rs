//! The thermalprobe binary against sysfs fixture trees and a test listener.

use std::process::Output;
use std::time::Duration;

use libtelemetry::frame::Frame;
use libtelemetry::record::Header;
use telemetrics_tests::listener::TestListener;
use telemetrics_tests::{TestDaemon, TestRoot};

use crate::fixtures::{Counters, SysTree};

const WAIT: Duration = Duration::from_secs(10);

fn tree(root: &TestRoot) -> SysTree {
    SysTree::new(&root.paths.host_root().join("sys"))
}

fn probe(root: &TestRoot, args: &[&str]) -> Output {
    root.run_with_config("thermalprobe", args)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `key=value` lines of a payload.
fn kv(f: &Frame) -> Vec<(String, String)> {
    String::from_utf8_lossy(&f.record.payload)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value(f: &Frame, key: &str) -> Option<String> {
    kv(f).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn check_record(f: &Frame, package: u32, package_delta: u64, core_delta: u64) {
    let h = &f.record.headers;
    assert_eq!(h.get(Header::Classification), "org.clearlinux/mce/thermal");
    assert_eq!(h.get(Header::Severity), "2");
    assert_eq!(h.get(Header::PayloadFormatVersion), "1");
    assert!(h.validate().is_ok());
    assert_eq!(
        value(f, "package"),
        Some(package.to_string()),
        "{:?}",
        kv(f)
    );
    assert_eq!(
        value(f, "package_throttle_count_delta"),
        Some(package_delta.to_string())
    );
    assert_eq!(
        value(f, "core_throttle_count_delta"),
        Some(core_delta.to_string())
    );
}

#[test]
fn restarts_do_not_re_report_and_reboots_reset() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let t = tree(&root);
    for cpu in 0..4 {
        t.set(cpu, cpu / 2, Counters::full(0, 0, 0, 0));
    }
    t.set(1, 0, Counters::full(3, 30, 2, 100));
    // First run of this boot: counts since boot.
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let frames = l.wait_for(1, WAIT);
    check_record(&frames[0], 0, 2, 3);
    assert_eq!(value(&frames[0], "cpus").as_deref(), Some("1"));
    let state = std::fs::read_to_string(root.paths.state_dir().join("thermalprobe.state")).unwrap();
    assert!(
        state.starts_with("boot_id=23156fd8-5386-4bfa-ae58-eb2136e72a04\n"),
        "{state}"
    );
    // Restart without change: nothing.
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    // Counters change between polls: only the increase is reported.
    t.set(1, 0, Counters::full(4, 50, 2, 100));
    t.set(3, 1, Counters::full(0, 0, 6, 900));
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    let frames = l.wait_for(3, WAIT);
    check_record(&frames[1], 0, 0, 1);
    assert_eq!(
        value(&frames[1], "cpu1.core_throttle_total_time_ms_delta").as_deref(),
        Some("20")
    );
    check_record(&frames[2], 1, 6, 0);
    assert_eq!(
        value(&frames[2], "package_throttle_total_time_ms_delta").as_deref(),
        Some("900")
    );
    // Reboot: a new boot id, counters restart from zero in the kernel.
    root.write_host_file(
        "proc/sys/kernel/random/boot_id",
        "0f0e0d0c-5386-4bfa-ae58-eb2136e72a04\n",
    );
    for cpu in 0..4 {
        t.set(cpu, cpu / 2, Counters::full(0, 0, 0, 0));
    }
    t.set(0, 0, Counters::full(1, 10, 1, 10));
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    let frames = l.wait_for(4, WAIT);
    check_record(&frames[3], 0, 1, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(l.frames().len(), 4, "no other record");
}

#[test]
fn undelivered_counts_are_reported_later() {
    let root = TestRoot::new();
    let t = tree(&root);
    t.set(0, 0, Counters::counts(2, 1));
    // Nobody listening: exit 4, the baseline stays.
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    t.set(0, 0, Counters::counts(5, 1));
    let l = TestListener::start(&root);
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let frames = l.wait_for(1, WAIT);
    check_record(&frames[0], 0, 1, 5);
}

#[test]
fn follow_mode_polls_and_coalesces() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let t = tree(&root);
    t.set(0, 0, Counters::counts(0, 0));
    t.set(1, 1, Counters::counts(0, 0));
    let cfg = root.config_path().display().to_string();
    let mut d = TestDaemon::spawn(&root, "thermalprobe", &["-f", &cfg, "--interval", "300ms"]);
    std::thread::sleep(Duration::from_millis(400));
    assert!(l.frames().is_empty());
    // A burst of 20 episodes, much shorter than the interval (on an idle machine).
    let burst = std::time::Instant::now();
    for n in 1..=20 {
        t.set(0, 0, Counters::counts(n, n));
        std::thread::sleep(Duration::from_millis(3));
    }
    let polls_during_burst = burst.elapsed().as_millis() / 300 + 1;
    l.wait_for(1, WAIT);
    std::thread::sleep(Duration::from_millis(900));
    let frames = l.frames();
    assert!(
        frames.len() as u128 <= polls_during_burst + 1,
        "{} records for a burst spanning at most {polls_during_burst} polls",
        frames.len()
    );
    let total: u64 = frames
        .iter()
        .map(|f| {
            value(f, "core_throttle_count_delta")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 20, "every episode counted once");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_timeout(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn exit_codes_and_dry_run() {
    let root = TestRoot::new();
    let check = |args: &[&str], want: i32, text: &str| {
        let o = probe(&root, args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{args:?}: {}", stderr(&o));
    };
    check(&["--once"], 5, "no thermal_throttle counters");
    check(&["--interval", "0s"], 2, "positive");
    check(&["--bogus"], 2, "--bogus");
    let t = tree(&root);
    t.set(0, 0, Counters::counts(1, 1));
    let o = probe(&root, &["--once", "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .starts_with("classification: org.clearlinux/mce/thermal\nseverity: 2\n\npackage=0\n"));
    assert!(!root.paths.state_dir().join("thermalprobe.state").exists());
    let o = root
        .command("thermalprobe")
        .args(["-f", "/nonexistent.conf", "--once"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

#[test]
fn daemon_verdicts_decide_the_baseline() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let t = tree(&root);
    t.set(0, 0, Counters::counts(1, 0));
    // Staging failed (transient): exit 4, reported again next time.
    l.script(b"FFF");
    assert_eq!(code(&probe(&root, &["--once"])), 4);
    // Invalid (permanent): dropped, never re-sent.
    l.script(b"I");
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    assert!(l.frames().is_empty());
    t.set(0, 0, Counters::counts(2, 0));
    assert_eq!(code(&probe(&root, &["--once"])), 0);
    let frames = l.wait_for(1, WAIT);
    check_record(&frames[0], 0, 0, 1);
}
