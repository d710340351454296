//! Staged / spooled record files (§4.3, §5.5): the handoff from telemprobd to telempostd.
//!
//! ```text
//! [CFG:<path>\n]       only when the frame had a CFG field
//! <15 header lines>    machine_id already replaced
//! <payload>\n          telemprobd adds ONE '\n'
//! ```
//!
//! Architecture Invariant: the only encoder and parser of staged files.

use std::path::PathBuf;

use crate::record::{HeaderParseError, Headers, Record};

/// Largest staged file parsed: a maximal frame plus slack for the `CFG:` line. Larger files
/// are not this suite's and not the C client's.
pub const MAX_STAGED_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagedError {
    #[error("staged file is empty")]
    Empty,
    #[error("staged file is larger than {MAX_STAGED_SIZE} bytes")]
    TooLarge,
    #[error("CFG: line is not terminated or not an absolute path")]
    BadCfgLine,
    #[error("CFG: path {0:?} contains a control character")]
    CfgControlChar(String),
    #[error("{0}")]
    Headers(#[from] HeaderParseError),
    #[error("staged file has no body after the headers")]
    NoBody,
    #[error("staged file does not end with the newline staging adds (cut short)")]
    CutShort,
}

/// A parsed staged file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRecord {
    pub cfg_path: Option<PathBuf>,
    pub headers: Headers,
    /// Everything after the headers: the payload plus the `\n` telemprobd added. This is the
    /// body the C telempostd sent to the server.
    pub body: Vec<u8>,
}

impl StagedRecord {
    /// The probe's payload (the body without the one `\n` staging added).
    pub fn payload(&self) -> &[u8] {
        self.body.strip_suffix(b"\n").unwrap_or(&self.body)
    }

    pub fn into_record(self) -> Record {
        let payload = self.payload().to_vec();
        Record {
            headers: self.headers,
            payload,
        }
    }
}

/// Who sent a staged record, as its file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StagedSender {
    /// A bare 6-character name: staged by the C telemprobd, or by a version of this suite
    /// that did not record the sender. Nobody can be charged for it.
    Unknown,
    /// The uid telemprobd read from the connection (`SO_PEERCRED`), not a value the sender
    /// claimed.
    Uid(u32),
}

/// Length of the random part of a staged name (mkstemp's `XXXXXX`, as the C telemprobd).
pub const STAGED_NAME_RANDOM_LEN: usize = 6;

/// The final name of a staged file: the 6 random `[A-Za-z0-9]` of mkstemp's shape, then,
/// for a record whose sender telemprobd knows, `.u<uid>` (decimal, no leading zero).
///
/// ```text
/// Ab3xY9          C-compatible name, sender unknown
/// Ab3xY9.u1000    staged for uid 1000
/// ```
///
/// Architecture Invariant: the only encoder and parser of staged file names. telempostd
/// counts, moves and deletes only files whose names parse here (anything else in the spool
/// is not a record of this suite or of the C client, and is left alone). A C telempostd
/// sharing the spool reads any name, so the suffix costs it nothing.
pub fn format_staged_name(random: &str, sender: StagedSender) -> String {
    match sender {
        StagedSender::Unknown => random.to_string(),
        StagedSender::Uid(uid) => format!("{random}.u{uid}"),
    }
}

/// Parse a staged file name; `None` for any name telemprobd (ours or the C one) never
/// creates, dotfiles and temp files included.
pub fn parse_staged_name(name: &str) -> Option<StagedSender> {
    let bytes = name.as_bytes();
    if bytes.len() < STAGED_NAME_RANDOM_LEN
        || !bytes[..STAGED_NAME_RANDOM_LEN]
            .iter()
            .all(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    let rest = &name[STAGED_NAME_RANDOM_LEN..];
    if rest.is_empty() {
        return Some(StagedSender::Unknown);
    }
    let digits = rest.strip_prefix(".u")?;
    if digits.is_empty()
        || digits.len() > 10
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse::<u32>().ok().map(StagedSender::Uid)
}

/// Bytes of the staged file for `record`. `cfg_path` must be one [`decode_frame`] accepts
/// (no control character), or the file will not parse.
///
/// [`decode_frame`]: crate::frame::decode_frame
pub fn encode_staged(record: &Record, cfg_path: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + record.payload.len());
    if let Some(p) = cfg_path {
        out.extend_from_slice(b"CFG:");
        out.extend_from_slice(p.as_bytes());
        out.push(b'\n');
    }
    record.headers.write_block(&mut out);
    out.extend_from_slice(&record.payload);
    out.push(b'\n');
    out
}

/// Parse a staged file's bytes.
pub fn parse_staged(bytes: &[u8]) -> Result<StagedRecord, StagedError> {
    if bytes.is_empty() {
        return Err(StagedError::Empty);
    }
    if bytes.len() > MAX_STAGED_SIZE {
        return Err(StagedError::TooLarge);
    }
    let mut rest = bytes;
    let mut cfg_path = None;
    if let Some(after) = rest.strip_prefix(b"CFG:") {
        let nl = after
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(StagedError::BadCfgLine)?;
        let path = std::str::from_utf8(&after[..nl]).map_err(|_| StagedError::BadCfgLine)?;
        if !path.starts_with('/') || path.len() > crate::frame::MAX_CFG_PATH {
            return Err(StagedError::BadCfgLine);
        }
        if path.chars().any(crate::frame::is_forbidden_cfg_char) {
            return Err(StagedError::CfgControlChar(path.to_string()));
        }
        cfg_path = Some(PathBuf::from(path));
        rest = &after[nl + 1..];
    }
    let mut lines = Vec::with_capacity(15);
    for _ in 0..crate::record::NUM_HEADERS {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // Let the header parser name which header is missing or wrong.
            lines.push(rest);
            rest = &[];
            break;
        };
        lines.push(&rest[..nl]);
        rest = &rest[nl + 1..];
    }
    let headers = Headers::from_lines(lines)?;
    if rest.is_empty() {
        return Err(StagedError::NoBody);
    }
    // Every stager (ours and the C telemprobd) ends the file with one '\n' after the payload,
    // so a file without it was cut short, e.g. by a power loss before its data reached the
    // disk: sending it would deliver a torn record.
    if rest.last() != Some(&b'\n') {
        return Err(StagedError::CutShort);
    }
    Ok(StagedRecord {
        cfg_path,
        headers,
        body: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn staged_names_round_trip_and_refuse_what_the_stager_never_writes() {
        for (name, want) in [
            ("Ab3xY9", Some(StagedSender::Unknown)),
            ("Ab3xY9.u0", Some(StagedSender::Uid(0))),
            ("Ab3xY9.u1000", Some(StagedSender::Uid(1000))),
            ("Ab3xY9.u4294967295", Some(StagedSender::Uid(u32::MAX))),
            ("Ab3xY9.u4294967296", None),
            ("Ab3xY9.u01", None),
            ("Ab3xY9.u", None),
            ("Ab3xY9.x1", None),
            ("Ab3xY9x", None),
            ("Ab3x", None),
            (".tmp-probd.1.2", None),
            ("Ab3-Y9", None),
            ("Ab3xY9.u1000.tmp", None),
        ] {
            assert_eq!(parse_staged_name(name), want, "{name}");
            if let Some(sender) = want {
                assert_eq!(format_staged_name(&name[..6], sender), name);
            }
        }
    }
    use super::*;
    use crate::frame::tests::golden_record;

    const CORRECT_MESSAGE: &[u8] = b"record_format_version: 1\nclassification: crash/kernel/bug\n\
severity: 0\nmachine_id: 1234\ncreation_timestamp: 1418672344\narch: x86_64\n\
host_type: macbookpro\nbuild: 200\nkernel_version: 3.15\npayload_format_version: 1\n\
system_name: clear-linux-os\nboard_name: Qemu|Intel\n\
cpu_model: Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz\nbios_version: Qemu\n\
event_id: 3a2d799826edc6266d72824d2aac6763\ntest message\n";

    const INCORRECT_HEADERS: &[u8] =
        b"record_format_version: 1\nnclassificatioooon: crash/kernel/bug\n\
severity: 0\nmachine_id: 1234\ncreation_timestamp: 1531420323\narch: x86_64\n\
host_type: macbookpro\nbuild: 23550\nkernel_version: 4.17.4-589.native\ntest message\n";

    #[test]
    fn c_fixtures() {
        assert_eq!(CORRECT_MESSAGE.len(), 389);
        let s = parse_staged(CORRECT_MESSAGE).unwrap();
        assert_eq!(s.body, b"test message\n");
        assert_eq!(s.payload(), b"test message");
        assert_eq!(s.headers.0[12], "Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz");
        assert_eq!(parse_staged(b""), Err(StagedError::Empty));
        assert!(matches!(
            parse_staged(b"test\n"),
            Err(StagedError::Headers(_))
        ));
        assert_eq!(INCORRECT_HEADERS.len(), 217);
        assert!(matches!(
            parse_staged(INCORRECT_HEADERS),
            Err(StagedError::Headers(_))
        ));
        let no_body = &CORRECT_MESSAGE[..CORRECT_MESSAGE.len() - 13];
        assert_eq!(parse_staged(no_body), Err(StagedError::NoBody));
    }

    #[test]
    fn golden_staged_bytes() {
        let r = golden_record(b"line1\nline2");
        let bytes = encode_staged(&r, Some("/tmp/example/t.conf"));
        let mut expected = b"CFG:/tmp/example/t.conf\n".to_vec();
        expected.extend_from_slice(&r.headers.block());
        expected.extend_from_slice(b"line1\nline2\n");
        assert_eq!(bytes, expected);
        let s = parse_staged(&bytes).unwrap();
        assert_eq!(
            s.cfg_path.as_deref(),
            Some(std::path::Path::new("/tmp/example/t.conf"))
        );
        assert_eq!(s.into_record(), r);
        let plain = encode_staged(&r, None);
        assert!(plain.starts_with(b"record_format_version: 4\n"));
    }

    #[test]
    fn cfg_lines_with_control_characters_are_refused() {
        fn check(path: &str, expected: Result<(), StagedError>) {
            let bytes = encode_staged(&golden_record(b"x"), Some(path));
            let got = parse_staged(&bytes).map(|s| {
                assert_eq!(s.cfg_path, Some(PathBuf::from(path)));
            });
            assert_eq!(got, expected, "{path:?}");
        }
        check("/etc/t.conf", Ok(()));
        check("/with space/caf\u{e9}.conf", Ok(()));
        for bad in [
            "/a\rb",
            "/a\tb",
            "/a\x1b[2Jb",
            "/a\x7fb",
            "/a\u{85}b",
            "/a\x01",
        ] {
            check(bad, Err(StagedError::CfgControlChar(bad.to_string())));
        }
        // A newline ends the line: the rest is taken for the first header, which is wrong.
        assert!(matches!(
            parse_staged(&encode_staged(&golden_record(b"x"), Some("/a\nb"))),
            Err(StagedError::BadCfgLine | StagedError::Headers(_))
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
                let _ = parse_staged(&bytes);
            }

            /// Whatever parses (here: valid files with random bytes changed) re-encodes to a
            /// file that parses equal.
            #[test]
            fn parsed_files_reencode_equal(
                payload in "[ -~\n]{0,200}",
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            ) {
                let mut bytes = encode_staged(&golden_record(payload.as_bytes()), Some("/c"));
                let len = bytes.len();
                for (at, b) in flips {
                    bytes[at % len] = b;
                }
                if let Ok(s) = parse_staged(&bytes) {
                    let cfg = s.cfg_path.as_ref().and_then(|p| p.to_str()).map(str::to_owned);
                    let record = s.clone().into_record();
                    let again = parse_staged(&encode_staged(&record, cfg.as_deref())).unwrap();
                    prop_assert_eq!(again.into_record(), record);
                }
            }

            #[test]
            fn roundtrip(payload in "[ -~\n]{0,300}") {
                let r = golden_record(payload.as_bytes());
                let s = parse_staged(&encode_staged(&r, None)).unwrap();
                prop_assert_eq!(s.into_record(), r);
            }
        }
    }
}
