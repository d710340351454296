//! The whole pipeline: telem-record-gen → telemprobd → telempostd → the loopback collector,
//! in v2 (headers), v3 (JSON) and OTLP mode; the journal shows the record afterwards.

use std::time::Duration;

use libtelemetry::journal::read_journal;
use telemetrics_tests::collector::{otlp_log_records, Collector, Request};
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

const MACHINE_ID: &str = "e2ee2ee2ee2ee2ee2ee2ee2ee2ee2ee2";
const EVENT_ID: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
const CLASSIFICATION: &str = "org.test/e2e/postd";
const WAIT: Duration = Duration::from_secs(30);

/// Send one record through telemprobd and telempostd to `collector` at `path`; returns the
/// request the collector accepted.
fn pipeline(collector: &Collector, path: &str) -> (TestRoot, Request) {
    let mut root = TestRoot::new();
    root.set("server", &collector.url(path));
    std::fs::write(root.paths.static_machine_id_file(), MACHINE_ID).unwrap();
    let cfg = root.config_path();
    let mut probd = TestDaemon::spawn(&root, "telemprobd", &["-f", cfg.to_str().unwrap()]);
    probd.wait_for_socket(&root.socket_path(), WAIT);
    let _postd = TestDaemon::spawn(&root, "telempostd", &[]);
    let out = root
        .command("telem-record-gen")
        .args(["-c", CLASSIFICATION, "-s", "2", "-e", EVENT_ID])
        .args(["-p", "hello\nworld"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        collector.wait_for(1, WAIT),
        "the record reached the collector"
    );
    assert!(
        wait_until(WAIT, || root.staged_files().is_empty()),
        "delivered records leave the spool"
    );
    assert!(
        wait_until(WAIT, || {
            read_journal(&root.paths.journal_file()).is_ok_and(|j| {
                j.len() == 1 && j[0].classification == CLASSIFICATION && j[0].event_id == EVENT_ID
            })
        }),
        "the journal shows the record"
    );
    let req = collector.requests().remove(0);
    assert_eq!(collector.attempt_count(), 1);
    (root, req)
}

#[test]
fn a_record_reaches_a_v2_collector_and_the_journal() {
    let c = Collector::start();
    let (_root, req) = pipeline(&c, "/v2/collector");
    assert_eq!(
        req.status, 201,
        "accepted by the v2 checks of the public collector"
    );
    assert_eq!(req.header("classification"), Some(CLASSIFICATION));
    assert_eq!(req.header("machine_id"), Some(MACHINE_ID));
    assert_eq!(req.header("event_id"), Some(EVENT_ID));
    assert_eq!(req.header("severity"), Some("2"));
    assert_eq!(req.header("system_name"), Some("testos"));
    assert_eq!(req.header("Content-Type"), Some("application/text"));
    assert_eq!(req.body, b"hello\nworld\n");
}

#[test]
fn a_record_reaches_a_v3_collector_and_the_journal() {
    let c = Collector::start();
    let (_root, req) = pipeline(&c, "/v3/collector");
    assert_eq!(req.status, 201);
    let v = req.json().expect("a JSON body");
    assert_eq!(v["classification"], CLASSIFICATION);
    assert_eq!(v["machine_id"], MACHINE_ID);
    assert_eq!(v["event_id"], EVENT_ID);
    assert_eq!(
        v["cpu_model"], "Test CPU @ 1.00GHz",
        "full value, spaces kept"
    );
    assert_eq!(v["payload"], "hello\nworld\n");
}

#[test]
fn a_record_arrives_as_an_otlp_log_record() {
    let c = Collector::start();
    let (root, req) = pipeline(&c, "/v1/logs");
    assert_eq!(req.status, 200);
    let v = req.json().expect("a JSON body");
    let resource = &v["resourceLogs"][0]["resource"]["attributes"];
    let attr = |list: &serde_json::Value, key: &str| -> serde_json::Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|kv| kv["key"] == key)
            .map(|kv| kv["value"].clone())
            .unwrap_or_else(|| panic!("no attribute {key}"))
    };
    let host = libtelemetry::HostInfo::collect(&root.paths);
    assert_eq!(
        attr(resource, "telemetry.machine_id")["stringValue"],
        MACHINE_ID
    );
    assert_eq!(attr(resource, "os.name")["stringValue"], "testos");
    assert_eq!(attr(resource, "os.version")["stringValue"], "42");
    assert_eq!(
        attr(resource, "host.arch")["stringValue"],
        host.arch.as_str()
    );
    assert_eq!(
        attr(resource, "telemetry.cpu_model")["stringValue"],
        "Test CPU @ 1.00GHz"
    );
    let records = otlp_log_records(&req.body);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["body"]["stringValue"], "hello\nworld");
    assert_eq!(r["severityNumber"], 13);
    assert_eq!(r["severityText"], "WARN");
    assert!(r["timeUnixNano"].as_str().unwrap().ends_with("000000000"));
    assert_eq!(
        attr(&r["attributes"], "telemetry.classification")["stringValue"],
        CLASSIFICATION
    );
    assert_eq!(
        attr(&r["attributes"], "telemetry.classification.category")["stringValue"],
        "e2e"
    );
    assert_eq!(
        attr(&r["attributes"], "telemetry.event_id")["stringValue"],
        EVENT_ID
    );
}
