//! `telem-record-gen`: the general-purpose command-line probe. Builds one record from its
//! options and sends it to telemprobd, prints it (`-o`), or both.
//!
//! Options, messages and exit codes are those of the C tool (getopt_long
//! `hc:Vs:c:p:P:R:e:onf:`): unknown options are reported and ignored; every validation,
//! creation or send failure exits 1 after one `Error: ...` line on stderr; a plain success
//! prints nothing. Differences, on purpose:
//! * `--config_file` (what the help always said) works as well as `--config-file`;
//! * a severity or record version beyond `u32` is an error (C silently truncated it, so
//!   `-s 4294967297` meant severity 1);
//! * `-o` with a payload the library refuses exits 1 with a message (C printed nothing and,
//!   with `-n`, exited 0);
//! * the record printed by `-o` is the one sent (C built a second record to send, with
//!   another event id and possibly another timestamp);
//! * bytes after a NUL in the payload are ignored, as the C tool's string handling did.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use libtelemetry::client::{send_record, SendError};
use libtelemetry::config::check_config_path;
use libtelemetry::getopt::{Getopt, LongOpt};
use libtelemetry::record::{MAX_CLASSIFICATION_LEN, MAX_PAYLOAD};
use libtelemetry::{Config, HostInfo, Paths, Record, RecordError};

/// Exit status of every failure.
pub const EXIT_FAILURE: u8 = 1;

/// Payloads are cut to this many bytes (the C tool's 8192-byte buffer, NUL included).
pub const PAYLOAD_LIMIT: usize = MAX_PAYLOAD - 1;
const EVENT_ID_LEN: usize = 32;
const EVENT_ID_ALPHABET: &str = "0123456789abcdef";
/// The C tool's classification segment limit (its counter lets the first segment have 41).
const MAX_SUBCAT_LENGTH: usize = 40;

const SHORT_OPTS: &str = "hc:Vs:c:p:P:R:e:onf:";
const LONG_OPTS: &[LongOpt] = &[
    LongOpt::flag("help", 'h'),
    LongOpt::flag("echo", 'o'),
    LongOpt::flag("no-post", 'n'),
    LongOpt::flag("version", 'V'),
    LongOpt::with_arg("severity", 's'),
    LongOpt::with_arg("class", 'c'),
    LongOpt::with_arg("payload", 'p'),
    LongOpt::with_arg("payload-file", 'P'),
    LongOpt::with_arg("record-version", 'R'),
    LongOpt::with_arg("event-id", 'e'),
    LongOpt::with_arg("config-file", 'f'),
    LongOpt::with_arg("config_file", 'f'),
];

pub const HELP: &str = "\
Usage:
  telem-record-gen [OPTIONS] - create and send a custom telemetry record

Help Options:
  -h, --help            Show help options

Application Options:
  -V, --version         Print the program version
  -s, --severity        Severity level (1-4) - (default 1)
  -c, --class           Classification level_1/level_2/level_3 (required)
  -p, --payload         Record body (max size = 8k) (required)
  -P, --payload-file    File to read payload from
  -R, --record-version  Version number for format of payload (default 1)
  -e, --event-id        Event id to use in the record
  -o, --echo            Echo record to stdout
  -n, --no-post         Do not post record just print
  -f, --config_file     Specify a configuration file other than default

";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub severity: u64,
    pub class: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub payload_file: Option<PathBuf>,
    pub payload_version: u32,
    pub event_id: Option<Vec<u8>>,
    pub echo: bool,
    pub no_post: bool,
    pub config_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            severity: 1,
            class: None,
            payload: None,
            payload_file: None,
            payload_version: 1,
            event_id: None,
            echo: false,
            no_post: false,
            config_file: None,
        }
    }
}

/// How parsing ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Options),
    /// Print this on stdout and exit 0 (`-h`, `-V`).
    Exit(String),
    /// Print this on stderr and exit 1.
    Fail(String),
}

#[derive(Debug, PartialEq, Eq)]
enum NumberError {
    Range,
    Junk,
}

/// `strtoul(s, &end, 10)` with the C tool's checks: leading white space and a sign are
/// allowed, nothing may follow the digits; an empty string is 0. Out of `u64` range (or
/// negative, which strtoul wraps) is a range error.
fn parse_c_unsigned(s: &[u8]) -> Result<u64, NumberError> {
    let s = match s.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) => &s[i..],
        None => return Ok(0),
    };
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        // No digits: strtoul leaves `end` at the start, so any text is junk.
        return if s.is_empty() {
            Ok(0)
        } else {
            Err(NumberError::Junk)
        };
    }
    if end != digits.len() {
        return Err(NumberError::Junk);
    }
    let mut v: u64 = 0;
    for &d in &digits[..end] {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(NumberError::Range)?;
    }
    if negative && v != 0 {
        return Err(NumberError::Range);
    }
    Ok(v)
}

const ERANGE_TEXT: &str = "Numerical result out of range";

/// Parse the command line (without the program name). `prog` prefixes getopt's messages,
/// which go to `diag` as they occur (unknown options do not stop the tool).
pub fn parse_args(prog: &str, args: Vec<OsString>, diag: &mut dyn Write) -> Parsed {
    let mut o = Options::default();
    for item in Getopt::new(args, SHORT_OPTS, LONG_OPTS) {
        let opt = match item {
            Ok(opt) => opt,
            Err(e) => {
                let _ = writeln!(diag, "{prog}: {e}");
                continue;
            }
        };
        let arg = opt.arg.unwrap_or_default();
        let bytes = arg.as_bytes();
        match opt.short {
            'h' => return Parsed::Exit(HELP.to_string()),
            'V' => return Parsed::Exit(format!("{}\n", libtelemetry::VERSION)),
            's' => match parse_c_unsigned(bytes) {
                Ok(v) => o.severity = v,
                Err(NumberError::Range) => {
                    return Parsed::Fail(format!(
                        "ERROR: Failed to convert severity number: {ERANGE_TEXT}\n"
                    ))
                }
                Err(NumberError::Junk) => {
                    return Parsed::Fail("Invalid severity number. Must be an integer\n".into())
                }
            },
            'R' => match parse_c_unsigned(bytes).map(u32::try_from) {
                Ok(Ok(v)) => o.payload_version = v,
                Ok(Err(_)) | Err(NumberError::Range) => {
                    return Parsed::Fail(format!(
                        "ERROR: Failed to convert record-version number: {ERANGE_TEXT}\n"
                    ))
                }
                Err(NumberError::Junk) => {
                    return Parsed::Fail(
                        "Invalid record-version number. Must be an integer\n".into(),
                    )
                }
            },
            'c' => o.class = Some(bytes.to_vec()),
            'p' => o.payload = Some(bytes.to_vec()),
            'P' => o.payload_file = Some(PathBuf::from(arg)),
            'e' => o.event_id = Some(bytes.to_vec()),
            'o' => o.echo = true,
            'n' => o.no_post = true,
            'f' => {
                let path = PathBuf::from(arg);
                if check_config_path(&path).is_err() {
                    return Parsed::Fail("Configuration file path not valid\n".into());
                }
                o.config_file = Some(path);
            }
            _ => {}
        }
    }
    Parsed::Run(o)
}

/// The C tool's checks, in its order and with its messages (without the trailing newline).
pub fn validate(o: &Options) -> Result<(), String> {
    let Some(class) = &o.class else {
        return Err("Error: Classification required. See --help.".into());
    };
    if class.is_empty() || class.len() > MAX_CLASSIFICATION_LEN {
        return Err(format!(
            "Error: Valid size for classification is 1-{MAX_CLASSIFICATION_LEN} chars"
        ));
    }
    if !class.is_ascii() {
        return Err("Error: Non-ascii characters detected in classification - aborting".into());
    }
    // The C counter starts at 0 for the first segment and at 1 after a '/', so the first
    // segment may hold one more character.
    let mut x = 0;
    for &b in class {
        if b == b'/' {
            x = 0;
        } else if x > MAX_SUBCAT_LENGTH {
            return Err(format!(
                "Error: Classification strings between slashes should have at most {MAX_SUBCAT_LENGTH} chars"
            ));
        }
        x += 1;
    }
    if class.iter().filter(|&&b| b == b'/').count() != 2 {
        return Err(
            "Error: Classification needs to be in most/to/least specific format, 2 '/' required."
                .into(),
        );
    }
    if !(1..=4).contains(&o.severity) {
        return Err("Error: Valid range for severity is 1-4".into());
    }
    if let Some(id) = &o.event_id {
        if id.len() != EVENT_ID_LEN {
            return Err(format!(
                "Error: event_id length {} it should have {EVENT_ID_LEN} characters",
                id.len()
            ));
        }
        if let Some(pos) = id
            .iter()
            .position(|b| !EVENT_ID_ALPHABET.as_bytes().contains(b))
        {
            return Err(format!(
                "Error: event_id contains invalid character '{}' at position {pos}, valid characters are {EVENT_ID_ALPHABET}",
                char::from(id[pos])
            ));
        }
    }
    Ok(())
}

/// Up to [`PAYLOAD_LIMIT`] bytes from `r`; with `drain`, the rest is read and discarded
/// (stdin, so a writer never sees EPIPE).
fn read_limited(r: &mut dyn Read, drain: bool) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(PAYLOAD_LIMIT);
    Read::take(&mut *r, PAYLOAD_LIMIT as u64).read_to_end(&mut buf)?;
    if drain && buf.len() == PAYLOAD_LIMIT {
        std::io::copy(r, &mut std::io::sink())?;
    }
    Ok(buf)
}

/// The payload from `-P`, `-p` or stdin (in that order of priority), cut to
/// [`PAYLOAD_LIMIT`] bytes and at the first NUL.
pub fn read_payload(o: &Options, stdin: &mut dyn Read) -> Result<Vec<u8>, String> {
    let mut payload = if let Some(file) = &o.payload_file {
        let mut f = std::fs::File::open(file).map_err(|_| {
            format!(
                "Error: file {} could not be opened for reading",
                file.display()
            )
        })?;
        read_limited(&mut f, false)
            .map_err(|e| format!("Error: reading {}: {e}", file.display()))?
    } else if let Some(p) = &o.payload {
        p[..p.len().min(PAYLOAD_LIMIT)].to_vec()
    } else {
        read_limited(stdin, true).map_err(|e| format!("Error: reading stdin: {e}"))?
    };
    if let Some(nul) = payload.iter().position(|&b| b == 0) {
        payload.truncate(nul);
    }
    Ok(payload)
}

/// Create the record as the C tool did: create, set the event id, set the payload.
pub fn build_record(o: &Options, payload: &[u8], paths: &Paths) -> Result<Record, RecordError> {
    let class = String::from_utf8_lossy(o.class.as_deref().unwrap_or_default()).into_owned();
    let severity = u32::try_from(o.severity).unwrap_or(u32::MAX);
    let mut record = Record::new(
        severity,
        &class,
        o.payload_version,
        &HostInfo::collect(paths),
    )?;
    if let Some(id) = &o.event_id {
        record.set_event_id(&String::from_utf8_lossy(id))?;
    }
    record.set_payload(payload)?;
    Ok(record)
}

/// The `-o` output: the 15 header lines, then the payload and a newline.
pub fn echo_text(record: &Record) -> Vec<u8> {
    let mut out = record.headers.block();
    out.extend_from_slice(&record.payload);
    out.push(b'\n');
    out
}

/// Send `record` with the configuration in effect (`-f` or the usual selection).
pub fn send(o: &Options, record: &Record, paths: &Paths) -> Result<(), String> {
    let (cfg, _) =
        Config::load(paths, o.config_file.as_deref()).map_err(|e| format!("Error: {e}"))?;
    let cfg_path = o
        .config_file
        .as_deref()
        .map(|p| p.to_string_lossy().into_owned());
    match send_record(paths, &cfg.socket_path, record, cfg_path.as_deref()) {
        Ok(_) => Ok(()),
        Err(SendError::NotOptedIn) => Err(
            "Unable to send record. Make sure to opt-in to telemetry first 'telemctl opt-in'"
                .into(),
        ),
        Err(e) => Err(format!(
            "Error: Failed to send record to daemon: {}",
            strerror(e.errno())
        )),
    }
}

/// strerror(3)'s text for `errno` (without Rust's " (os error N)" suffix).
fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The whole tool; returns the exit status.
pub fn run(
    args: Vec<OsString>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    let mut args = args.into_iter();
    let prog = args
        .next()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "telem-record-gen".into());
    let o = match parse_args(&prog, args.collect(), stderr) {
        Parsed::Run(o) => o,
        Parsed::Exit(text) => {
            let _ = stdout.write_all(text.as_bytes());
            return 0;
        }
        Parsed::Fail(text) => {
            let _ = stderr.write_all(text.as_bytes());
            return EXIT_FAILURE;
        }
    };
    let fail = |stderr: &mut dyn Write, msg: String| {
        let _ = writeln!(stderr, "{msg}");
        EXIT_FAILURE
    };
    if let Err(msg) = validate(&o) {
        return fail(stderr, msg);
    }
    let payload = match read_payload(&o, stdin) {
        Ok(p) => p,
        Err(msg) => return fail(stderr, msg),
    };
    let paths = Paths::from_env();
    let record = match build_record(&o, &payload, &paths) {
        Ok(r) => r,
        Err(e) => return fail(stderr, format!("Error: Failed to create record: {e}")),
    };
    if o.echo {
        let _ = stdout.write_all(&echo_text(&record));
        let _ = stdout.flush();
    }
    if !o.no_post {
        if let Err(msg) = send(&o, &record, &paths) {
            return fail(stderr, msg);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        let mut diag = Vec::new();
        match parse_args("trg", args.iter().map(OsString::from).collect(), &mut diag) {
            Parsed::Run(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn c_unsigned_numbers() {
        for (input, expected) in [
            ("4", Ok(4)),
            (" +3", Ok(3)),
            ("", Ok(0)),
            ("-0", Ok(0)),
            ("2x", Err(NumberError::Junk)),
            ("abc", Err(NumberError::Junk)),
            ("-1", Err(NumberError::Range)),
            ("99999999999999999999", Err(NumberError::Range)),
        ] {
            assert_eq!(parse_c_unsigned(input.as_bytes()), expected, "{input:?}");
        }
    }

    fn check(class: &str, expected: Result<(), &str>) {
        let mut o = opts(&[]);
        o.class = Some(class.as_bytes().to_vec());
        assert_eq!(validate(&o), expected.map_err(String::from), "{class:?}");
    }

    #[test]
    fn classification_messages() {
        check("a/b/c", Ok(()));
        check(&format!("{}/b/c", "a".repeat(41)), Ok(()));
        check(
            &format!("{}/b/c", "a".repeat(42)),
            Err("Error: Classification strings between slashes should have at most 40 chars"),
        );
        check(
            &format!("a/{}/c", "b".repeat(41)),
            Err("Error: Classification strings between slashes should have at most 40 chars"),
        );
        check(
            "a/b",
            Err("Error: Classification needs to be in most/to/least specific format, 2 '/' required."),
        );
        check(
            "",
            Err("Error: Valid size for classification is 1-122 chars"),
        );
        check(
            "a/\u{e9}/c",
            Err("Error: Non-ascii characters detected in classification - aborting"),
        );
    }

    #[test]
    fn option_forms() {
        let o = opts(&["-onca/b/c", "--sev=2", "-R", "7", "x", "--payload", "p"]);
        assert!(o.echo && o.no_post);
        assert_eq!(o.class.as_deref(), Some(&b"a/b/c"[..]));
        assert_eq!((o.severity, o.payload_version), (2, 7));
        assert_eq!(o.payload.as_deref(), Some(&b"p"[..]));
    }
}
