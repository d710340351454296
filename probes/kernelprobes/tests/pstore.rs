//! pstoreprobe and pstoreclean on fixture pstore directories.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use telemetrics_tests::TestRoot;

use crate::support::{
    copy_fixture_dir, fixture, parse_file_records, probe, run_expect, run_with_timeout, FakeDaemon,
};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn efi_parts_are_joined_into_one_dump() {
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/efi", &cache);
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    let got = daemon.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    // Parts 3, 2, 1 in that order rebuild the original log.
    let expected = parse_file_records(&fixture("oops/gpf.txt"));
    assert_eq!(got[0].classification(), "org.clearlinux/kernel/bug");
    assert_eq!(got[0].severity(), "4");
    assert_eq!(got[0].payload(), expected[0].1);
    // The complete dump and the incomplete one are gone; other entries stay.
    assert_eq!(names(&cache), ["console-efi-1"]);
}

#[test]
fn single_part_ramoops_dump() {
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/ramoops", &cache);
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    let got = daemon.received();
    let classes: Vec<&str> = got.iter().map(|r| r.classification()).collect();
    assert_eq!(
        classes,
        ["org.clearlinux/kernel/bug", "org.clearlinux/kernel/panic"]
    );
    let expected = parse_file_records(&fixture("oops/bug_unable_to_handle.txt"));
    assert_eq!(got[0].payload(), expected[0].1);
    assert_eq!(
        got[1].payload(),
        "Crash Report:\nReason: Kernel panic - not syncing: Fatal exception in interrupt\n"
    );
    assert!(names(&cache).is_empty());
}

/// An arm64 host's ramoops dump (the `arm64_uaccess_panic_5x` report, as pstore saves it).
#[test]
fn arm64_ramoops_dump() {
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/ramoops_arm64", &cache);
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    let got = daemon.received();
    let expected = parse_file_records(&fixture("oops/arm64_uaccess_panic_5x.txt"));
    assert_eq!(got.len(), 2, "{got:#?}");
    for (record, (head, payload)) in got.iter().zip(&expected) {
        assert_eq!(
            format!("{} severity {}", record.classification(), record.severity()),
            *head
        );
        assert_eq!(record.payload(), *payload);
    }
    assert!(got[0].payload().contains("\n#1 __pi_memset - [kernel]\n"));
    assert!(names(&cache).is_empty());
}

#[test]
fn dump_without_final_newline_is_read_to_its_end() {
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/no_final_newline", &cache);
    let daemon = FakeDaemon::start(&root);
    let out = run_with_timeout(&mut probe(&root, "pstoreprobe"), Duration::from_secs(20));
    assert!(out.status.success());
    let got = daemon.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].payload().ends_with("#13 ret_from_fork - [kernel]\n"),
        "{}",
        got[0].payload()
    );
}

#[test]
fn undelivered_dumps_are_kept_for_a_retry() {
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/ramoops", &cache);
    // No daemon listens.
    run_expect(&mut probe(&root, "pstoreprobe"), 4);
    assert_eq!(names(&cache), ["dmesg-ramoops-0"]);
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    assert_eq!(daemon.received().len(), 2);
    assert!(names(&cache).is_empty());
}

/// telemprobd killed after reading a record, before staging it, closes without an answer:
/// the dump is not deleted.
#[test]
fn dumps_are_kept_when_the_daemon_closes_without_an_answer() {
    use telemetrics_tests::listener::RecordListener;
    let root = TestRoot::new();
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/ramoops", &cache);
    {
        let silent = RecordListener::bind(&root.socket_path(), None);
        run_expect(&mut probe(&root, "pstoreprobe"), 4);
        assert!(silent.recv_bytes(Duration::from_secs(10)).is_some());
    }
    assert_eq!(names(&cache), ["dmesg-ramoops-0"]);
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    assert_eq!(daemon.received().len(), 2);
    assert!(names(&cache).is_empty());
}

#[test]
fn missing_cache_dir_is_an_error() {
    let root = TestRoot::new();
    run_expect(
        probe(&root, "pstoreprobe")
            .arg("--cache-dir")
            .arg(root.dir().join("nope")),
        1,
    );
}

#[test]
fn clean_moves_entries_then_probe_reports_them() {
    let root = TestRoot::new();
    let pstore = root.paths.dev_dir().join("pstore");
    let cache = root.paths.pstore_cache_dir();
    copy_fixture_dir("pstore/efi", &pstore);
    std::fs::write(cache.join("stale-from-last-boot"), "x").unwrap();
    // The host root is relocated: pstore is never mounted, even as root.
    let out = run_expect(&mut probe(&root, "pstoreclean"), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"));
    assert!(names(&pstore).is_empty(), "originals are removed");
    let moved = names(&cache);
    assert_eq!(moved.len(), 6, "{moved:?}");
    assert!(!moved.contains(&"stale-from-last-boot".to_string()));
    for name in &moved {
        let mode = std::fs::metadata(cache.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444, "{name}");
        assert_eq!(
            std::fs::read(cache.join(name)).unwrap(),
            std::fs::read(fixture("pstore/efi").join(name)).unwrap()
        );
    }
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut probe(&root, "pstoreprobe"), 0);
    assert_eq!(daemon.received().len(), 1);
}

#[test]
fn clean_with_explicit_directories() {
    let root = TestRoot::new();
    let pstore = root.dir().join("mnt-pstore");
    let cache = root.dir().join("cache");
    copy_fixture_dir("pstore/ramoops", &pstore);
    run_expect(
        probe(&root, "pstoreclean")
            .arg("--no-mount")
            .arg("--pstore-dir")
            .arg(&pstore)
            .arg("--cache-dir")
            .arg(&cache),
        0,
    );
    assert_eq!(names(&cache), ["dmesg-ramoops-0"]);
    assert!(names(&pstore).is_empty());
    // Nothing to move is fine, including a pstore dir that does not exist.
    run_expect(
        probe(&root, "pstoreclean")
            .arg("--pstore-dir")
            .arg(root.dir().join("absent"))
            .arg("--cache-dir")
            .arg(&cache),
        0,
    );
    assert!(names(&cache).is_empty(), "the cache is emptied first");
}
