//! crashprobe's crash-loop state file: per crash signature, the records sent in the current
//! window and the crashes held back since the last record. crashprobe reads and replaces it
//! under its lock file (`Paths::crash_loop_lock_file`); `telemctl crashes` reads it.
//!
//! The file (`Paths::crash_loop_file`, UTF-8 text):
//!
//! ```text
//! telemetrics-crashloop 1
//! <signature>\t<window_start>\t<sent_in_window>\t<held_back>\t<held_back_since>\t<seen>\t<suppressed>\t<first_seen>\t<last_seen>\t<executable>\t<frames>
//! ...
//! ```
//!
//! `signature` is 16 hex digits; times are seconds since the epoch (`held_back_since` is 0
//! when nothing is held back); `executable` and `frames` are display text without tabs or
//! control characters, at most [`MAX_TEXT`] bytes each. At most [`MAX_SIGNATURES`] lines;
//! the encoder writes them most recently seen first.
//!
//! Architecture Invariant: [`CrashLoopState::parse`] takes untrusted bytes: it bounds the size
//! ([`MAX_STATE_FILE_SIZE`]) and the count, and returns a typed error for anything else than
//! what [`CrashLoopState::encode`] writes (crashprobe then starts from an empty state).

use std::io::Read;
use std::path::Path;

/// Signatures kept; past it the one seen longest ago is dropped.
pub const MAX_SIGNATURES: usize = 256;
/// Longest `executable` or `frames` text kept.
pub const MAX_TEXT: usize = 512;
/// Largest state file read: `MAX_SIGNATURES` lines of two full texts and the numbers.
pub const MAX_STATE_FILE_SIZE: usize = MAX_SIGNATURES * (2 * MAX_TEXT + 200) + 64;

const HEADER: &str = "telemetrics-crashloop 1";
const FIELDS: usize = 11;

/// The counts of one crash signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureCounts {
    pub signature: u64,
    /// Start of the current window (seconds since the epoch).
    pub window_start: u64,
    /// Records sent since `window_start`.
    pub sent_in_window: u32,
    /// Crashes not reported since the last record sent for this signature.
    pub held_back: u64,
    /// When the first of `held_back` happened.
    pub held_back_since: Option<u64>,
    /// Every crash with this signature.
    pub seen: u64,
    /// Every crash with this signature that was not reported.
    pub suppressed: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    /// The crashed program (`Process:` of the payload).
    pub executable: String,
    /// The frames the signature is made of, for display.
    pub frames: String,
}

impl SignatureCounts {
    /// A signature seen for the first time at `now`, with nothing counted yet.
    pub fn new(signature: u64, executable: &str, frames: &str, now: u64) -> SignatureCounts {
        SignatureCounts {
            signature,
            window_start: now,
            sent_in_window: 0,
            held_back: 0,
            held_back_since: None,
            seen: 0,
            suppressed: 0,
            first_seen: now,
            last_seen: now,
            executable: display_text(executable),
            frames: display_text(frames),
        }
    }

    /// Records sent for this signature.
    pub fn sent(&self) -> u64 {
        self.seen.saturating_sub(self.suppressed)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashLoopState {
    pub entries: Vec<SignatureCounts>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrashLoopStateError {
    #[error("crash-loop state larger than {MAX_STATE_FILE_SIZE} bytes")]
    TooLarge,
    #[error("not a crash-loop state file")]
    Header,
    #[error("crash-loop state line {line}: {problem}")]
    Line { line: usize, problem: &'static str },
    #[error("crash-loop state holds more than {MAX_SIGNATURES} signatures")]
    TooMany,
}

impl CrashLoopState {
    /// Decode what [`CrashLoopState::encode`] wrote.
    pub fn parse(bytes: &[u8]) -> Result<CrashLoopState, CrashLoopStateError> {
        if bytes.len() > MAX_STATE_FILE_SIZE {
            return Err(CrashLoopStateError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| CrashLoopStateError::Header)?;
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(HEADER) {
            return Err(CrashLoopStateError::Header);
        }
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            let line_no = i + 2;
            if entries.len() == MAX_SIGNATURES {
                return Err(CrashLoopStateError::TooMany);
            }
            let bad = |problem| CrashLoopStateError::Line {
                line: line_no,
                problem,
            };
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != FIELDS {
                return Err(bad("wrong number of fields"));
            }
            let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not a number"));
            let signature = (fields[0].len() == 16)
                .then(|| u64::from_str_radix(fields[0], 16).ok())
                .flatten()
                .ok_or_else(|| bad("signature is not 16 hex digits"))?;
            let since = num(fields[4])?;
            let entry = SignatureCounts {
                signature,
                window_start: num(fields[1])?,
                sent_in_window: u32::try_from(num(fields[2])?)
                    .map_err(|_| bad("count out of range"))?,
                held_back: num(fields[3])?,
                held_back_since: (since != 0).then_some(since),
                seen: num(fields[5])?,
                suppressed: num(fields[6])?,
                first_seen: num(fields[7])?,
                last_seen: num(fields[8])?,
                executable: fields[9].to_string(),
                frames: fields[10].to_string(),
            };
            if entry.executable.len() > MAX_TEXT
                || entry.frames.len() > MAX_TEXT
                || entry.executable.chars().any(char::is_control)
                || entry.frames.chars().any(char::is_control)
            {
                return Err(bad("text too long or with control characters"));
            }
            if entry.suppressed > entry.seen || entry.held_back > entry.suppressed {
                return Err(bad("counts do not add up"));
            }
            if entries
                .iter()
                .any(|e: &SignatureCounts| e.signature == signature)
            {
                return Err(bad("signature listed twice"));
            }
            entries.push(entry);
        }
        Ok(CrashLoopState { entries })
    }

    /// The file contents: the header, then the signatures most recently seen first.
    pub fn encode(&self) -> String {
        let mut entries: Vec<&SignatureCounts> = self.entries.iter().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        let mut out = String::with_capacity(64 + entries.len() * 160);
        out.push_str(HEADER);
        out.push('\n');
        for e in entries.into_iter().take(MAX_SIGNATURES) {
            out.push_str(&format!(
                "{:016x}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                e.signature,
                e.window_start,
                e.sent_in_window,
                e.held_back,
                e.held_back_since.unwrap_or(0),
                e.seen,
                e.suppressed,
                e.first_seen,
                e.last_seen,
                display_text(&e.executable),
                display_text(&e.frames),
            ));
        }
        out
    }

    /// The counts of `signature`, added (at `now`, with `executable` and `frames`) when
    /// missing; when [`MAX_SIGNATURES`] are already kept, the one seen longest ago goes.
    pub fn entry(
        &mut self,
        signature: u64,
        executable: &str,
        frames: &str,
        now: u64,
    ) -> &mut SignatureCounts {
        let index = match self.entries.iter().position(|e| e.signature == signature) {
            Some(i) => i,
            None => {
                if self.entries.len() >= MAX_SIGNATURES {
                    if let Some(oldest) = self
                        .entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.last_seen)
                        .map(|(i, _)| i)
                    {
                        self.entries.swap_remove(oldest);
                    }
                }
                self.entries
                    .push(SignatureCounts::new(signature, executable, frames, now));
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    pub fn get(&self, signature: u64) -> Option<&SignatureCounts> {
        self.entries.iter().find(|e| e.signature == signature)
    }
}

/// Why the state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadStateError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] CrashLoopStateError),
}

/// Read and decode the state file; a missing file is an empty state.
pub fn read_state(path: &Path) -> Result<CrashLoopState, ReadStateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CrashLoopState::default()),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(CrashLoopState::parse(&bytes)?)
}

/// Text safe for a state-file field: control characters (tabs, newlines) become `?`, cut
/// to [`MAX_TEXT`] bytes at a character boundary.
pub fn display_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT));
    for c in s.chars().map(|c| if c.is_control() { '?' } else { c }) {
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_timestamp(secs: u64) -> String {
    let rem = secs % 86_400;
    let (year, month, day) = crate::civil::civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> CrashLoopState {
        let mut s = CrashLoopState::default();
        let e = s.entry(0xabc, "/usr/bin/foo", "crash() [foo] < main() [foo]", 100);
        e.seen = 10;
        e.suppressed = 7;
        e.held_back = 7;
        e.held_back_since = Some(150);
        e.sent_in_window = 3;
        e.last_seen = 200;
        s.entry(0xdef, "/usr/bin/bar\twith tab", "f() [bar]", 300)
            .seen = 1;
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let text = s.encode();
        assert!(text.starts_with("telemetrics-crashloop 1\n0000000000000def\t300\t0\t0\t0\t1\t0\t300\t300\t/usr/bin/bar?with tab\tf() [bar]\n"));
        let back = CrashLoopState::parse(text.as_bytes()).unwrap();
        assert_eq!(back.get(0xabc), s.get(0xabc));
        assert_eq!(back.get(0xdef).unwrap().executable, "/usr/bin/bar?with tab");
        assert_eq!(back.entries.len(), 2);
    }

    #[test]
    fn corrupt_files_are_typed_errors() {
        use CrashLoopStateError::*;
        let good = sample().encode();
        assert_eq!(CrashLoopState::parse(b""), Err(Header));
        assert_eq!(CrashLoopState::parse(b"\xff\xfe"), Err(Header));
        assert_eq!(
            CrashLoopState::parse(b"telemetrics-crashloop 2\n"),
            Err(Header)
        );
        let line = |l: &str| CrashLoopState::parse(format!("{HEADER}\n{l}\n").as_bytes());
        assert!(matches!(line("x"), Err(Line { line: 2, .. })));
        assert!(matches!(
            line("000000000000000g\t1\t1\t0\t0\t1\t0\t1\t1\ta\tb"),
            Err(Line { .. })
        ));
        assert!(matches!(
            line("0000000000000001\t1\t1\t5\t0\t1\t0\t1\t1\ta\tb"),
            Err(Line {
                problem: "counts do not add up",
                ..
            })
        ));
        assert!(matches!(
            line("0000000000000001\t1\t99999999999\t0\t0\t1\t0\t1\t1\ta\tb"),
            Err(Line { .. })
        ));
        let twice = format!("{good}{}", good.lines().nth(1).unwrap());
        assert!(matches!(
            CrashLoopState::parse(twice.as_bytes()),
            Err(Line { .. })
        ));
        assert_eq!(
            CrashLoopState::parse(&vec![b'a'; MAX_STATE_FILE_SIZE + 1]),
            Err(TooLarge)
        );
    }

    #[test]
    fn the_oldest_signature_makes_room() {
        let mut s = CrashLoopState::default();
        for i in 0..MAX_SIGNATURES as u64 {
            s.entry(i, "e", "f", 1000 + i);
        }
        s.entry(5, "e", "f", 5000).last_seen = 5000;
        s.entry(99_999, "e", "f", 6000);
        assert_eq!(s.entries.len(), MAX_SIGNATURES);
        assert!(s.get(0).is_none(), "seen longest ago");
        assert!(s.get(5).is_some() && s.get(99_999).is_some());
        let text = s.encode();
        assert!(text.len() <= MAX_STATE_FILE_SIZE);
        assert_eq!(
            CrashLoopState::parse(text.as_bytes())
                .unwrap()
                .entries
                .len(),
            MAX_SIGNATURES
        );
        // Full texts stay within the file bound.
        let long = "x".repeat(4 * MAX_TEXT);
        let mut s = CrashLoopState::default();
        for i in 0..MAX_SIGNATURES as u64 {
            s.entry(i, &long, &long, u64::MAX - i).seen = u64::MAX;
        }
        let text = s.encode();
        assert!(text.len() <= MAX_STATE_FILE_SIZE, "{}", text.len());
        assert!(CrashLoopState::parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn missing_file_is_empty_and_a_fifo_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            read_state(&d.path().join("none")).unwrap(),
            CrashLoopState::default()
        );
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_state(&fifo), Err(ReadStateError::Invalid(_))));
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_796_589_296), "2026-12-06T20:34:56Z");
    }

    #[test]
    fn config_keys() {
        let paths = crate::Paths::new("/r", "/h");
        let parse = |text: &str| {
            crate::Config::parse(
                &format!("[settings]\n{text}\n"),
                Path::new("/t.conf"),
                &paths,
            )
        };
        let d = parse("").unwrap();
        assert_eq!((d.crash_loop_limit, d.crash_loop_interval), (5, 3600));
        let c = parse("crash_loop_limit=0\ncrash_loop_interval=60").unwrap();
        assert_eq!((c.crash_loop_limit, c.crash_loop_interval), (0, 60));
        for bad in [
            "crash_loop_limit=-1",
            "crash_loop_limit=x",
            "crash_loop_interval=0",
            "crash_loop_interval=99999999999",
        ] {
            // A bad value keeps the default (probes and delivery go on) and is reported.
            let c = parse(bad).unwrap();
            assert_eq!(
                (c.crash_loop_limit, c.crash_loop_interval),
                (5, 3600),
                "{bad}"
            );
            let e = c
                .deferred_error("crash_loop_")
                .expect(bad)
                .to_error()
                .to_string();
            assert!(e.starts_with("/t.conf:2: invalid value"), "{bad}: {e}");
            assert!(c.check_delivery().is_ok(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = CrashLoopState::parse(&bytes);
            let mut with_header = HEADER.as_bytes().to_vec();
            with_header.push(b'\n');
            with_header.extend_from_slice(&bytes);
            let _ = CrashLoopState::parse(&with_header);
        }
    }
}
