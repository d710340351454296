//! Golden payloads: each `fixtures/oops/<name>.txt` gives exactly the records of
//! `<name>.expected` (set `UPDATE_GOLDEN=1` to rewrite them after a deliberate change).

use std::process::Command;

use crate::support::fixture;

const FIXTURES: [&str; 10] = [
    "warning_addresses",
    "warning_no_addresses",
    "bug_unable_to_handle",
    "gpf",
    "soft_lockup",
    "irq_nobody_cared",
    "alsa_bug",
    "rtnl",
    "bert",
    "back_to_back",
];

fn check(name: &str) {
    let input = fixture(&format!("oops/{name}.txt"));
    let golden = fixture(&format!("oops/{name}.expected"));
    let out = Command::new(env!("CARGO_BIN_EXE_klogscanner"))
        .arg("--parse-file")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}");
    let got = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        got,
        want,
        "{name}: payloads differ from {}",
        golden.display()
    );
}

#[test]
fn every_fixture_matches_its_golden_payloads() {
    for name in FIXTURES {
        check(name);
    }
}

#[test]
fn fixtures_cover_every_shape() {
    let classes = |name: &str| -> Vec<String> {
        crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")))
            .into_iter()
            .map(|(head, _)| head)
            .collect()
    };
    assert_eq!(classes("bert"), ["org.clearlinux/bert/debug severity 2"]);
    assert_eq!(
        classes("irq_nobody_cared"),
        ["crash/kernel/warning severity 2"]
    );
    assert_eq!(
        classes("rtnl"),
        ["org.clearlinux/kernel/warning severity 2"]
    );
    assert_eq!(classes("gpf"), ["org.clearlinux/kernel/bug severity 4"]);
    // Two warnings and a BUG back to back, then the panic: none is lost.
    assert_eq!(
        classes("back_to_back"),
        [
            "org.clearlinux/kernel/warning severity 2",
            "org.clearlinux/kernel/warning severity 2",
            "org.clearlinux/kernel/bug severity 4",
            "org.clearlinux/kernel/panic severity 4"
        ]
    );
}

#[test]
fn modern_warning_keeps_frames_without_addresses() {
    let records = crate::support::parse_file_records(&fixture("oops/warning_no_addresses.txt"));
    let payload = &records[0].1;
    assert!(payload.contains("#1 ? __warn - [kernel]\n"), "{payload}");
    assert!(
        payload.contains("#15 ret_from_fork - [kernel]\n"),
        "{payload}"
    );
    assert!(!payload.contains("TASK"), "{payload}");
}
