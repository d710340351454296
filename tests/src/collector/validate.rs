//! What the public collector accepts (`backend-collector.md` §2): the v2 header checks in
//! the collector's order ([`validate_v2`]), the record it stores for a valid v2 request, the
//! v3 JSON object ([`validate_v3`]) and the shape of an OTLP/HTTP logs export
//! ([`validate_otlp_logs`]).
//!
//! Invariant: pure functions of the request; the first failing check decides the
//! [`Rejection`], with the real collector's status and message.

use super::http::{same_name, Request};

/// The TID the public collector accepts (`TELEMETRY_ID`, hard-coded there).
pub const TELEMETRY_ID: &str = "6907c830-eed9-4ce9-81ae-76daf8d88f0f";

/// A refused request: the status and the collector's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection {
        status: 400,
        message: message.into(),
    }
}

const ARCHES: [&str; 10] = [
    "armv7l", "armv6l", "aarch64", "amd64", "sparc64", "ppc64", "i686", "i386", "x86_64", "ppc",
];

/// Python's `string.printable`.
fn printable(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() || matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// Python's `str.isdigit()` for the ASCII range (and false on empty).
fn isdigit(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Python's `int(s)`: surrounding whitespace, an optional sign, digits (and `_` between).
fn py_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i128 = clean.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// The v2 header checks of §2.2, in the collector's order; the first failure wins.
pub fn validate_v2(headers: &[(String, String)]) -> Result<(), Rejection> {
    let get = |name: &str| -> Option<&str> {
        headers
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, v)| v.as_str())
    };
    if get("X-Telemetry-TID") != Some(TELEMETRY_ID) {
        return Err(bad("Telemetry ID mismatch"));
    }
    let version = match get("record_format_version") {
        Some(v) if isdigit(v) => v.parse::<u32>().ok().filter(|v| (1..=4).contains(v)),
        _ => None,
    }
    .ok_or_else(|| bad("Record-Format-Version is invalid"))?;
    let mut required = vec![
        "Arch",
        "Build",
        "Creation-Timestamp",
        "Classification",
        "Host-Type",
        "Kernel-Version",
        "Machine-Id",
        "Severity",
        "Record-Format-Version",
    ];
    if version >= 2 {
        required.extend(["Payload-Format-Version", "System-Name", "X-Telemetry-Tid"]);
    }
    if version >= 3 {
        required.extend(["Board-Name", "Bios-Version", "Cpu-Model"]);
    }
    if version >= 4 {
        required.push("Event-Id");
    }
    for name in required {
        if get(name).is_none() {
            return Err(bad(format!(
                "Record-Format-Version headers are invalid, {name} missing"
            )));
        }
    }
    let h = |name: &str| get(name).unwrap_or("");
    let severity = h("severity");
    if !(isdigit(severity) && matches!(severity.parse::<u32>(), Ok(1..=4))) {
        return Err(bad("severity value is out of range"));
    }
    if h("classification").split('/').count() != 3 {
        return Err(bad("Classification value is invalid"));
    }
    if h("machine_id").chars().count() > 32 {
        return Err(bad("Machine id value is invalid"));
    }
    if !isdigit(h("creation_timestamp")) {
        return Err(bad("timestamp is invalid"));
    }
    if !ARCHES.contains(&h("arch")) {
        return Err(bad("architecture is invalid"));
    }
    if h("host_type").chars().count() >= 250 {
        return Err(bad("host type is invalid"));
    }
    let kv: Vec<&str> = h("kernel_version").splitn(3, '.').collect();
    if kv.len() != 3 || !isdigit(kv[0]) || !isdigit(kv[1]) {
        return Err(bad("kernel version is invalid"));
    }
    if version >= 3 {
        for (name, message) in [
            ("board_name", "board name is invalid"),
            ("cpu_model", "cpu model is invalid"),
            ("bios_version", "BIOS version is invalid"),
        ] {
            let v = h(name);
            if v.chars().count() >= 200 || !printable(v) {
                return Err(bad(message));
            }
        }
    }
    if version >= 4 {
        let e = h("event_id");
        if e.len() != 32
            || !e
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("Event id is invalid"));
        }
    }
    let Some(system_name) = get("system_name") else {
        return Err(Rejection {
            status: 500,
            message: "AttributeError: system_name".into(),
        });
    };
    let strip = |s: &str| s.replace(['"', '\''], "");
    let system_name = strip(system_name);
    let build = strip(h("build"));
    if system_name == "clear-linux-os" {
        if !isdigit(&build) {
            return Err(bad("Clear Linux OS build version has invalid characters"));
        }
    } else if build.is_empty()
        || !build
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad("Build version has invalid characters"));
    }
    let pfv = h("payload_format_version");
    match py_int(pfv) {
        None => {
            return Err(bad(format!(
            "Error parsing payload_format_version, invalid literal for int() with base 10: '{pfv}'"
        )))
        }
        Some(v) if v >= 2147483647 => {
            return Err(bad("Payload format version outside of range supported"))
        }
        Some(_) => {}
    }
    Ok(())
}

/// The stored record of a valid v2 request, as `Record.to_dict()` returns it (§2.4).
pub(super) fn ingest_v2(req: &Request, id: u64) -> Result<serde_json::Value, Rejection> {
    validate_v2(&req.headers)?;
    let form = req.header("content-type").is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/form-data")
    });
    let payload = if form || req.chunked {
        String::new()
    } else if req.body.contains(&0) {
        return Err(Rejection {
            status: 500,
            message: "A string literal cannot contain NUL (0x00) characters.".into(),
        });
    } else {
        match std::str::from_utf8(&req.body) {
            Ok(s) => s.to_string(),
            Err(_) => req.body.iter().map(|&b| char::from(b)).collect(),
        }
    };
    let h = |name: &str| req.header(name).unwrap_or("").to_string();
    let version: i64 = h("record_format_version").parse().unwrap_or(0);
    let v3 = |name: &str| {
        if version >= 3 {
            h(name)
        } else {
            "N/A".into()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(serde_json::json!({
        "arch": h("arch"),
        "bios_version": v3("bios_version"),
        "board_name": v3("board_name"),
        "build": h("build").replace(['"', '\''], ""),
        "classification": h("classification"),
        "cpu_model": v3("cpu_model"),
        "event_id": if version >= 4 { h("event_id") } else { "N/A".into() },
        "external": h("X-CLR-External") == "true",
        "id": id,
        "kernel_version": h("kernel_version"),
        "machine_id": h("machine_id"),
        "machine_type": h("host_type"),
        "payload": payload,
        "record_version": version,
        "severity": h("severity").parse::<i64>().unwrap_or(0),
        "ts_capture": utc_text(h("creation_timestamp").parse().unwrap_or(0)),
        "ts_reception": utc_text(now),
    }))
}

/// `%Y-%m-%d %H:%M:%S UTC`, computed without the C library (also the journal tests' oracle).
pub fn utc_text(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil from days (H. Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An OTLP/HTTP JSON logs export: `Content-Type: application/json` and the shape of
/// `ExportLogsServiceRequest` (`resourceLogs[].scopeLogs[].logRecords[]`, resource and
/// record attributes as key/value lists). Exact conformance to the protobuf schema is checked
/// separately with the official definitions.
/// Returns the number of log records.
pub fn validate_otlp_logs(req: &Request) -> Result<usize, Rejection> {
    if !req
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(Rejection {
            status: 415,
            message: "Content-Type must be application/json".into(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let attrs_ok = |a: Option<&serde_json::Value>| {
        a.is_none_or(|a| {
            a.as_array().is_some_and(|l| {
                l.iter()
                    .all(|kv| kv["key"].is_string() && kv["value"].is_object())
            })
        })
    };
    let resource_logs = v["resourceLogs"]
        .as_array()
        .ok_or_else(|| bad("resourceLogs missing"))?;
    let mut n = 0;
    for rl in resource_logs {
        if !attrs_ok(rl.get("resource").and_then(|r| r.get("attributes"))) {
            return Err(bad("bad resource attributes"));
        }
        let scopes = rl["scopeLogs"]
            .as_array()
            .ok_or_else(|| bad("scopeLogs missing"))?;
        for sl in scopes {
            let records = sl["logRecords"]
                .as_array()
                .ok_or_else(|| bad("logRecords missing"))?;
            for r in records {
                if !r.is_object() || !attrs_ok(r.get("attributes")) {
                    return Err(bad("bad log record"));
                }
            }
            n += records.len();
        }
    }
    Ok(n)
}

/// Log records of an OTLP request body, in order.
pub fn otlp_log_records(body: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut out = Vec::new();
    for rl in v["resourceLogs"].as_array().into_iter().flatten() {
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            out.extend(sl["logRecords"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

/// Names of the v3 JSON keys, in order.
pub const V3_KEYS: [&str; 16] = [
    "record_format_version",
    "classification",
    "severity",
    "machine_id",
    "creation_timestamp",
    "arch",
    "host_type",
    "build",
    "kernel_version",
    "payload_format_version",
    "system_name",
    "board_name",
    "cpu_model",
    "bios_version",
    "event_id",
    "payload",
];

/// A v3 request: the TID header, a JSON Content-Type, and an object with exactly the 16 keys
/// of [`V3_KEYS`], every value a string.
pub fn validate_v3(req: &Request) -> Result<(), Rejection> {
    if req.header("X-Telemetry-TID") != Some(TELEMETRY_ID) {
        return Err(bad("Telemetry ID mismatch"));
    }
    if !req
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(bad("Content-Type must be application/json"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body is not a JSON object"))?;
    for key in V3_KEYS {
        match obj.get(key) {
            Some(serde_json::Value::String(_)) => {}
            Some(_) => return Err(bad(format!("{key} is not a string"))),
            None => return Err(bad(format!("{key} missing"))),
        }
    }
    if obj.len() != V3_KEYS.len() {
        return Err(bad("unexpected keys"));
    }
    Ok(())
}
