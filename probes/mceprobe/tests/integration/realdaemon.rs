//! Against the real telemprobd (built by `cargo test --workspace`): the probe's records end
//! up staged in the spool with their payloads intact.

use libtelemetry::record::Header;
use libtelemetry::staged::{parse_staged, StagedRecord};
use telemetrics_tests::listener::telemprobd;
use telemetrics_tests::TestRoot;

use crate::fixtures::{backend_status_capture, blob, cases};

fn staged(root: &TestRoot) -> Vec<StagedRecord> {
    root.staged_files()
        .iter()
        .map(|p| parse_staged(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn records_are_staged_by_telemprobd() {
    let root = TestRoot::new();
    let Some(_d) = telemprobd(&root) else { return };
    root.write_host_file("dev/placeholder", "");
    std::fs::write(root.paths.dev_dir().join("mcelog"), blob()).unwrap();
    let o = root
        .command("mceprobe")
        .arg("-f")
        .arg(root.config_path())
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let records = staged(&root);
    assert_eq!(records.len(), cases().len());
    for c in cases() {
        let r = records
            .iter()
            .find(|r| r.payload() == c.golden.as_bytes())
            .unwrap_or_else(|| panic!("{} not staged", c.name));
        assert_eq!(
            r.headers.get(Header::Classification),
            format!("org.clearlinux/mce/{}", c.class)
        );
        assert_eq!(r.headers.get(Header::Severity), c.severity.to_string());
        assert_ne!(
            r.headers.get(Header::MachineId),
            "FFFFFFFF",
            "machine id set"
        );
        assert!(backend_status_capture(&String::from_utf8_lossy(r.payload())).is_some());
    }
}
