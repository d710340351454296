//! The record: 15 headers in a fixed order and a payload, with the validation rules of the
//! C library (§1.2–1.4), minus its bugs.

use std::fmt;

use crate::hostinfo::HostInfo;
use crate::ids::random_id;

/// Number of headers in a record.
pub const NUM_HEADERS: usize = 15;
/// `record_format_version` written by this library.
pub const RECORD_FORMAT_VERSION: u32 = 4;
/// Largest payload the library accepts and the daemon stages (the C daemon silently dropped
/// 8188..=8192 bytes; this suite accepts all of them).
pub const MAX_PAYLOAD: usize = 8192;
/// Longest classification (C: `strlen ≤ 122`).
pub const MAX_CLASSIFICATION_LEN: usize = 122;
/// Longest header value accepted from the wire or a staged file.
pub const MAX_HEADER_VALUE_LEN: usize = 1024;
/// Placeholder machine id written by the library; telemprobd replaces it.
pub const PLACEHOLDER_MACHINE_ID: &str = "FFFFFFFF";

/// Header names in wire order; the index is the header's position.
pub const HEADER_NAMES: [&str; NUM_HEADERS] = [
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
];

/// Index of each header in [`HEADER_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Header {
    RecordFormatVersion = 0,
    Classification,
    Severity,
    MachineId,
    CreationTimestamp,
    Arch,
    HostType,
    Build,
    KernelVersion,
    PayloadFormatVersion,
    SystemName,
    BoardName,
    CpuModel,
    BiosVersion,
    EventId,
}

impl Header {
    pub const fn name(self) -> &'static str {
        HEADER_NAMES[self as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("invalid classification {0:?}: needs most/to/least specific form, 2 '/', segments of at most 41/40/40 chars, at most 122 chars")]
    InvalidClassification(String),
    #[error("invalid event id {0:?}: needs 32 characters of [0-9a-f]")]
    InvalidEventId(String),
    #[error("payload byte {offset} ({byte:#04x}) is neither printable nor whitespace")]
    InvalidPayloadByte { offset: usize, byte: u8 },
    #[error("payload is not valid UTF-8 text at byte {0}")]
    InvalidPayloadText(usize),
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    PayloadTooLarge(usize),
    #[error("severity {0:?} is not within 1..4")]
    InvalidSeverity(String),
    #[error("header {name} has an invalid value {value:?}")]
    InvalidHeaderValue { name: &'static str, value: String },
}

impl RecordError {
    /// Negative errno the C API returns for this error.
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// The 15 header values (the text after `"<name>: "`), in wire order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers(pub [String; NUM_HEADERS]);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(HEADER_NAMES.iter().zip(self.0.iter()))
            .finish()
    }
}

impl Headers {
    pub fn get(&self, h: Header) -> &str {
        &self.0[h as usize]
    }

    pub fn set(&mut self, h: Header, value: impl Into<String>) {
        self.0[h as usize] = value.into();
    }

    /// `"<name>: <value>\n"` for header `i`.
    pub fn line(&self, i: usize) -> String {
        format!("{}: {}\n", HEADER_NAMES[i], self.0[i])
    }

    /// The 15 header lines, concatenated (what `header_size` counts).
    pub fn block(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_block(&mut out);
        out
    }

    /// Append the 15 header lines to `out`.
    pub fn write_block(&self, out: &mut Vec<u8>) {
        for (name, value) in HEADER_NAMES.iter().zip(self.0.iter()) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
    }

    /// Parse 15 header lines (without their `\n`). Each must start with its expected name
    /// followed by `:`; one space after the colon is part of the separator. Values that are
    /// not UTF-8 are kept lossily rather than dropping the record.
    pub fn from_lines<'a>(
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Headers, HeaderParseError> {
        let mut headers = Headers::default();
        let mut it = lines.into_iter();
        for (i, name) in HEADER_NAMES.iter().enumerate() {
            let line = it.next().ok_or(HeaderParseError::Missing { index: i })?;
            let rest = line
                .strip_prefix(name.as_bytes())
                .and_then(|r| r.strip_prefix(b":"))
                .ok_or_else(|| HeaderParseError::WrongName {
                    index: i,
                    expected: name,
                    found: String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned(),
                })?;
            let value = rest.strip_prefix(b" ").unwrap_or(rest);
            // The bound applies to the value as kept: each invalid byte becomes a 3-byte
            // U+FFFD, and a longer value would not parse again once re-encoded.
            let value = String::from_utf8_lossy(value);
            if value.len() > MAX_HEADER_VALUE_LEN {
                return Err(HeaderParseError::ValueTooLong { name });
            }
            headers.0[i] = value.into_owned();
        }
        Ok(headers)
    }

    /// Checks the values that must be sane for a record to be staged: numeric versions and
    /// timestamp, severity 1..4, classification rules, event id format, no control
    /// characters other than tab ([`is_forbidden_header_char`]).
    pub fn validate(&self) -> Result<(), RecordError> {
        for (i, v) in self.0.iter().enumerate() {
            if v.chars().any(is_forbidden_header_char) {
                return Err(RecordError::InvalidHeaderValue {
                    name: HEADER_NAMES[i],
                    value: v.clone(),
                });
            }
        }
        for h in [
            Header::RecordFormatVersion,
            Header::CreationTimestamp,
            Header::PayloadFormatVersion,
        ] {
            let v = self.get(h);
            if v.is_empty() || v.parse::<u64>().is_err() {
                return Err(RecordError::InvalidHeaderValue {
                    name: h.name(),
                    value: v.to_string(),
                });
            }
        }
        match self.get(Header::Severity).parse::<u32>() {
            Ok(1..=4) => {}
            _ => {
                return Err(RecordError::InvalidSeverity(
                    self.get(Header::Severity).to_string(),
                ))
            }
        }
        validate_classification(self.get(Header::Classification))?;
        validate_event_id(self.get(Header::EventId))?;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderParseError {
    #[error("header {index} is missing")]
    Missing { index: usize },
    #[error("header {index} should be {expected}, found {found:?}")]
    WrongName {
        index: usize,
        expected: &'static str,
        found: String,
    },
    #[error("value of {name} is too long")]
    ValueTooLong { name: &'static str },
}

/// A record: headers and payload (without the extra `\n` that staging adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub headers: Headers,
    pub payload: Vec<u8>,
}

impl Record {
    /// A new record as `tm_create_record` builds it: severity clamped to 1..4, classification
    /// validated, placeholder machine id, creation time now, host facts from `host`, a fresh
    /// random event id, empty payload.
    pub fn new(
        severity: u32,
        classification: &str,
        payload_format_version: u32,
        host: &HostInfo,
    ) -> Result<Record, RecordError> {
        validate_classification(classification)?;
        // The journal keeps the C rule (characters unchecked), but telemprobd refuses such a
        // header, so fail here rather than at send time.
        if classification.chars().any(is_forbidden_header_char) {
            return Err(RecordError::InvalidClassification(
                classification.to_string(),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers = Headers([
            RECORD_FORMAT_VERSION.to_string(),
            classification.to_string(),
            clamp_severity(severity).to_string(),
            PLACEHOLDER_MACHINE_ID.to_string(),
            now.to_string(),
            host.arch.clone(),
            host.host_type.clone(),
            host.build.clone(),
            host.kernel_version.clone(),
            payload_format_version.to_string(),
            host.system_name.clone(),
            host.board_name.clone(),
            host.cpu_model.clone(),
            host.bios_version.clone(),
            random_id(),
        ]);
        Ok(Record {
            headers,
            payload: Vec::new(),
        })
    }

    /// `tm_set_payload`: validated copy.
    pub fn set_payload(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        validate_payload(payload)?;
        self.payload = payload.to_vec();
        Ok(())
    }

    /// `tm_set_event_id`: validated replacement.
    pub fn set_event_id(&mut self, event_id: &str) -> Result<(), RecordError> {
        validate_event_id(event_id)?;
        self.headers.set(Header::EventId, event_id);
        Ok(())
    }

    pub fn classification(&self) -> &str {
        self.headers.get(Header::Classification)
    }
}

pub use crate::header_value::is_forbidden_header_char;

/// Severity clamped to 1..=4, as `tm_create_record` does.
pub fn clamp_severity(severity: u32) -> u32 {
    severity.clamp(1, 4)
}

/// Classification rules of §1.3: at most 122 chars, exactly two `/`, the first segment at
/// most 41 chars and the others at most 40 (the C limits, kept for compatibility), empty
/// segments allowed. The empty string (undefined behaviour in C) is rejected.
pub fn validate_classification(c: &str) -> Result<(), RecordError> {
    let bad = || RecordError::InvalidClassification(c.to_string());
    if c.is_empty() || c.len() > MAX_CLASSIFICATION_LEN {
        return Err(bad());
    }
    if c.bytes().any(|b| b == b'\n' || b == 0) {
        return Err(bad());
    }
    let segments: Vec<&str> = c.split('/').collect();
    if segments.len() != 3 {
        return Err(bad());
    }
    let limits = [41, 40, 40];
    if segments.iter().zip(limits).any(|(s, max)| s.len() > max) {
        return Err(bad());
    }
    Ok(())
}

/// Event id: exactly 32 characters of `[0-9a-f]`.
pub fn validate_event_id(id: &str) -> Result<(), RecordError> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(RecordError::InvalidEventId(id.to_string()))
    }
}

/// Payload rules: at most [`MAX_PAYLOAD`] bytes; printable ASCII and whitespace as the C
/// library's `isprint() || isspace()` allows, and also UTF-8 text (non-ASCII characters that
/// are not control characters), which the C library refused only through its locale.
pub fn validate_payload(p: &[u8]) -> Result<(), RecordError> {
    if p.len() > MAX_PAYLOAD {
        return Err(RecordError::PayloadTooLarge(p.len()));
    }
    if let Some(offset) = p
        .iter()
        .position(|&b| b < 0x80 && !(is_c_print(b) || is_c_space(b)))
    {
        return Err(RecordError::InvalidPayloadByte {
            offset,
            byte: p[offset],
        });
    }
    if !p.is_ascii() {
        let text =
            std::str::from_utf8(p).map_err(|e| RecordError::InvalidPayloadText(e.valid_up_to()))?;
        if let Some((offset, _)) = text
            .char_indices()
            .find(|(_, ch)| ch.is_control() && !ch.is_ascii())
        {
            return Err(RecordError::InvalidPayloadText(offset));
        }
    }
    Ok(())
}

fn is_c_print(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostInfo {
        HostInfo::fixed_for_tests()
    }

    #[test]
    fn classification_rules() {
        for ok in ["t/t/t", "//", "a/b/", &format!("{}/b/c", "a".repeat(41))] {
            assert!(validate_classification(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "t/t",
            "t/t/t/t",
            &format!("{}/b/c", "a".repeat(42)),
            &format!("a/{}/c", "b".repeat(41)),
            &format!("a/b/{}", "c".repeat(41)),
            "a/b\n/c",
        ] {
            assert!(validate_classification(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}/{}/{}", "a".repeat(41), "b".repeat(40), "c".repeat(40));
        assert_eq!(long.len(), 123);
        assert!(validate_classification(&long).is_err(), "over 122 chars");
    }

    #[test]
    fn event_id_rules() {
        assert!(validate_event_id("aaaaaa00000033333344444466666622").is_ok());
        for bad in [
            "aaaaaa000000333333444444666666ZZ",
            "aaaa",
            &"0".repeat(43),
            "AAAAAA00000033333344444466666622",
            "",
        ] {
            assert!(validate_event_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn severity_is_clamped_and_headers_ordered() {
        let r = Record::new(0, "t/t/t", 2000, &host()).unwrap();
        assert_eq!(r.headers.line(2), "severity: 1\n");
        assert_eq!(r.headers.line(1), "classification: t/t/t\n");
        assert_eq!(r.headers.line(9), "payload_format_version: 2000\n");
        assert_eq!(r.headers.line(3), "machine_id: FFFFFFFF\n");
        assert_eq!(r.headers.line(0), "record_format_version: 4\n");
        let r = Record::new(5, "t/t/t", 1, &host()).unwrap();
        assert_eq!(r.headers.get(Header::Severity), "4");
        assert!(validate_event_id(r.headers.get(Header::EventId)).is_ok());
        assert!(r.headers.validate().is_ok());
    }

    #[test]
    fn payload_rules() {
        assert!(validate_payload(b"hello\tworld\r\n").is_ok());
        assert!(validate_payload("caf\u{e9} \u{2603}".as_bytes()).is_ok());
        assert!(validate_payload(b"bell\x07").is_err());
        assert!(validate_payload(b"\xff\xfe").is_err());
        assert!(validate_payload(&vec![b'a'; MAX_PAYLOAD]).is_ok());
        assert!(validate_payload(&vec![b'a'; MAX_PAYLOAD + 1]).is_err());
        assert!(validate_payload("\u{85}".as_bytes()).is_err());
    }

    #[test]
    fn header_lines_roundtrip_and_errors() {
        let r = Record::new(2, "a/b/c", 1, &host()).unwrap();
        let block = r.headers.block();
        let lines: Vec<&[u8]> = block.split(|&b| b == b'\n').collect();
        assert_eq!(
            Headers::from_lines(lines.iter().copied()).unwrap(),
            r.headers
        );
        let mut bad = lines.clone();
        bad[1] = b"classificatioooon: a/b/c";
        assert!(matches!(
            Headers::from_lines(bad.iter().copied()),
            Err(HeaderParseError::WrongName { index: 1, .. })
        ));
        assert!(matches!(
            Headers::from_lines(lines[..9].iter().copied()),
            Err(HeaderParseError::Missing { .. }) | Err(HeaderParseError::WrongName { .. })
        ));
        // No space after the colon is accepted (the C daemon's prefix test allowed it).
        let mut nospace = lines.clone();
        nospace[5] = b"arch:x86_64";
        let h = Headers::from_lines(nospace.iter().copied()).unwrap();
        assert_eq!(h.get(Header::Arch), "x86_64");
        // Invalid UTF-8 is kept as U+FFFD (3 bytes each); the length bound applies to the
        // kept value, so whatever parses re-encodes to lines that parse again.
        for (invalid, parses) in [(300, true), (400, false)] {
            let mut line = b"arch: ".to_vec();
            line.extend(std::iter::repeat_n(0xffu8, invalid));
            let mut odd = lines.clone();
            odd[5] = &line;
            match Headers::from_lines(odd.iter().copied()) {
                Ok(h) => {
                    assert!(parses, "{invalid} invalid bytes");
                    let again = h.block();
                    let again: Vec<&[u8]> = again.split(|&b| b == b'\n').collect();
                    assert_eq!(Headers::from_lines(again.iter().copied()).unwrap(), h);
                }
                Err(e) => {
                    assert!(!parses, "{invalid} invalid bytes: {e}");
                    assert!(matches!(e, HeaderParseError::ValueTooLong { name: "arch" }));
                }
            }
        }
    }

    #[test]
    fn header_values_refuse_control_characters_except_tab() {
        fn check(value: &str, accepted: bool) {
            for h in [Header::CpuModel, Header::Build, Header::MachineId] {
                let mut r = Record::new(2, "a/b/c", 1, &host()).unwrap();
                r.headers.set(h, value);
                let result = r.headers.validate();
                assert_eq!(
                    result.is_ok(),
                    accepted,
                    "{value:?} in {}: {result:?}",
                    h.name()
                );
                if !accepted {
                    assert!(matches!(
                        result,
                        Err(RecordError::InvalidHeaderValue { name, .. }) if name == h.name()
                    ));
                }
            }
            let class = format!("a/b{value}/c");
            let mut r = Record::new(2, "a/b/c", 1, &host()).unwrap();
            r.headers.set(Header::Classification, class.as_str());
            assert_eq!(r.headers.validate().is_ok(), accepted, "{class:?}");
            assert_eq!(
                Record::new(2, &class, 1, &host()).is_ok(),
                accepted,
                "tm_create_record({class:?})"
            );
        }
        check("plain value", true);
        check("tab\there", true);
        check("caf\u{e9} \u{2603} \u{fffd}", true);
        check("", true);
        for bad in [
            "\n", "\r", "\0", "\x01", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\u{85}", "\u{9b}",
        ] {
            check(&format!("x{bad}y"), false);
        }
    }

    #[test]
    fn value_validation() {
        let mut r = Record::new(2, "a/b/c", 1, &host()).unwrap();
        r.headers.set(Header::Severity, "0");
        assert!(matches!(
            r.headers.validate(),
            Err(RecordError::InvalidSeverity(_))
        ));
        r.headers.set(Header::Severity, "3");
        r.headers.set(Header::EventId, "x");
        assert!(r.headers.validate().is_err());
    }
}
