//! Request formats (v2 headers, v3 JSON), delivery-mode selection, `CFG:` overrides and
//! connection reuse.

use std::time::Duration;

use libtelemetry::record::HEADER_NAMES;
use libtelemetry::status::{COUNTER_DELIVERED, COUNTER_FAILED_ATTEMPTS, COUNTER_SPOOLED};
use telemetrics_tests::collector::{Behavior, Collector, TELEMETRY_ID};

use super::*;

#[test]
fn v2_golden_request() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    stage(&root, 7, Duration::ZERO);
    let _d = spawn(&root);
    assert!(c.wait_for(1, SOON));
    let req = &c.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v2/collector")
    );
    let rec = record(7);
    // The 15 headers verbatim, in record order, then the tidheader line and Content-Type.
    let ours: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            HEADER_NAMES.contains(&n.as_str()) || n == "X-Telemetry-TID" || n == "Content-Type"
        })
        .cloned()
        .collect();
    let mut expected: Vec<(String, String)> = HEADER_NAMES
        .iter()
        .zip(rec.headers.0.iter())
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    expected.push(("X-Telemetry-TID".into(), TELEMETRY_ID.into()));
    expected.push(("Content-Type".into(), "application/text".into()));
    assert_eq!(ours, expected);
    assert_eq!(
        req.body, b"record 7\nline \"two\"\t/\n",
        "payload + the staging '\\n'"
    );
    assert_eq!(req.header("content-length"), Some("22"));
    assert!(!req.chunked && req.header("transfer-encoding").is_none());
    assert_eq!(req.status, 201);
    assert!(wait_until(SOON, || spool_names(&root).is_empty()));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 1));
    let st = status(&root);
    let last = st.last_delivery.expect("last delivery");
    assert!(last.ok && last.detail == "HTTP 201", "{last:?}");
}

#[test]
fn v3_golden_body() {
    let c = Collector::start();
    let root = root_for(&c, "/v3/collector");
    stage(&root, 3, Duration::ZERO);
    let _d = spawn(&root);
    assert!(c.wait_for(1, SOON));
    let req = &c.requests()[0];
    assert_eq!(req.path, "/v3/collector");
    assert_eq!(req.header("Content-Type"), Some("application/json"));
    assert_eq!(req.header("X-Telemetry-TID"), Some(TELEMETRY_ID));
    assert_eq!(
        req.text(),
        concat!(
            r#"{"record_format_version":"4","classification":"org.test/postd/r3","severity":"2","#,
            r#""machine_id":"5768134ac73df19cbf582da092628002","creation_timestamp":"1795614028","#,
            r#""arch":"x86_64","host_type":"LENOVO|20KH|ThinkPad X1 Carbon","build":"\"12\"","#,
            r#""kernel_version":"6.1.0-18-amd64","payload_format_version":"1","system_name":"debian","#,
            r#""board_name":"no_bn_file|no_bv_file","#,
            r#""cpu_model":"Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz","bios_version":"","#,
            r#""event_id":"000000000000000000000000e0e00003","payload":"record 3\nline \"two\"\t/\n"}"#
        ),
        "full values (spaces kept, empty allowed), '/' not escaped"
    );
}

#[test]
fn delivery_mode_key_overrides_the_url() {
    let c = Collector::start();
    let mut root = root_for(&c, "/");
    root.set("delivery_mode", "v3");
    stage(&root, 1, Duration::ZERO);
    let _d = spawn(&root);
    assert!(c.wait_for_attempts(1, SOON));
    let req = &c.attempts()[0];
    assert_eq!(req.header("Content-Type"), Some("application/json"));
    assert!(req.json().is_some());
    // The real collector's "/" speaks v2 only, so the JSON record is refused.
    assert_eq!(req.status, 400);
}

#[test]
fn cfg_override_supplies_server_and_tidheader() {
    let default_backend = Collector::start();
    let other = Collector::start();
    let mut root = root_for(&default_backend, "/v2/collector");
    root.set("tidheader", "X-Telemetry-TID:\\swrong-tid");
    let override_conf = root.dir().join("override.conf");
    std::fs::write(
        &override_conf,
        format!(
            "[settings]\nserver={}\ntidheader=X-Telemetry-TID:\\s{TELEMETRY_ID}\n",
            other.v2_url()
        ),
    )
    .unwrap();
    let cfg = override_conf.to_str().unwrap();
    super::stage_bytes(
        &root,
        &own_name("withov"),
        &libtelemetry::encode_staged(&record(1), Some(cfg)),
        Duration::ZERO,
    );
    super::stage_bytes(
        &root,
        "badovr",
        &libtelemetry::encode_staged(&record(2), Some("/nonexistent/telemetrics.conf")),
        Duration::ZERO,
    );
    let _d = spawn(&root);
    assert!(other.wait_for(1, SOON));
    assert_eq!(index_of(&other.requests()[0].text()), 1);
    // An invalid override is a failed record, kept in the spool, never a fake success.
    assert!(wait_counter(&root, COUNTER_FAILED_ATTEMPTS, 1));
    assert!(wait_counter(&root, COUNTER_SPOOLED, 1));
    assert!(wait_until(SOON, || spool_names(&root) == ["badovr"]));
    assert_eq!(default_backend.attempt_count(), 0);
    assert!(wait_counter(&root, COUNTER_DELIVERED, 1));
}

#[test]
fn keep_alive_connections_are_reused() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "2");
    for i in 0..30 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let _d = spawn(&root);
    assert!(c.wait_for(30, SOON));
    assert!(
        c.connections() <= 2,
        "30 records over {} connections",
        c.connections()
    );
    let mut seen: Vec<usize> = c.requests().iter().map(|r| index_of(&r.text())).collect();
    seen.sort();
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "each record once");
}

#[test]
fn no_keep_alive_opens_a_connection_per_record() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_keep_alive", "false");
    for i in 0..5 {
        stage(&root, i, Duration::ZERO);
    }
    let _d = spawn(&root);
    assert!(c.wait_for(5, SOON));
    assert_eq!(c.connections(), 5);
}

/// A server that closes the connection right after each answer, without saying so (as
/// uWSGI's `http-socket` does): the request that meets the closed connection is sent again
/// on a new one, and no attempt counts as failed.
#[test]
fn a_server_closing_after_each_answer_costs_no_failed_attempt() {
    let c = Collector::start();
    c.set_behavior(Behavior::CloseAfterAnswer(Duration::from_millis(20)));
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "1");
    for i in 0..40 {
        stage(&root, i, Duration::from_secs(100 - i as u64));
    }
    let d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_DELIVERED, 40), "{}", d.log());
    assert_eq!(c.accepted_count(), 40, "each once");
    assert_eq!(
        status(&root).counter(COUNTER_FAILED_ATTEMPTS),
        0,
        "{}",
        d.log()
    );
    assert!(d.log().contains("was stale"), "the case did happen");
    assert!(
        d.log()
            .contains("closes kept-alive connections after answering"),
        "after a few stale reuses, a new connection per request"
    );
}

/// A server that closes idle connections after a short keep-alive timeout: records sent
/// in bursts around that timeout never count a failed attempt.
#[test]
fn a_short_server_keep_alive_timeout_costs_no_failed_attempt() {
    let c = Collector::start();
    c.set_behavior(Behavior::KeepAliveTimeout(Duration::from_millis(50)));
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "2");
    let d = spawn(&root);
    assert!(wait_until(SOON, || d.log().contains("starting")));
    for burst in 0..12 {
        for k in 0..3 {
            stage(&root, burst * 3 + k, Duration::ZERO);
        }
        assert!(c.wait_for(burst * 3 + 3, SOON));
        // Around the server's timeout: some connections are gone, some are going.
        std::thread::sleep(Duration::from_millis(40 + 2 * burst as u64));
    }
    assert!(wait_counter(&root, COUNTER_DELIVERED, 36));
    assert_eq!(
        status(&root).counter(COUNTER_FAILED_ATTEMPTS),
        0,
        "{}",
        d.log()
    );
}

/// Against a backend with 2 workers taking 20 ms per request, the adaptive limit keeps the
/// requests in flight near what the backend serves at once, not at
/// `delivery_max_in_flight`.
#[test]
fn the_in_flight_limit_adapts_to_a_slow_backend() {
    let c = Collector::start();
    c.set_behavior(Behavior::Slow(Duration::from_millis(20)));
    c.set_workers(Some(2));
    let mut root = root_for(&c, "/v2/collector");
    root.set("delivery_max_in_flight", "8");
    for i in 0..300 {
        stage(&root, i, Duration::from_secs(1000 - i as u64));
    }
    let d = spawn(&root);
    assert!(c.wait_for(300, Duration::from_secs(120)), "{}", d.log());
    assert!(
        c.max_concurrent() < 8,
        "{} in flight at most\n{}",
        c.max_concurrent(),
        d.log()
    );
}
