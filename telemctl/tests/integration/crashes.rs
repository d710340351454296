//! `telemctl crashes`: crashprobe's crash-loop state as text and JSON.

use libtelemetry::crashloop::CrashLoopState;
use libtelemetry::fsutil::write_atomic;
use telemetrics_tests::TestRoot;

use crate::common::{run, telemctl};

#[test]
fn crashes_lists_signatures_with_their_counts() {
    let mut root = TestRoot::new();
    root.set("crash_loop_limit", "3");
    let crashes = |json: bool| {
        let mut c = telemctl(&root);
        c.arg("crashes");
        if json {
            c.arg("--json");
        }
        run(c)
    };
    // Nothing recorded yet.
    let r = crashes(false);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "crash-loop limit: 3 records per signature every 3600 s\nno crash signatures recorded\n"
    );

    let mut state = CrashLoopState::default();
    let e = state.entry(
        0x1234,
        "/usr/bin/looping",
        "crash() [looping]",
        1_796_589_000,
    );
    e.seen = 100;
    e.suppressed = 97;
    e.held_back = 97;
    e.held_back_since = Some(1_796_589_001);
    e.last_seen = 1_796_589_059;
    write_atomic(
        &root.paths.crash_loop_file(),
        state.encode().as_bytes(),
        0o640,
    )
    .unwrap();
    let r = crashes(false);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "0000000000001234     100       3          97         97  2026-12-06T20:30:59Z  /usr/bin/looping\n"
        ),
        "{}",
        r.stdout
    );
    let r = crashes(true);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["crash_loop_limit"], 3);
    assert_eq!(v["signatures"][0]["suppressed"], 97);
    assert_eq!(v["signatures"][0]["sent"], 3);
    assert_eq!(v["signatures"][0]["frames"], "crash() [looping]");

    // A damaged file is an error, not a crash.
    std::fs::write(root.paths.crash_loop_file(), "garbage").unwrap();
    let r = crashes(true);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("crash-loops"), "{}", r.stderr);
}
