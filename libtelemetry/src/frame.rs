//! The probe → telemprobd wire frame (§3.2), current format:
//!
//! ```text
//! u32 record_size (host order, counts the whole frame)
//! ["CFG:" <absolute config path> NUL]       optional
//! u32 header_size
//! <15 header lines>
//! <payload>
//! NUL
//! ```
//!
//! Architecture Invariant: this module is the only encoder and decoder of frames; the
//! library, telemprobd and the tests all go through it.

use crate::record::{HeaderParseError, Headers, Record, HEADER_NAMES, MAX_PAYLOAD};

/// Largest frame accepted (the C daemon's `MAX_RECORD_SIZE`).
pub const MAX_FRAME_SIZE: usize = 13500;
/// Smallest possible frame: size, header_size, terminator.
pub const MIN_FRAME_SIZE: usize = 4 + 4 + 1;
/// Longest `CFG:` path (PATH_MAX − 1).
pub const MAX_CFG_PATH: usize = 4095;
/// Lines in a frame's header block.
pub const HEADER_LINES: usize = HEADER_NAMES.len();
/// The 4 bytes that open the optional config field.
pub const CFG_MAGIC: &[u8; 4] = b"CFG:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("record_size {0} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}")]
    BadRecordSize(u32),
    #[error("frame has {actual} bytes but record_size says {declared}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("CFG: path is not NUL-terminated within {MAX_CFG_PATH} bytes")]
    BadCfgPath,
    #[error("CFG: path is not absolute UTF-8")]
    CfgPathNotAbsolute,
    #[error("CFG: path {0:?} contains a control character")]
    CfgPathControlChar(String),
    #[error("header_size {0} does not fit in the frame")]
    BadHeaderSize(u32),
    #[error("header_size {size} does not delimit exactly {HEADER_LINES} header lines ({reason})")]
    HeaderBlock { size: u32, reason: &'static str },
    #[error("frame is not terminated by NUL")]
    MissingTerminator,
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    PayloadTooLarge(usize),
    #[error("incorrect headers in record: {0}")]
    Headers(#[from] HeaderParseError),
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Config file named by the probe (`tm_set_config_file`).
    pub cfg_path: Option<String>,
    pub record: Record,
}

/// Whether `c` may not appear in a `CFG:` path. The staged file holds the path on a line of
/// its own, so a newline would split it; no control character belongs in a config path.
pub fn is_forbidden_cfg_char(c: char) -> bool {
    c.is_control()
}

/// Encode `record` (and the optional config path) as one frame. The decoder refuses a path
/// holding a control character ([`is_forbidden_cfg_char`]); callers check before sending.
pub fn encode_frame(record: &Record, cfg_path: Option<&str>) -> Vec<u8> {
    let headers = record.headers.block();
    let cfg_len = cfg_path.map_or(0, |p| CFG_MAGIC.len() + p.len() + 1);
    let total = 4 + cfg_len + 4 + headers.len() + record.payload.len() + 1;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    if let Some(p) = cfg_path {
        out.extend_from_slice(CFG_MAGIC);
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(&(headers.len() as u32).to_ne_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&record.payload);
    out.push(0);
    out
}

/// Given the first bytes of a stream, the total length of the frame they start, once the
/// 4-byte size is known. Errors when the size is out of bounds, so a reader never buffers
/// more than [`MAX_FRAME_SIZE`].
pub fn frame_len(prefix: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(size) = prefix.get(..4) else {
        return Ok(None);
    };
    let size = u32::from_ne_bytes([size[0], size[1], size[2], size[3]]);
    if (size as usize) < MIN_FRAME_SIZE || size as usize > MAX_FRAME_SIZE {
        return Err(FrameError::BadRecordSize(size));
    }
    Ok(Some(size as usize))
}

/// Decode one complete frame (`buf` = exactly the frame, size field included).
pub fn decode_frame(buf: &[u8]) -> Result<Frame, FrameError> {
    let declared = frame_len(buf)?.ok_or(FrameError::BadRecordSize(0))?;
    if buf.len() != declared {
        return Err(FrameError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let mut rest = &buf[4..];
    let mut cfg_path = None;
    if rest.starts_with(CFG_MAGIC) {
        let after = &rest[CFG_MAGIC.len()..];
        let nul = after
            .iter()
            .take(MAX_CFG_PATH + 1)
            .position(|&b| b == 0)
            .ok_or(FrameError::BadCfgPath)?;
        let path =
            std::str::from_utf8(&after[..nul]).map_err(|_| FrameError::CfgPathNotAbsolute)?;
        if !path.starts_with('/') {
            return Err(FrameError::CfgPathNotAbsolute);
        }
        if path.chars().any(is_forbidden_cfg_char) {
            return Err(FrameError::CfgPathControlChar(path.to_string()));
        }
        cfg_path = Some(path.to_string());
        rest = &after[nul + 1..];
    }
    let hs = rest
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FrameError::BadHeaderSize(0))?;
    rest = &rest[4..];
    // header_size must leave room for at least the terminator.
    if hs as usize >= rest.len() {
        return Err(FrameError::BadHeaderSize(hs));
    }
    let (header_bytes, tail) = rest.split_at(hs as usize);
    let (&last, body) = tail.split_last().ok_or(FrameError::MissingTerminator)?;
    if last != 0 {
        return Err(FrameError::MissingTerminator);
    }
    // As in C, the body ends at its first NUL.
    let payload = body.split(|&b| b == 0).next().unwrap_or(&[]);
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge(payload.len()));
    }
    let headers = Headers::from_lines(header_lines(header_bytes, hs)?)?;
    Ok(Frame {
        cfg_path,
        record: Record {
            headers,
            payload: payload.to_vec(),
        },
    })
}

/// The lines of a header block, which must be exactly [`HEADER_LINES`] non-empty lines, each
/// ending in `\n`. A `header_size` that cuts into the last header or reaches into the
/// payload, or a block with one line more, would otherwise stage a record whose payload
/// lost or gained bytes after the probe was told it was accepted.
fn header_lines(block: &[u8], size: u32) -> Result<Vec<&[u8]>, FrameError> {
    let bad = |reason| FrameError::HeaderBlock { size, reason };
    let lines = block
        .strip_suffix(b"\n")
        .ok_or_else(|| bad("the block does not end with a newline"))?;
    let lines: Vec<&[u8]> = lines.split(|&b| b == b'\n').collect();
    if lines.len() != HEADER_LINES {
        return Err(bad(if lines.len() > HEADER_LINES {
            "more lines"
        } else {
            "fewer lines"
        }));
    }
    if lines.iter().any(|l| l.is_empty()) {
        return Err(bad("an empty line"));
    }
    Ok(lines)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::Header;

    /// A record with fixed values, so bytes are stable.
    pub(crate) fn golden_record(payload: &[u8]) -> Record {
        let mut h = Headers::default();
        let values = [
            "4",
            "org.test/probe/one",
            "3",
            "FFFFFFFF",
            "1795614028",
            "x86_64",
            "no_sv_file|no_pn_file|no_pvr_file",
            "\"12\"",
            "6.1.0",
            "1",
            "debian",
            "no_bn_file|no_bv_file",
            "Intel(R) Xeon(R)",
            "no_bv_file",
            "096e3e10a02b5091cfc31c84ed814c73",
        ];
        for (i, v) in values.iter().enumerate() {
            h.0[i] = v.to_string();
        }
        Record {
            headers: h,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn golden_frame_without_cfg() {
        let r = golden_record(b"hello world");
        let f = encode_frame(&r, None);
        let hs = r.headers.block().len();
        assert_eq!(f.len(), 4 + 4 + hs + 11 + 1);
        assert_eq!(&f[..4], &(f.len() as u32).to_ne_bytes());
        assert_eq!(&f[4..8], &(hs as u32).to_ne_bytes());
        let mut expected = Vec::new();
        expected.extend_from_slice(&(f.len() as u32).to_ne_bytes());
        expected.extend_from_slice(&(hs as u32).to_ne_bytes());
        expected.extend_from_slice(
            b"record_format_version: 4\nclassification: org.test/probe/one\nseverity: 3\n\
machine_id: FFFFFFFF\ncreation_timestamp: 1795614028\narch: x86_64\n\
host_type: no_sv_file|no_pn_file|no_pvr_file\nbuild: \"12\"\nkernel_version: 6.1.0\n\
payload_format_version: 1\nsystem_name: debian\nboard_name: no_bn_file|no_bv_file\n\
cpu_model: Intel(R) Xeon(R)\nbios_version: no_bv_file\nevent_id: 096e3e10a02b5091cfc31c84ed814c73\n",
        );
        expected.extend_from_slice(b"hello world\0");
        assert_eq!(f, expected);
        assert_eq!(
            decode_frame(&f).unwrap(),
            Frame {
                cfg_path: None,
                record: r
            }
        );
    }

    #[test]
    fn golden_frame_with_cfg() {
        let r = golden_record(b"");
        let f = encode_frame(&r, Some("/tmp/example/t.conf"));
        assert_eq!(&f[4..28], b"CFG:/tmp/example/t.conf\0");
        assert_eq!(&f[28..32], &(r.headers.block().len() as u32).to_ne_bytes());
        assert_eq!(*f.last().unwrap(), 0);
        let d = decode_frame(&f).unwrap();
        assert_eq!(d.cfg_path.as_deref(), Some("/tmp/example/t.conf"));
        assert_eq!(d.record, r);
    }

    #[test]
    fn cfg_paths_with_control_characters_are_refused() {
        fn check(path: &str, expected: Result<(), FrameError>) {
            let f = encode_frame(&golden_record(b"x"), Some(path));
            let got = decode_frame(&f).map(|d| {
                assert_eq!(d.cfg_path.as_deref(), Some(path));
            });
            assert_eq!(got, expected, "{path:?}");
        }
        let refused = |p: &str| Err(FrameError::CfgPathControlChar(p.to_string()));
        check("/etc/t.conf", Ok(()));
        check("/with space/caf\u{e9}.conf", Ok(()));
        for bad in [
            "/a\nb",
            "/a\rb",
            "/a\tb",
            "/a\x1b[2Jb",
            "/a\x7fb",
            "/a\u{85}b",
            "/a\x01",
        ] {
            check(bad, refused(bad));
        }
        check("relative", Err(FrameError::CfgPathNotAbsolute));
    }

    #[test]
    fn rejects_bad_frames() {
        let r = golden_record(b"x");
        let good = encode_frame(&r, None);
        assert!(matches!(
            frame_len(&[1, 0, 0, 0]),
            Err(FrameError::BadRecordSize(1))
        ));
        assert_eq!(frame_len(&good[..3]), Ok(None));
        assert!(matches!(
            decode_frame(&good[..good.len() - 1]),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut no_nul = good.clone();
        *no_nul.last_mut().unwrap() = b'y';
        assert_eq!(decode_frame(&no_nul), Err(FrameError::MissingTerminator));
        let mut bad_hs = good.clone();
        bad_hs[4..8].copy_from_slice(&5000u32.to_ne_bytes());
        assert!(matches!(
            decode_frame(&bad_hs),
            Err(FrameError::BadHeaderSize(5000))
        ));
        let mut bad_name = r.clone();
        bad_name.headers.set(Header::Classification, "a/b/c");
        let mut f = encode_frame(&bad_name, None);
        let pos = f.windows(14).position(|w| w == b"classification").unwrap();
        f[pos] = b'k';
        assert!(matches!(decode_frame(&f), Err(FrameError::Headers(_))));
        let big = golden_record(&vec![b'a'; MAX_PAYLOAD + 1]);
        assert!(matches!(
            decode_frame(&encode_frame(&big, None)),
            Err(FrameError::PayloadTooLarge(_))
        ));
        let max = golden_record(&vec![b'a'; MAX_PAYLOAD]);
        assert!(
            decode_frame(&encode_frame(&max, None)).is_ok(),
            "8192-byte payload accepted"
        );
    }

    /// A frame whose header_size is off, or whose header block has a 16th line, is refused:
    /// accepting it would stage a record with bytes moved between headers and payload.
    #[test]
    fn header_size_must_delimit_exactly_the_header_block() {
        let r = golden_record(b"THE-PAYLOAD-WOULD-BE-HERE");
        let good = encode_frame(&r, None);
        let hs = r.headers.block().len() as u32;
        let with_hs = |h: u32| {
            let mut f = good.clone();
            f[4..8].copy_from_slice(&h.to_ne_bytes());
            f
        };
        for delta in [-10i64, -1, 1, 10] {
            let f = with_hs((i64::from(hs) + delta) as u32);
            assert!(
                matches!(decode_frame(&f), Err(FrameError::HeaderBlock { .. })),
                "header_size off by {delta}: {:?}",
                decode_frame(&f)
            );
        }
        // The payload starting with a line that would pass for a 16th header.
        let r16 = golden_record(b"extra: line\nrest");
        let mut f = encode_frame(&r16, None);
        let hs16 = r16.headers.block().len() as u32 + 12;
        f[4..8].copy_from_slice(&hs16.to_ne_bytes());
        assert_eq!(
            decode_frame(&f),
            Err(FrameError::HeaderBlock {
                size: hs16,
                reason: "more lines"
            })
        );
        // An empty line inside the block.
        let mut block = r.headers.block();
        block.insert(0, b'\n');
        let mut f = Vec::new();
        let total = 4 + 4 + block.len() + 1 + 1;
        f.extend_from_slice(&(total as u32).to_ne_bytes());
        f.extend_from_slice(&(block.len() as u32).to_ne_bytes());
        f.extend_from_slice(&block);
        f.extend_from_slice(b"x\0");
        assert!(matches!(
            decode_frame(&f),
            Err(FrameError::HeaderBlock { .. })
        ));
        assert!(decode_frame(&good).is_ok());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            "[ -~]{0,60}"
        }

        proptest! {
            #[test]
            fn decode_of_encode_is_identity(
                values in proptest::collection::vec(value(), 15),
                payload in proptest::collection::vec(1u8..=255, 0..2000),
                cfg in proptest::option::of("/[a-z/]{0,40}"),
            ) {
                let mut h = Headers::default();
                for (i, v) in values.into_iter().enumerate() { h.0[i] = v; }
                let r = Record { headers: h, payload };
                let f = encode_frame(&r, cfg.as_deref());
                let d = decode_frame(&f).unwrap();
                prop_assert_eq!(d.cfg_path, cfg);
                prop_assert_eq!(d.record, r);
            }

            /// Whatever decodes (here: valid frames with random bytes changed) re-encodes to a
            /// frame that decodes equal.
            #[test]
            fn decoded_frames_reencode_equal(
                payload in "[ -~\n]{0,200}",
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            ) {
                let mut bytes = encode_frame(&golden_record(payload.as_bytes()), Some("/c"));
                let len = bytes.len();
                for (at, b) in flips {
                    bytes[at % len] = b;
                }
                if let Ok(f) = decode_frame(&bytes) {
                    let back = decode_frame(&encode_frame(&f.record, f.cfg_path.as_deref())).unwrap();
                    prop_assert_eq!(back.record, f.record);
                    prop_assert_eq!(back.cfg_path, f.cfg_path);
                }
            }

            /// Any header_size but the exact one is refused, whatever the payload holds.
            #[test]
            fn only_the_exact_header_size_decodes(
                payload in "[ -~\n]{0,100}",
                delta in -600i64..600,
            ) {
                prop_assume!(delta != 0);
                let r = golden_record(payload.as_bytes());
                let mut f = encode_frame(&r, None);
                let hs = r.headers.block().len() as i64 + delta;
                prop_assume!(hs >= 0);
                f[4..8].copy_from_slice(&(hs as u32).to_ne_bytes());
                prop_assert!(decode_frame(&f).is_err());
            }

            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = frame_len(&bytes);
                let _ = decode_frame(&bytes);
                let mut sized = bytes.clone();
                if sized.len() >= 4 {
                    let n = sized.len() as u32;
                    sized[..4].copy_from_slice(&n.to_ne_bytes());
                    let _ = decode_frame(&sized);
                }
            }
        }
    }
}
