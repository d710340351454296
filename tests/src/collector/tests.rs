use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::http::same_name;
use super::*;

fn v4_headers() -> Vec<(String, String)> {
    [
        ("record_format_version", "4"),
        ("classification", "org.clearlinux/hello/world"),
        ("severity", "1"),
        ("machine_id", "0123456789abcdef0123456789abcdef"),
        ("creation_timestamp", "1795614028"),
        ("arch", "x86_64"),
        ("host_type", "blank|blank|blank"),
        ("build", "\"12\""),
        ("kernel_version", "6.1.0-18-amd64"),
        ("payload_format_version", "1"),
        ("system_name", "debian"),
        ("board_name", "D54250WYK|Intel Corporation"),
        ("cpu_model", "Intel(R) Core(TM) i5-4250U CPU @ 1.30GHz"),
        ("bios_version", "WYLPT10H.86A.0041.2015.0720.1108"),
        ("event_id", "39cc109a1079df96376693ebc7a0f632"),
        ("X-Telemetry-TID", TELEMETRY_ID),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

/// Data-driven: replace (or with `None` remove) one header, expect this message.
fn check(name: &str, value: Option<&str>, expected: Result<(), &str>) {
    let mut h = v4_headers();
    h.retain(|(n, _)| !same_name(n, name));
    if let Some(v) = value {
        h.push((name.to_string(), v.to_string()));
    }
    let got = validate_v2(&h).map_err(|e| e.message);
    assert_eq!(got, expected.map_err(str::to_string), "{name}={value:?}");
}

#[test]
fn v2_rules_of_the_public_collector() {
    check("arch", Some("x86_64"), Ok(()));
    check(
        "X-Telemetry-TID",
        Some("nope"),
        Err("Telemetry ID mismatch"),
    );
    check("X-Telemetry-TID", None, Err("Telemetry ID mismatch"));
    check(
        "Record-Format-Version",
        Some("5"),
        Err("Record-Format-Version is invalid"),
    );
    check(
        "record_format_version",
        Some("x"),
        Err("Record-Format-Version is invalid"),
    );
    check(
        "machine_id",
        None,
        Err("Record-Format-Version headers are invalid, Machine-Id missing"),
    );
    check(
        "event_id",
        None,
        Err("Record-Format-Version headers are invalid, Event-Id missing"),
    );
    check("severity", Some("0"), Err("severity value is out of range"));
    check(
        "classification",
        Some("a/b"),
        Err("Classification value is invalid"),
    );
    check("classification", Some("a//"), Ok(()));
    check(
        "machine_id",
        Some(&"a".repeat(33)),
        Err("Machine id value is invalid"),
    );
    check("machine_id", Some(""), Ok(()));
    check(
        "creation_timestamp",
        Some("-1"),
        Err("timestamp is invalid"),
    );
    check("arch", Some("riscv64"), Err("architecture is invalid"));
    check(
        "host_type",
        Some(&"h".repeat(250)),
        Err("host type is invalid"),
    );
    check(
        "kernel_version",
        Some("6.1"),
        Err("kernel version is invalid"),
    );
    check("kernel_version", Some("3.16.generic"), Ok(()));
    check(
        "kernel_version",
        Some("v6.1.0"),
        Err("kernel version is invalid"),
    );
    check(
        "cpu_model",
        Some("Intel\u{ae}"),
        Err("cpu model is invalid"),
    );
    check("bios_version", Some(""), Ok(()));
    check(
        "event_id",
        Some("39CC109A1079DF96376693EBC7A0F632"),
        Err("Event id is invalid"),
    );
    check(
        "build",
        Some("1 2"),
        Err("Build version has invalid characters"),
    );
    check(
        "build",
        Some(""),
        Err("Build version has invalid characters"),
    );
    check(
        "payload_format_version",
        Some("x"),
        Err("Error parsing payload_format_version, invalid literal for int() with base 10: 'x'"),
    );
    check(
        "payload_format_version",
        Some("2147483647"),
        Err("Payload format version outside of range supported"),
    );
    check("payload_format_version", Some("-3"), Ok(()));
    // Only a v1 record can lack system_name, and the collector crashes on it.
    let mut h = v4_headers();
    h.retain(|(n, _)| n != "system_name");
    assert_eq!(validate_v2(&h).unwrap_err().status, 400);
    for (n, v) in h.iter_mut() {
        if n == "record_format_version" {
            *v = "1".into();
        }
    }
    assert_eq!(validate_v2(&h).unwrap_err().status, 500);
    let mut h = v4_headers();
    for (n, v) in h.iter_mut() {
        if n == "system_name" {
            *v = "clear-linux-os".into();
        }
        if n == "build" {
            *v = "12a".into();
        }
    }
    assert_eq!(
        validate_v2(&h).unwrap_err().message,
        "Clear Linux OS build version has invalid characters"
    );
    // Names: case-insensitive, '_' ≡ '-'.
    let h: Vec<_> = v4_headers()
        .into_iter()
        .map(|(n, v)| (n.to_uppercase().replace('_', "-"), v))
        .collect();
    assert_eq!(validate_v2(&h), Ok(()));
}

#[test]
fn utc_formatting() {
    assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc_text(1522691281), "2018-04-02 17:48:01 UTC");
}

fn raw_request(addr: SocketAddr, text: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(text).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn serves_validates_records_and_refuses() {
    let c = Collector::start();
    let mut req = String::from("POST /v2/collector HTTP/1.1\r\nHost: x\r\n");
    for (n, v) in v4_headers() {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(
        "Content-Type: application/text\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
    );
    let answer = raw_request(c.addr(), req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"payload\":\"hello\\n\""), "{answer}");
    let got = c.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"hello\n");
    assert_eq!(
        got[0].header("Machine-Id"),
        Some("0123456789abcdef0123456789abcdef")
    );
    let answer = raw_request(
        c.addr(),
        b"POST /v2/collector HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.ends_with("{\"message\":\"Telemetry ID mismatch\"}"),
        "{answer}"
    );
    let answer = raw_request(c.addr(), b"GET /v3/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
    assert_eq!(
        raw_request(c.addr(), big.as_bytes()),
        "",
        "reset, no answer"
    );
    c.set_behavior(Behavior::Status(500));
    let answer = raw_request(c.addr(), req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert_eq!(c.accepted_count(), 1);
    assert_eq!(c.attempt_count(), 4);
    c.refuse();
    assert!(TcpStream::connect(c.addr()).is_err());
    c.resume();
    c.set_behavior(Behavior::Normal);
    let answer = raw_request(c.addr(), req.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(c.connections() >= 5);
}
