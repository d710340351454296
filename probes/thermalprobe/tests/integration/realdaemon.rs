//! Against the real telemprobd (built by `cargo test --workspace`).

use libtelemetry::record::Header;
use libtelemetry::staged::parse_staged;
use telemetrics_tests::listener::telemprobd;
use telemetrics_tests::TestRoot;

use crate::fixtures::{Counters, SysTree};

#[test]
fn records_are_staged_by_telemprobd() {
    let root = TestRoot::new();
    let Some(_d) = telemprobd(&root) else { return };
    let t = SysTree::new(&root.paths.host_root().join("sys"));
    t.set(0, 0, Counters::full(3, 30, 1, 10));
    t.set(1, 1, Counters::full(0, 0, 2, 20));
    let run = || {
        root.command("thermalprobe")
            .arg("-f")
            .arg(root.config_path())
            .arg("--once")
            .output()
            .unwrap()
    };
    let o = run();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Counters change between polls.
    t.set(1, 1, Counters::full(1, 5, 3, 25));
    assert_eq!(run().status.code(), Some(0));
    let mut payloads: Vec<String> = root
        .staged_files()
        .iter()
        .map(|p| {
            let r = parse_staged(&std::fs::read(p).unwrap()).unwrap();
            assert_eq!(
                r.headers.get(Header::Classification),
                "org.clearlinux/mce/thermal"
            );
            assert_eq!(r.headers.get(Header::Severity), "2");
            String::from_utf8_lossy(r.payload()).into_owned()
        })
        .collect();
    payloads.sort();
    assert_eq!(payloads.len(), 3, "{payloads:#?}");
    assert!(payloads[0].starts_with("package=0\ncpus=0\npackage_throttle_count=1\n"));
    assert!(payloads[1].starts_with("package=1\ncpus=\npackage_throttle_count=2\n"));
    assert!(payloads[2].starts_with(
        "package=1\ncpus=1\npackage_throttle_count=3\npackage_throttle_count_delta=1\n"
    ));
}
