//! OTLP/HTTP export (`delivery_mode=otlp`, or a server URL ending in `/v1/logs`): records
//! become LogRecords of an `ExportLogsServiceRequest` in the OTLP JSON encoding, POSTed in
//! batches.
//!
//! Mapping (one `ResourceLogs` per distinct set of host values, one `LogRecord` per record):
//! * resource attributes: `service.name` = `telemetrics`, `host.arch` (arch), `os.type` =
//!   `linux`, `os.name` (system_name), `os.version` (build), `telemetry.machine_id`,
//!   `telemetry.host_type`, `telemetry.board_name`, `telemetry.cpu_model`,
//!   `telemetry.bios_version`, `telemetry.kernel_version`;
//! * scope: name `telemetrics-client`, version = the suite's;
//! * `timeUnixNano` = creation_timestamp (omitted when not a number of seconds that fits
//!   in the field's nanoseconds), `observedTimeUnixNano` =
//!   send time; severity 1–4 → `severityNumber` 9/13/17/21, `severityText`
//!   INFO/WARN/ERROR/FATAL; `body` = the probe's payload (without the `\n` staging adds);
//! * record attributes: `telemetry.classification` and its parts
//!   `telemetry.classification.domain` / `.category` / `.name`, `telemetry.event_id`,
//!   `telemetry.record_format_version`, `telemetry.payload_format_version` (ints when
//!   numeric), `telemetry.severity` (the raw value).
//!
//! Responses follow the OTLP/HTTP specification: 200 accepted (a `partialSuccess` is logged
//! with its count); 429, 502, 503, 504 retried, honouring `Retry-After`; any other 4xx is
//! permanent and the batch's records are quarantined; other 5xx are retried like the other
//! modes (the specification allows dropping them; this daemon keeps data).

use std::io::Write;
use std::time::{Duration, SystemTime};

use libtelemetry::config::OtlpCompression;
use libtelemetry::record::Header;
use libtelemetry::{Config, StagedRecord};
use serde_json::{json, Map, Value};

/// Records per request unless `otlp_batch_max_records` says otherwise.
pub const DEFAULT_BATCH_RECORDS: usize = libtelemetry::config::DEFAULT_OTLP_BATCH_MAX_RECORDS;
/// Request body bytes (before compression) unless `otlp_batch_max_bytes` says otherwise.
pub const DEFAULT_BATCH_BYTES: usize = libtelemetry::config::DEFAULT_OTLP_BATCH_MAX_BYTES;
/// Wait for more records before sending a batch that is not full.
pub const DEFAULT_LINGER: Duration = libtelemetry::config::DEFAULT_OTLP_LINGER;
/// Instrumentation scope name.
pub const SCOPE_NAME: &str = "telemetrics-client";

/// OTLP settings from the config's `otlp_*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub max_records: usize,
    pub max_bytes: usize,
    pub linger: Duration,
    pub gzip: bool,
    /// Extra request headers (`otlp_headers`), e.g. authorization.
    pub headers: Vec<(String, String)>,
}

impl Default for OtlpSettings {
    fn default() -> Self {
        OtlpSettings {
            max_records: DEFAULT_BATCH_RECORDS,
            max_bytes: DEFAULT_BATCH_BYTES,
            linger: DEFAULT_LINGER,
            gzip: false,
            headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key} value {value:?}: {message}")]
pub struct OtlpSettingError {
    pub key: &'static str,
    pub value: String,
    pub message: String,
}

impl OtlpSettings {
    /// Read `otlp_batch_max_records` (1..=10000), `otlp_batch_max_bytes` (4096..=64 MiB),
    /// `otlp_linger_ms` (0..=60000), `otlp_compression` (`none`|`gzip`) and `otlp_headers`
    /// (`Name: value` pairs separated by `;`).
    /// (Parsed and checked by `libtelemetry::config`; a bad value is an error here.)
    pub fn from_config(c: &Config) -> Result<OtlpSettings, OtlpSettingError> {
        let s = OtlpSettings {
            max_records: c.otlp_batch_max_records,
            max_bytes: c.otlp_batch_max_bytes,
            linger: c.otlp_linger,
            gzip: c.otlp_compression == OtlpCompression::Gzip,
            headers: c.otlp_headers.clone(),
        };
        if let Some(e) = c.deferred_error("otlp_") {
            return Err(OtlpSettingError {
                key: e.key,
                value: e.value.clone(),
                message: format!("{}: {}", e.location(), e.message),
            });
        }
        Ok(s)
    }
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// An int attribute when `value` is a decimal integer (int64 travels as a JSON string),
/// a string one otherwise.
fn int_attr(key: &str, value: &str) -> Value {
    match value.parse::<i64>() {
        Ok(n) => json!({"key": key, "value": {"intValue": n.to_string()}}),
        Err(_) => string_attr(key, value),
    }
}

/// The resource attributes of a record (its host).
pub fn resource_attributes(h: &libtelemetry::record::Headers) -> Vec<Value> {
    vec![
        string_attr("service.name", "telemetrics"),
        string_attr("host.arch", h.get(Header::Arch)),
        string_attr("os.type", "linux"),
        string_attr("os.name", h.get(Header::SystemName)),
        string_attr("os.version", h.get(Header::Build)),
        string_attr("telemetry.machine_id", h.get(Header::MachineId)),
        string_attr("telemetry.host_type", h.get(Header::HostType)),
        string_attr("telemetry.board_name", h.get(Header::BoardName)),
        string_attr("telemetry.cpu_model", h.get(Header::CpuModel)),
        string_attr("telemetry.bios_version", h.get(Header::BiosVersion)),
        string_attr("telemetry.kernel_version", h.get(Header::KernelVersion)),
    ]
}

/// `severityNumber` and `severityText` for a record severity.
pub fn severity(sev: &str) -> (u32, &'static str) {
    match sev.trim() {
        "1" => (9, "INFO"),
        "2" => (13, "WARN"),
        "3" => (17, "ERROR"),
        "4" => (21, "FATAL"),
        _ => (0, ""),
    }
}

/// One LogRecord.
pub fn log_record(s: &StagedRecord, observed_ns: u128) -> Value {
    let h = &s.headers;
    let class = h.get(Header::Classification);
    let mut parts = class.splitn(3, '/');
    let mut attrs = vec![string_attr("telemetry.classification", class)];
    for name in ["domain", "category", "name"] {
        attrs.push(string_attr(
            &format!("telemetry.classification.{name}"),
            parts.next().unwrap_or(""),
        ));
    }
    attrs.push(string_attr("telemetry.event_id", h.get(Header::EventId)));
    attrs.push(int_attr(
        "telemetry.record_format_version",
        h.get(Header::RecordFormatVersion),
    ));
    attrs.push(int_attr(
        "telemetry.payload_format_version",
        h.get(Header::PayloadFormatVersion),
    ));
    attrs.push(string_attr("telemetry.severity", h.get(Header::Severity)));
    let (number, text) = severity(h.get(Header::Severity));
    let mut rec = Map::new();
    if let Some(ns) = creation_time_ns(h.get(Header::CreationTimestamp)) {
        rec.insert("timeUnixNano".into(), Value::String(ns.to_string()));
    }
    rec.insert(
        "observedTimeUnixNano".into(),
        Value::String(observed_ns.to_string()),
    );
    if number != 0 {
        rec.insert("severityNumber".into(), json!(number));
        rec.insert("severityText".into(), json!(text));
    }
    rec.insert(
        "body".into(),
        json!({"stringValue": String::from_utf8_lossy(s.payload())}),
    );
    rec.insert("attributes".into(), Value::Array(attrs));
    Value::Object(rec)
}

/// `timeUnixNano` for a `creation_timestamp` header: `None` when it is not a number of
/// seconds or does not fit the field (a fixed64 of nanoseconds). One out-of-range value
/// would make the whole request unparsable, and a collector would refuse every record of
/// the batch with it.
pub fn creation_time_ns(timestamp: &str) -> Option<u64> {
    timestamp
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)
}

/// The `ExportLogsServiceRequest` JSON for `records`, grouped by host.
pub fn encode_logs(records: &[&StagedRecord], observed: SystemTime) -> Vec<u8> {
    let mut batch = LogBatch::new(observed);
    for s in records {
        batch.add(s, usize::MAX);
    }
    batch.finish()
}

/// The headers the resource attributes come from ([`resource_attributes`]): records
/// with the same values share a `ResourceLogs`.
const RESOURCE_HEADERS: [Header; 9] = [
    Header::Arch,
    Header::SystemName,
    Header::Build,
    Header::MachineId,
    Header::HostType,
    Header::BoardName,
    Header::CpuModel,
    Header::BiosVersion,
    Header::KernelVersion,
];

const BODY_HEAD: &[u8] = br#"{"resourceLogs":["#;
const BODY_TAIL: &[u8] = b"]}";
const GROUP_HEAD: &[u8] = br#"{"resource":{"attributes":"#;
const GROUP_RECORDS: &[u8] = br#"},"scopeLogs":[{"logRecords":["#;

/// One `ResourceLogs`: a host and its records.
struct Group {
    /// The values of [`RESOURCE_HEADERS`].
    key: Vec<String>,
    /// The serialized resource attributes.
    attributes: Vec<u8>,
    /// The serialized LogRecords, comma-separated.
    records: Vec<u8>,
}

/// An `ExportLogsServiceRequest` body built one record at a time. Each LogRecord is
/// serialized once, when it is added, so the body's length is known exactly before a
/// record is taken: the batch byte bound is exact, whatever the payloads' escaping costs
/// (a control character takes 6 bytes of JSON). The body is the same JSON, byte for byte,
/// as serializing the whole request as one value (keys in serde_json's sorted order).
pub struct LogBatch {
    observed_ns: u128,
    /// `"scope":{…}}]}` closing each group.
    group_tail: Vec<u8>,
    groups: Vec<Group>,
    records: usize,
    /// Exact length of [`LogBatch::finish`]'s result.
    bytes: usize,
}

impl LogBatch {
    /// An empty batch; `observed` becomes every record's `observedTimeUnixNano`.
    pub fn new(observed: SystemTime) -> LogBatch {
        let scope = json!({"name": SCOPE_NAME, "version": libtelemetry::VERSION});
        let mut group_tail = br#"],"scope":"#.to_vec();
        group_tail.extend_from_slice(scope.to_string().as_bytes());
        group_tail.extend_from_slice(b"}]}");
        LogBatch {
            observed_ns: observed
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            group_tail,
            groups: Vec::new(),
            records: 0,
            bytes: BODY_HEAD.len() + BODY_TAIL.len(),
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes of the body so far.
    pub fn body_len(&self) -> usize {
        self.bytes
    }

    /// Add `s` if the body stays within `max_bytes` (the first record is always added, so
    /// a record larger than the bound goes alone). Returns false when it does not fit.
    pub fn add(&mut self, s: &StagedRecord, max_bytes: usize) -> bool {
        let record = serde_json::to_vec(&log_record(s, self.observed_ns)).unwrap_or_default();
        let h = &s.headers;
        let found = self.groups.iter().position(|g| {
            g.key
                .iter()
                .zip(RESOURCE_HEADERS)
                .all(|(v, k)| v == h.get(k))
        });
        let (extra, new_group) = match found {
            Some(_) => (record.len() + 1, None),
            None => {
                let attributes = serde_json::to_vec(&resource_attributes(h)).unwrap_or_default();
                let comma = usize::from(!self.groups.is_empty());
                let extra = comma
                    + GROUP_HEAD.len()
                    + attributes.len()
                    + GROUP_RECORDS.len()
                    + record.len()
                    + self.group_tail.len();
                let key = RESOURCE_HEADERS
                    .iter()
                    .map(|k| h.get(*k).to_string())
                    .collect();
                (
                    extra,
                    Some(Group {
                        key,
                        attributes,
                        records: Vec::new(),
                    }),
                )
            }
        };
        if self.records > 0 && self.bytes.saturating_add(extra) > max_bytes {
            return false;
        }
        let group = match (found, new_group) {
            (Some(i), _) => {
                let g = &mut self.groups[i];
                g.records.push(b',');
                g
            }
            (None, Some(g)) => {
                self.groups.push(g);
                self.groups.last_mut().expect("just pushed")
            }
            (None, None) => return false,
        };
        group.records.extend_from_slice(&record);
        self.records += 1;
        self.bytes += extra;
        true
    }

    /// The request body.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        out.extend_from_slice(BODY_HEAD);
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(GROUP_HEAD);
            out.extend_from_slice(&g.attributes);
            out.extend_from_slice(GROUP_RECORDS);
            out.extend_from_slice(&g.records);
            out.extend_from_slice(&self.group_tail);
        }
        out.extend_from_slice(BODY_TAIL);
        debug_assert_eq!(out.len(), self.bytes);
        out
    }
}

/// Bytes a record adds to a request body, roughly: its staged size plus the JSON around it.
/// The event loop uses it to choose how many records a job may carry; the worker's
/// [`LogBatch`] enforces the byte bound exactly and leaves the rest for the next batch.
pub fn estimated_size(staged_len: u64) -> u64 {
    staged_len.saturating_mul(2).saturating_add(1024)
}

/// gzip `bytes`.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(bytes)?;
    e.finish()
}

/// `partialSuccess.rejectedLogRecords` and `errorMessage` of a 200 response body.
pub fn partial_success(body: &[u8]) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let p = v.get("partialSuccess")?;
    let rejected = match p.get("rejectedLogRecords")? {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    let msg = p
        .get("errorMessage")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (rejected > 0 || !msg.is_empty()).then_some((rejected, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libtelemetry::record::Headers;

    fn staged(machine: &str, sev: &str, payload: &str) -> StagedRecord {
        let values = [
            "4",
            "org.test/otlp/one",
            sev,
            machine,
            "1795614028",
            "x86_64",
            "h|t|x",
            "42",
            "6.1.0",
            "1",
            "testos",
            "b",
            "Test CPU @ 1.00GHz",
            "bios",
            "0123456789abcdef0123456789abcdef",
        ];
        let mut h = Headers::default();
        for (i, v) in values.iter().enumerate() {
            h.0[i] = v.to_string();
        }
        StagedRecord {
            cfg_path: None,
            headers: h,
            body: format!("{payload}\n").into_bytes(),
        }
    }

    #[test]
    fn golden_export_request() {
        let a = staged("m1", "2", "hello\nworld");
        let observed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v: Value = serde_json::from_slice(&encode_logs(&[&a], observed)).unwrap();
        let expected = json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "telemetrics"}},
                {"key": "host.arch", "value": {"stringValue": "x86_64"}},
                {"key": "os.type", "value": {"stringValue": "linux"}},
                {"key": "os.name", "value": {"stringValue": "testos"}},
                {"key": "os.version", "value": {"stringValue": "42"}},
                {"key": "telemetry.machine_id", "value": {"stringValue": "m1"}},
                {"key": "telemetry.host_type", "value": {"stringValue": "h|t|x"}},
                {"key": "telemetry.board_name", "value": {"stringValue": "b"}},
                {"key": "telemetry.cpu_model", "value": {"stringValue": "Test CPU @ 1.00GHz"}},
                {"key": "telemetry.bios_version", "value": {"stringValue": "bios"}},
                {"key": "telemetry.kernel_version", "value": {"stringValue": "6.1.0"}},
            ]},
            "scopeLogs": [{
                "scope": {"name": "telemetrics-client", "version": libtelemetry::VERSION},
                "logRecords": [{
                    "timeUnixNano": "1795614028000000000",
                    "observedTimeUnixNano": "1800000000000000000",
                    "severityNumber": 13,
                    "severityText": "WARN",
                    "body": {"stringValue": "hello\nworld"},
                    "attributes": [
                        {"key": "telemetry.classification", "value": {"stringValue": "org.test/otlp/one"}},
                        {"key": "telemetry.classification.domain", "value": {"stringValue": "org.test"}},
                        {"key": "telemetry.classification.category", "value": {"stringValue": "otlp"}},
                        {"key": "telemetry.classification.name", "value": {"stringValue": "one"}},
                        {"key": "telemetry.event_id", "value": {"stringValue": "0123456789abcdef0123456789abcdef"}},
                        {"key": "telemetry.record_format_version", "value": {"intValue": "4"}},
                        {"key": "telemetry.payload_format_version", "value": {"intValue": "1"}},
                        {"key": "telemetry.severity", "value": {"stringValue": "2"}},
                    ],
                }],
            }],
        }]});
        assert_eq!(v, expected);
    }

    #[test]
    fn records_are_grouped_by_host() {
        let (a, b, c) = (
            staged("m1", "1", "a"),
            staged("m2", "4", "b"),
            staged("m1", "3", "c"),
        );
        let v: Value =
            serde_json::from_slice(&encode_logs(&[&a, &b, &c], SystemTime::now())).unwrap();
        let rl = v["resourceLogs"].as_array().unwrap();
        assert_eq!(rl.len(), 2);
        let bodies = |i: usize| -> Vec<String> {
            rl[i]["scopeLogs"][0]["logRecords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["body"]["stringValue"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(bodies(0), ["a", "c"]);
        assert_eq!(bodies(1), ["b"]);
        assert_eq!(severity("4"), (21, "FATAL"));
        assert_eq!(
            creation_time_ns("1795614028"),
            Some(1_795_614_028_000_000_000)
        );
        assert_eq!(
            creation_time_ns("18446744073"),
            Some(18_446_744_073_000_000_000)
        );
        assert_eq!(creation_time_ns("18446744074"), None, "beyond a fixed64");
        assert_eq!(creation_time_ns("not a number"), None);
        assert_eq!(severity("9"), (0, ""));
    }

    /// The request as one serialized value (what `LogBatch` must reproduce byte for byte).
    fn as_one_value(records: &[&StagedRecord], observed: SystemTime) -> Vec<u8> {
        let observed_ns = observed
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut groups: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
        for s in records {
            let res = resource_attributes(&s.headers);
            let rec = log_record(s, observed_ns);
            match groups.iter_mut().find(|(r, _)| *r == res) {
                Some((_, recs)) => recs.push(rec),
                None => groups.push((res, vec![rec])),
            }
        }
        let resource_logs: Vec<Value> = groups
            .into_iter()
            .map(|(attrs, recs)| {
                json!({
                    "resource": {"attributes": attrs},
                    "scopeLogs": [{
                        "scope": {"name": SCOPE_NAME, "version": libtelemetry::VERSION},
                        "logRecords": recs,
                    }],
                })
            })
            .collect();
        serde_json::to_vec(&json!({ "resourceLogs": resource_logs })).unwrap()
    }

    #[test]
    fn a_batch_built_record_by_record_is_the_same_json() {
        let observed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (a, b, c) = (
            staged("m1", "1", "a \u{1} \"quoted\""),
            staged("m2", "4", "b"),
            staged("m1", "3", "c\nd"),
        );
        let mut kernel = staged("m1", "2", "other kernel");
        kernel.headers.0[Header::KernelVersion as usize] = "6.2.0".into();
        for records in [
            vec![&a],
            vec![&a, &b],
            vec![&a, &b, &c],
            vec![&a, &kernel, &c, &b],
        ] {
            assert_eq!(
                String::from_utf8(encode_logs(&records, observed)).unwrap(),
                String::from_utf8(as_one_value(&records, observed)).unwrap()
            );
        }
        assert_eq!(encode_logs(&[], observed), br#"{"resourceLogs":[]}"#);
    }

    #[test]
    fn the_batch_byte_bound_is_exact() {
        // Control characters cost 6 bytes of JSON each: 3× the old estimate's allowance.
        let heavy = staged("m1", "2", &"\u{1}".repeat(700));
        let other_host = staged("m2", "2", &"\u{2}".repeat(700));
        let max = 16 * 1024;
        let mut batch = LogBatch::new(SystemTime::now());
        let mut taken = 0;
        while batch.add(if taken % 2 == 0 { &heavy } else { &other_host }, max) {
            taken += 1;
            assert!(batch.body_len() <= max);
        }
        assert_eq!(batch.len(), taken);
        assert!(taken >= 2, "{taken}");
        let len = batch.body_len();
        let body = batch.finish();
        assert_eq!(body.len(), len, "the length is known before finishing");
        assert!(body.len() <= max);
        assert!(body.len() + 5000 > max, "full: {} of {max}", body.len());
        serde_json::from_slice::<Value>(&body).unwrap();
        // A record larger than the bound goes alone, never nowhere.
        let mut alone = LogBatch::new(SystemTime::now());
        assert!(alone.add(&heavy, 100));
        assert!(!alone.add(&heavy, 100));
        assert_eq!(alone.len(), 1);
    }

    #[test]
    fn responses_and_settings() {
        assert_eq!(
            partial_success(br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"x"}}"#),
            Some((3, "x".into()))
        );
        assert_eq!(partial_success(br#"{"partialSuccess":{}}"#), None);
        assert_eq!(partial_success(b"{}"), None);
        let paths = libtelemetry::Paths::default();
        let c = Config::defaults(&paths);
        assert_eq!(
            OtlpSettings::from_config(&c).unwrap(),
            OtlpSettings::default()
        );
        let conf = |text: &str| {
            let text = format!("[settings]\n{text}");
            Config::parse(&text, std::path::Path::new("t.conf"), &paths).unwrap()
        };
        let c = conf(
            "otlp_headers=Authorization: Bearer abc; X-A: b\n\
otlp_compression=gzip\notlp_linger_ms=50\n",
        );
        let s = OtlpSettings::from_config(&c).unwrap();
        assert_eq!(
            s.headers,
            [
                ("Authorization".to_string(), "Bearer abc".to_string()),
                ("X-A".into(), "b".into())
            ]
        );
        assert!(s.gzip);
        assert_eq!(s.linger, Duration::from_millis(50));
        let e = OtlpSettings::from_config(&conf("otlp_batch_max_records=0\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid otlp_batch_max_records value \"0\": t.conf:2: expected 1..10000"
        );
        let gz = gzip(b"hello").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out)
            .unwrap();
        assert_eq!(out, "hello");
    }
}
