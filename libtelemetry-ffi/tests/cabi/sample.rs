//! The classic probe (create → set payload → send → free) against a stand-in telemprobd:
//! the bytes received are exactly the frame `libtelemetry::frame` encodes for the record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libtelemetry::client::Ack;
use libtelemetry::record::Header;
use libtelemetry::{decode_frame, encode_frame, HostInfo, Record};
use telemetrics_tests::cabi::RecordListener;
use telemetrics_tests::TestRoot;

use super::{program, run_in, send_results, stdout, Lang};

const EVENT_ID: &str = "00112233445566778899aabbccddeeff";
const CLASS: &str = "org.example/sample/test";

/// The record the sample program builds in `root`, with the received timestamp.
fn expected_record(root: &TestRoot, timestamp: &str, payload: &[u8]) -> Record {
    let mut r = Record::new(2, CLASS, 1, &HostInfo::collect(&root.paths)).unwrap();
    r.headers.set(Header::CreationTimestamp, timestamp);
    r.set_event_id(EVENT_ID).unwrap();
    r.set_payload(payload).unwrap();
    r
}

fn check_sample(lang: Lang, with_config: bool) {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let config = root.config_path().display().to_string();
    let cfg_arg = if with_config { config.as_str() } else { "-" };
    let out = run_in(
        &root,
        &program("sample", lang),
        &[cfg_arg, "hello world", "1", EVENT_ID],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(send_results(&out), [0]);

    let bytes = listener
        .recv_bytes(Duration::from_secs(5))
        .expect("a record");
    let frame = decode_frame(&bytes).expect("valid frame");
    let ts = frame
        .record
        .headers
        .get(Header::CreationTimestamp)
        .to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts_num: u64 = ts.parse().expect("numeric timestamp");
    assert!(now.abs_diff(ts_num) < 60, "timestamp {ts} vs now {now}");
    let h = &frame.record.headers;
    assert_eq!(h.get(Header::Classification), CLASS);
    assert_eq!(h.get(Header::Severity), "2");
    assert_eq!(h.get(Header::MachineId), "FFFFFFFF");
    assert_eq!(h.get(Header::Build), "42");
    assert_eq!(h.get(Header::SystemName), "testos");
    assert_eq!(h.get(Header::CpuModel), "Test CPU @ 1.00GHz");
    assert_eq!(h.get(Header::HostType), "no_sv_file|no_pn_file|no_pvr_file");
    assert_eq!(frame.record.payload, b"hello world");

    let expected = expected_record(&root, &ts, b"hello world");
    let cfg = with_config.then_some(config.as_str());
    assert_eq!(frame.cfg_path.as_deref(), cfg);
    assert_eq!(bytes, encode_frame(&expected, cfg), "exact frame bytes");
    if with_config {
        assert_eq!(&bytes[4..8], b"CFG:");
    }
}

#[test]
fn sample_sends_the_exact_frame() {
    check_sample(Lang::C, false);
}

#[test]
fn sample_with_config_file_sends_the_cfg_field() {
    check_sample(Lang::C, true);
}

#[test]
fn sample_compiled_as_cxx() {
    check_sample(Lang::Cxx, true);
}

#[test]
fn sample_against_the_installed_library_sends_the_exact_frame() {
    check_sample(Lang::CInstalled, true);
}

#[test]
fn several_records_get_distinct_event_ids() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let out = run_in(&root, &program("sample", Lang::C), &["-", "x", "3"]);
    assert_eq!(send_results(&out), [0, 0, 0], "{}", stdout(&out));
    let ids: std::collections::BTreeSet<String> = (0..3)
        .map(|_| {
            listener
                .recv_frame()
                .record
                .headers
                .get(Header::EventId)
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn old_daemon_closing_without_reply_counts_as_sent() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), None);
    let out = run_in(&root, &program("sample", Lang::C), &["-", "x", "1"]);
    assert_eq!(send_results(&out), [0], "{}", stdout(&out));
    listener.recv_frame();
}
