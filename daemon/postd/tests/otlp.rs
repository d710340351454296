//! OTLP/HTTP export: batching, linger, permanent refusals, partial success, gzip and
//! headers, and conformance to the official protobuf definitions. (`Retry-After` and the
//! splitting of a batch that carries a poisoned record are unit-tested: `postd::delivery`
//! for the answer, `postd::sched` for the schedule, on made-up time.)

use std::collections::BTreeSet;
use std::time::Duration;

use libtelemetry::status::{COUNTER_DELIVERED, COUNTER_QUARANTINED};
use telemetrics_tests::collector::{otlp_log_records, Behavior, Collector, Request};

use super::*;

fn otlp_root(c: &Collector) -> TestRoot {
    root_for(c, "/v1/logs")
}

/// Record numbers carried by accepted requests (each body's log records, in order).
fn delivered(c: &Collector) -> Vec<usize> {
    c.requests()
        .iter()
        .flat_map(|r| otlp_log_records(&r.body))
        .map(|rec| index_of(rec["body"]["stringValue"].as_str().unwrap()))
        .collect()
}

#[test]
fn records_go_in_batches_each_once() {
    let c = Collector::start();
    let mut root = otlp_root(&c);
    root.set("otlp_batch_max_records", "40");
    for i in 0..100 {
        stage(&root, i, Duration::from_secs(1000 - i as u64));
    }
    let _d = spawn(&root);
    assert!(wait_until(SOON, || delivered(&c).len() == 100));
    let mut seen = delivered(&c);
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    let sizes: Vec<usize> = c
        .requests()
        .iter()
        .map(|r| otlp_log_records(&r.body).len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= 40), "{sizes:?}");
    assert!(sizes.len() <= 6, "batched: {sizes:?}");
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 100));
    assert!(wait_until(SOON, || journal(&root).len() == 100));
}

#[test]
fn linger_gathers_records_that_arrive_together() {
    let c = Collector::start();
    let mut root = otlp_root(&c);
    root.set("otlp_linger_ms", "500");
    let d = spawn(&root);
    assert!(wait_until(SOON, || d.log().contains("starting")));
    for i in 0..5 {
        stage(&root, i, Duration::ZERO);
    }
    assert!(wait_until(SOON, || delivered(&c).len() == 5));
    assert!(c.requests().len() <= 2, "{} requests", c.requests().len());
}

#[test]
fn a_permanent_refusal_quarantines_the_batch() {
    let c = Collector::start();
    let root = otlp_root(&c);
    c.set_behavior(Behavior::Status(400));
    for i in 0..3 {
        stage(&root, i, Duration::from_secs(10));
    }
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 3));
    assert!(spool_names(&root).is_empty());
    assert_eq!(c.attempt_count(), 1, "not retried");
    let q = postd::quarantine_dir(&root.spool_dir());
    assert_eq!(std::fs::read_dir(q).unwrap().count(), 3);
}

#[test]
fn partial_success_is_logged_and_the_batch_is_done() {
    let c = Collector::start();
    let root = otlp_root(&c);
    c.set_behavior(Behavior::Respond {
        status: 200,
        headers: vec![],
        body: r#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too old"}}"#.into(),
    });
    for i in 0..3 {
        stage(&root, i, Duration::from_secs(10));
    }
    let d = spawn(&root);
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    assert!(wait_until(SOON, || d
        .log()
        .contains("rejected 2 log records of a batch: too old")));
    assert_eq!(c.attempt_count(), 1);
}

#[test]
fn gzip_and_extra_headers() {
    let c = Collector::start();
    let mut root = otlp_root(&c);
    root.set("otlp_compression", "gzip").set(
        "otlp_headers",
        "Authorization:\\sBearer\\ss3cr3t;\\sX-Scope-OrgID:\\stenant1",
    );
    stage(&root, 0, Duration::from_secs(10));
    let _d = spawn(&root);
    assert!(c.wait_for(1, SOON));
    let req = &c.requests()[0];
    assert!(req.gzip);
    assert_eq!(req.header("Content-Encoding"), Some("gzip"));
    assert_eq!(req.header("Authorization"), Some("Bearer s3cr3t"));
    assert_eq!(req.header("X-Scope-OrgID"), Some("tenant1"));
    assert_eq!(req.header("X-Telemetry-TID"), None);
    assert_eq!(delivered(&c), [0]);
}

#[test]
fn the_delivery_mode_key_selects_otlp() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v1/logs");
    root.set("delivery_mode", "v2");
    stage(&root, 0, Duration::from_secs(10));
    let _d = spawn(&root);
    assert!(c.wait_for_attempts(1, SOON));
    assert!(
        c.attempts()[0].header("classification").is_some(),
        "v2 headers"
    );
}

/// Every body the daemon emits parses as an `ExportLogsServiceRequest` with the official
/// definitions (Python `opentelemetry-proto`, unknown fields rejected). Skipped when the
/// module is missing, unless `TELEMETRICS_REQUIRE_OTLP_PROTO` is set (CI sets it).
#[test]
fn bodies_conform_to_the_official_protobuf_definitions() {
    const CHECK: &str = r#"
import sys
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
for f in sys.argv[1:]:
    m = json_format.Parse(open(f).read(), ExportLogsServiceRequest())
    print(sum(len(s.log_records) for r in m.resource_logs for s in r.scope_logs))
"#;
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        ])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("TELEMETRICS_REQUIRE_OTLP_PROTO").is_none(),
            "python3 with opentelemetry-proto is required"
        );
        eprintln!("skipped: python3 -m pip install opentelemetry-proto");
        return;
    }
    let c = Collector::start();
    let mut root = otlp_root(&c);
    root.set("otlp_batch_max_records", "4");
    for i in 0..6 {
        stage(&root, i, Duration::from_secs(10));
    }
    // A record from another host (its own resource) and with odd values.
    let mut odd = record(6);
    odd.headers.0[3] = "ffffffffffffffffffffffffffffffff".into();
    odd.headers.0[2] = "9".into();
    odd.headers.0[4] = "not a number".into();
    odd.payload = "caf\u{e9} \u{1} \"quoted\"\n".as_bytes().to_vec();
    stage_bytes(
        &root,
        "oddrec",
        &libtelemetry::encode_staged(&odd, None),
        Duration::from_secs(10),
    );
    // A creation time whose nanoseconds do not fit the field (a valid record for
    // telemprobd): it must not make its whole batch unparsable.
    let mut far = record(7);
    far.headers.0[4] = "99999999999".into();
    stage_bytes(
        &root,
        "future",
        &libtelemetry::encode_staged(&far, None),
        Duration::from_secs(10),
    );
    let _d = spawn(&root);
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    let bodies: Vec<Request> = c.requests();
    let dir = root.dir().join("otlp-bodies");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = dir.join(format!("{i}.json"));
            std::fs::write(&p, &r.body).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(CHECK)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: usize = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .sum();
    assert_eq!(total, 8);
    let hosts: BTreeSet<String> = bodies
        .iter()
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["resourceLogs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|rl| rl["resource"]["attributes"][5]["value"]["stringValue"].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(hosts.len(), 2, "one resource per machine: {hosts:?}");
}

#[test]
fn a_refusal_is_judged_by_the_mode_of_the_backend_the_record_went_to() {
    let otlp = Collector::start();
    let refusing = Collector::start();
    refusing.set_behavior(Behavior::Status(400));
    let root = otlp_root(&otlp);
    let override_to = |name: &str, url: String| {
        let conf = root.dir().join(name);
        std::fs::write(&conf, format!("[settings]\nserver={url}\n")).unwrap();
        conf.to_string_lossy().into_owned()
    };
    let to_v2 = override_to("v2.conf", refusing.v2_url());
    let to_otlp = override_to("otlp.conf", refusing.url("/v1/logs"));
    for (name, i, cfg) in [("tov2aa", 1, &to_v2), ("tootlp", 2, &to_otlp)] {
        stage_bytes(
            &root,
            &own_name(name),
            &libtelemetry::encode_staged(&record(i), Some(cfg)),
            Duration::from_secs(10),
        );
    }
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 1));
    assert!(refusing.wait_for_attempts(2, SOON));
    // A v2 400 is retried like any v2 failure; only the OTLP one is final.
    assert!(wait_until(SOON, || spool_names(&root) == [own_name("tov2aa")]));
    let q = postd::quarantine_dir(&root.spool_dir());
    let names: Vec<String> = std::fs::read_dir(q)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [own_name("tootlp")]);
    assert_eq!(status(&root).counter(COUNTER_QUARANTINED), 1);
    assert_eq!(otlp.attempt_count(), 0);
}

#[test]
fn the_batch_byte_bound_holds_for_payloads_that_escape_large() {
    let c = Collector::start();
    let mut root = otlp_root(&c);
    let max = 16 * 1024;
    root.set("otlp_batch_max_bytes", &max.to_string());
    // Each control character is 6 bytes of JSON: an estimate from the staged size would
    // put about 5 of these in a batch, 1.5× the bound.
    for i in 0..20 {
        let mut r = record(i);
        r.payload = format!("record {i} {}", "\u{1}".repeat(700)).into_bytes();
        stage_bytes(
            &root,
            &format!("rec{i:03}"),
            &libtelemetry::encode_staged(&r, None),
            Duration::from_secs(100 - i as u64),
        );
    }
    let _d = spawn(&root);
    assert!(wait_until(SOON, || delivered(&c).len() == 20));
    let mut seen = delivered(&c);
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "each once");
    let sizes: Vec<(usize, usize)> = c
        .requests()
        .iter()
        .map(|r| (r.body.len(), otlp_log_records(&r.body).len()))
        .collect();
    assert!(sizes.iter().all(|(len, _)| *len <= max), "{sizes:?}");
    assert!(
        sizes.iter().any(|(_, n)| *n > 1),
        "still batched: {sizes:?}"
    );
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
}
