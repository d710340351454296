//! journalprobe with a fake `journalctl` that prints JSON entries and records its argv.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use telemetrics_tests::TestRoot;

use crate::support::{probe, run_expect, FakeDaemon};

/// The boot id TestRoot writes, as the journal spells it.
const BOOT: &str = "23156fd853864bfaae58eb2136e72a04";

/// Write a fake journalctl printing `entries` (one JSON object per line) and exiting with
/// `status`; it writes its arguments, one per line, next to itself.
fn fake_journalctl(root: &TestRoot, entries: &[String], status: i32) -> (PathBuf, PathBuf) {
    let script = root.dir().join("journalctl");
    let args = root.dir().join("journalctl.args");
    let data = root.dir().join("journal.json");
    std::fs::write(&data, entries.join("\n") + "\n").unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\ncat '{}'\nexit {status}\n",
            args.display(),
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, args)
}

fn entries() -> Vec<String> {
    vec![
        format!(
            r#"{{"__CURSOR":"s=1","_BOOT_ID":"{BOOT}","EXIT_CODE":"exited","PRIORITY":"4","MESSAGE":"cups.service: Main process exited, code=exited, status=1/FAILURE"}}"#
        ),
        format!(r#"{{"_BOOT_ID":"{BOOT}","PRIORITY":"3","MESSAGE":"kernel: something failed"}}"#),
        format!(
            r#"{{"_BOOT_ID":"{}","EXIT_CODE":"exited","MESSAGE":"from another boot"}}"#,
            "1".repeat(32)
        ),
        "this line is not JSON".to_string(),
        format!(
            r#"{{"_BOOT_ID":"{BOOT}","EXIT_CODE":"exited","MESSAGE":[115,115,104,100,27,91,48,109]}}"#
        ),
    ]
}

fn args_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn one_record_per_failed_service_entry() {
    let root = TestRoot::new();
    let (script, args) = fake_journalctl(&root, &entries(), 0);
    let daemon = FakeDaemon::start(&root);
    run_expect(
        probe(&root, "journalprobe")
            .arg("--journalctl")
            .arg(&script),
        0,
    );
    let got = daemon.received();
    let payloads: Vec<String> = got.iter().map(|r| r.payload()).collect();
    assert_eq!(
        payloads,
        [
            "MESSAGE=cups.service: Main process exited, code=exited, status=1/FAILURE\n",
            "MESSAGE=sshd?[0m\n"
        ]
    );
    for r in &got {
        assert_eq!(r.classification(), "org.clearlinux/journal/error");
        assert_eq!(r.severity(), "2");
        assert_eq!(r.payload_version(), "1");
    }
    let argv = args_of(&args);
    assert!(argv.contains(&"--output=json".to_string()), "{argv:?}");
    assert!(argv.contains(&"--follow".to_string()));
    assert!(argv.contains(&"--no-tail".to_string()));
    assert!(argv.ends_with(&[format!("_BOOT_ID={BOOT}"), "EXIT_CODE=exited".to_string()]));
}

#[test]
fn tail_mode_and_program_from_the_environment() {
    let root = TestRoot::new();
    let (script, args) = fake_journalctl(&root, &entries(), 0);
    let daemon = FakeDaemon::start(&root);
    run_expect(
        probe(&root, "journalprobe")
            .arg("-t")
            .env("TELEMETRICS_JOURNALCTL", &script),
        0,
    );
    assert_eq!(daemon.received().len(), 2);
    let argv = args_of(&args);
    assert!(argv.contains(&"--lines=0".to_string()), "{argv:?}");
    assert!(!argv.contains(&"--no-tail".to_string()));
}

#[test]
fn error_priorities_without_privacy_filters() {
    let root = TestRoot::new();
    std::fs::write(root.paths.no_privacy_filters_file(), "").unwrap();
    let (script, args) = fake_journalctl(&root, &entries(), 0);
    let daemon = FakeDaemon::start(&root);
    run_expect(
        probe(&root, "journalprobe")
            .arg("--journalctl")
            .arg(&script),
        0,
    );
    let payloads: Vec<String> = daemon.received().iter().map(|r| r.payload()).collect();
    assert_eq!(payloads.len(), 3);
    assert_eq!(payloads[1], "MESSAGE=kernel: something failed\n");
    let argv = args_of(&args);
    assert!(argv.contains(&"+".to_string()));
    assert!(argv.contains(&"PRIORITY=3".to_string()));
}

#[test]
fn journalctl_failures_are_errors() {
    let root = TestRoot::new();
    let (script, _) = fake_journalctl(&root, &entries(), 3);
    let daemon = FakeDaemon::start(&root);
    run_expect(
        probe(&root, "journalprobe")
            .arg("--journalctl")
            .arg(&script),
        1,
    );
    // Entries printed before the failure were still sent.
    assert_eq!(daemon.received().len(), 2);
    run_expect(
        probe(&root, "journalprobe")
            .arg("--journalctl")
            .arg(root.dir().join("no-such-program")),
        1,
    );
}

#[test]
fn failed_deliveries_do_not_stop_following() {
    let root = TestRoot::new();
    let (script, _) = fake_journalctl(&root, &entries(), 0);
    // No daemon: every send fails, every entry is still consumed.
    let out = run_expect(
        probe(&root, "journalprobe")
            .arg("--journalctl")
            .arg(&script),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("record not sent").count(), 2, "{stderr}");
}
