//! Against the real telemprobd (built by `cargo test --workspace`): every class staged
//! byte for byte, and no loss across kill -9 of the probe.

use std::collections::BTreeMap;
use std::time::Duration;

use libtelemetry::record::Header;
use libtelemetry::staged::{parse_staged, StagedRecord};
use telemetrics_tests::listener::telemprobd;
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

use crate::acceptance::{drop_dir, quarantine_dir, visible};
use crate::fixtures::{every_class, publish};

fn staged(root: &TestRoot) -> Vec<StagedRecord> {
    root.staged_files()
        .iter()
        .filter_map(|p| parse_staged(&std::fs::read(p).ok()?).ok())
        .collect()
}

#[test]
fn every_class_is_staged_by_telemprobd() {
    let root = TestRoot::new();
    let Some(_d) = telemprobd(&root) else { return };
    let dir = drop_dir(&root);
    let files = every_class();
    for f in &files {
        publish(&dir, f.name, f.content.as_bytes());
    }
    let o = root
        .command("swupdprobe")
        .arg("-f")
        .arg(root.config_path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records = staged(&root);
    assert_eq!(records.len(), files.len());
    for f in &files {
        let r = records
            .iter()
            .find(|r| r.payload() == f.content.as_bytes())
            .unwrap_or_else(|| panic!("{} not staged", f.name));
        assert_eq!(r.headers.get(Header::Classification), f.classification);
        assert_eq!(r.headers.get(Header::Severity), f.severity.to_string());
        assert_eq!(
            r.headers.get(Header::PayloadFormatVersion),
            f.version.to_string()
        );
    }
    assert!(visible(&dir).is_empty());
}

#[test]
fn kill_9_loses_nothing_with_the_real_daemon() {
    let root = TestRoot::new();
    let Some(_d) = telemprobd(&root) else { return };
    let dir = drop_dir(&root);
    const FILES: usize = 80;
    let writer_dir = dir.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..FILES {
            let body = format!("PACKAGE_NAME=swupd-client\nPACKAGE_VERSION=5.1.0\nseq={i}\n");
            publish(&writer_dir, &format!("2.verify.1.k{i:05}"), body.as_bytes());
            std::thread::sleep(Duration::from_millis((i as u64 * 7919) % 9));
        }
    });
    let cfg = root.config_path().display().to_string();
    let args = ["-f", cfg.as_str(), "--watch", "--retry-interval", "100ms"];
    let mut kills: u64 = 0;
    while !writer.is_finished() {
        let mut p = TestDaemon::spawn(&root, "swupdprobe", &args);
        std::thread::sleep(Duration::from_millis(10 + (kills * 13) % 40));
        p.kill9();
        kills += 1;
    }
    writer.join().unwrap();
    let mut p = TestDaemon::spawn(&root, "swupdprobe", &args);
    // SIGTERM before the handler is installed would kill it with the default action.
    assert!(p.wait_for_log("watching", Duration::from_secs(30)));
    assert!(wait_until(Duration::from_secs(30), || visible(&dir).is_empty()));
    p.signal(libc::SIGTERM);
    assert_eq!(
        p.wait_timeout(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for r in staged(&root) {
        let text = String::from_utf8_lossy(r.payload()).into_owned();
        if let Some(seq) = text.lines().find_map(|l| l.strip_prefix("seq=")) {
            *seen.entry(seq.parse().unwrap()).or_default() += 1;
        }
    }
    let missing: Vec<usize> = (0..FILES).filter(|i| !seen.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("{kills} kills, {duplicates} duplicates");
    assert!(duplicates as u64 <= kills);
    assert!(visible(&quarantine_dir(&root)).is_empty());
}
