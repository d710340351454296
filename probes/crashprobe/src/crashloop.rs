//! Crash-loop control: a program that crashes again and again (a service restarted every
//! second) sends at most `crash_loop_limit` records per crash signature and
//! `crash_loop_interval` seconds; the crashes past the limit are counted, not sent, and the
//! next record sent for that signature says how many were held back and since when.
//!
//! This module works on the finished payload text, so it does not depend on how frames are
//! unwound or named:
//!
//! * the **signature** is the `Process:` value and the (function, module) pairs of the
//!   first [`SIGNATURE_FRAMES`] frame lines (`#N function - [module] ...`) of the first
//!   backtrace, the crashing thread's, hashed with 64-bit FNV-1a. An inlined call is a frame
//!   line of its own, as the payload prints it; file:line and build-ids are not part of it,
//!   so a rebuild that moves lines keeps the signature. A payload without a `Process:` line
//!   (the privacy filters' short records) is never limited;
//! * the **window** starts at the first crash of a signature and lasts
//!   `crash_loop_interval` seconds (wall clock, so it survives restarts; a clock that went
//!   back starts a new window);
//! * the **note** is one line after the header lines, `Crash loop: suppressed <n> since
//!   <YYYY-MM-DDTHH:MM:SSZ>`, which the backend's crash parser ignores (it reads `Process:`,
//!   `PID:`, `Signal:`, `Backtrace (TID n):` and `#N ... - [module]` lines only).
//!
//! The counts live in libtelemetry's crash-loop state file (`libtelemetry::crashloop`),
//! read and replaced (temp → fsync → rename) under an `flock` on a lock file beside it, so
//! concurrent crashprobes count every crash. Nothing here may stop a crash from being
//! reported by mistake or hang a crash handler: the lock is waited for at most
//! [`LOCK_TIMEOUT`], and when the state cannot be locked, read or written the record is sent
//! as it is (a corrupt state file is replaced by a fresh one).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libtelemetry::crashloop::{read_state, utc_timestamp, CrashLoopState, ReadStateError};
use libtelemetry::record::MAX_PAYLOAD;
use libtelemetry::{Config, Paths};

use crate::payload::SIZE_MARKER;

/// Frames of the crashing thread that make a signature.
pub const SIGNATURE_FRAMES: usize = 5;
/// Longest wait for the state lock; past it the record is sent unlimited.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// The state and lock files: the telemetry user's, readable by its group (telemctl).
const STATE_FILE_MODE: u32 = 0o640;
/// Start of the note line.
pub const NOTE_PREFIX: &str = "Crash loop: suppressed ";

/// What identifies "the same crash".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub hash: u64,
    pub executable: String,
    /// (function, module) of the first frames, innermost first.
    pub frames: Vec<(String, String)>,
}

impl Signature {
    /// The signature of a crash payload; `None` without a `Process:` line.
    pub fn of_payload(payload: &str) -> Option<Signature> {
        let mut executable = None;
        let mut frames = Vec::new();
        let mut in_backtrace = false;
        for line in payload.lines() {
            if executable.is_none() {
                if let Some(p) = line.strip_prefix("Process: ") {
                    executable = Some(p.to_string());
                }
                continue;
            }
            if line.starts_with("Backtrace (TID ") {
                if in_backtrace {
                    break;
                }
                in_backtrace = true;
                continue;
            }
            if !in_backtrace {
                continue;
            }
            match frame_of_line(line) {
                Some(frame) => frames.push(frame),
                None => break,
            }
            if frames.len() == SIGNATURE_FRAMES {
                break;
            }
        }
        let executable = executable?;
        let mut hash = Fnv1a::new();
        hash.write(executable.as_bytes());
        for (function, module) in &frames {
            hash.write(function.as_bytes());
            hash.write(module.as_bytes());
        }
        Some(Signature {
            hash: hash.finish(),
            executable,
            frames,
        })
    }

    /// `function [module] < function [module] ...`, for display.
    pub fn frames_text(&self) -> String {
        let parts: Vec<String> = self
            .frames
            .iter()
            .map(|(f, m)| {
                if m.is_empty() {
                    f.clone()
                } else {
                    format!("{f} [{m}]")
                }
            })
            .collect();
        parts.join(" < ")
    }
}

/// `#N function - [module] ...` → (function, module); `#N (no symbols)` → (`(no symbols)`,
/// empty). Anything else is not a frame line.
fn frame_of_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = rest[digits..].strip_prefix(' ').filter(|_| digits > 0)?;
    match rest.find(" - [") {
        Some(at) => {
            let module = &rest[at + 4..];
            let module = &module[..module.find(']')?];
            Some((rest[..at].to_string(), module.to_string()))
        }
        None => Some((rest.to_string(), String::new())),
    }
}

/// 64-bit FNV-1a; each field is followed by a 0 byte so fields cannot run into each other.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(std::iter::once(&0)) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The configured limit; `None` when `crash_loop_limit` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub records: u32,
    pub interval: u64,
}

impl Limit {
    pub fn from_config(config: &Config) -> Option<Limit> {
        (config.crash_loop_limit > 0).then_some(Limit {
            records: config.crash_loop_limit,
            interval: config.crash_loop_interval.max(1),
        })
    }
}

/// Crashes held back before a record that is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBack {
    pub count: u64,
    /// When the first of them happened (seconds since the epoch).
    pub since: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the record; with the crashes held back since the last one, if any.
    Send(Option<HeldBack>),
    /// Over the limit: count it, send nothing.
    Suppress,
}

/// Count one crash of `signature` at `now` and decide whether its record goes out.
pub fn decide(
    state: &mut CrashLoopState,
    signature: &Signature,
    limit: Limit,
    now: u64,
) -> Verdict {
    let e = state.entry(
        signature.hash,
        &signature.executable,
        &signature.frames_text(),
        now,
    );
    if now < e.window_start || now - e.window_start >= limit.interval {
        e.window_start = now;
        e.sent_in_window = 0;
    }
    e.seen += 1;
    e.last_seen = e.last_seen.max(now);
    if e.sent_in_window < limit.records {
        e.sent_in_window += 1;
        let held_back = (e.held_back > 0).then(|| HeldBack {
            count: e.held_back,
            since: e.held_back_since.unwrap_or(now),
        });
        e.held_back = 0;
        e.held_back_since = None;
        Verdict::Send(held_back)
    } else {
        e.held_back += 1;
        e.held_back_since.get_or_insert(now);
        e.suppressed += 1;
        Verdict::Suppress
    }
}

/// A record [`decide`] let through at `decided_at` could not be sent: it and the crashes
/// its note carried are held back again, for the next record to report.
pub fn unsent(state: &mut CrashLoopState, hash: u64, held_back: Option<HeldBack>, decided_at: u64) {
    let Some(e) = state.entries.iter_mut().find(|e| e.signature == hash) else {
        return;
    };
    if e.window_start <= decided_at {
        e.sent_in_window = e.sent_in_window.saturating_sub(1);
    }
    let carried = held_back.map_or(0, |h| h.count);
    e.held_back += carried + 1;
    e.suppressed = (e.suppressed + 1).min(e.seen);
    e.held_back = e.held_back.min(e.suppressed);
    let since = held_back.map_or(decided_at, |h| h.since.min(decided_at));
    e.held_back_since = Some(e.held_back_since.map_or(since, |s| s.min(since)));
}

/// The note line for crashes held back.
pub fn note_line(held_back: HeldBack) -> String {
    format!(
        "{NOTE_PREFIX}{} since {}\n",
        held_back.count,
        utc_timestamp(held_back.since)
    )
}

/// `payload` with `note` as the last header line (before the blank line that opens the
/// backtraces), still at most [`MAX_PAYLOAD`] bytes: frame lines are dropped from the end
/// to make room, and [`SIZE_MARKER`] then ends the payload.
pub fn insert_note(payload: &str, note: &str) -> String {
    let at = payload.find("\n\n").map_or(payload.len(), |i| i + 1);
    let (head, tail) = payload.split_at(at);
    let mut tail = tail.to_string();
    if head.len() + note.len() + tail.len() > MAX_PAYLOAD {
        if let Some(t) = tail.strip_suffix(SIZE_MARKER) {
            tail.truncate(t.len());
        }
        let room = MAX_PAYLOAD.saturating_sub(head.len() + note.len() + SIZE_MARKER.len());
        while tail.len() > room {
            let keep = tail[..tail.len() - 1].rfind('\n').map_or(0, |i| i + 1);
            tail.truncate(keep);
        }
        tail.push_str(SIZE_MARKER);
    }
    let mut out = String::with_capacity(head.len() + note.len() + tail.len());
    out.push_str(head);
    out.push_str(note);
    out.push_str(&tail);
    out
}

/// What [`gate`] decided for one record.
#[derive(Debug)]
pub enum Gate {
    /// Not limited (limit 0, no signature, or the state was unavailable): send as it is.
    Open,
    /// Within the limit: send (the payload carries the note when crashes were held back);
    /// call [`Gate::finish`] with the outcome.
    Counted {
        hash: u64,
        held_back: Option<HeldBack>,
        decided_at: u64,
    },
    /// Over the limit: counted, not to be sent.
    Suppressed,
}

impl Gate {
    pub fn is_suppressed(&self) -> bool {
        matches!(self, Gate::Suppressed)
    }

    /// After the send: a record that did not go out is held back again.
    pub fn finish(self, paths: &Paths, sent: bool) {
        let Gate::Counted {
            hash,
            held_back,
            decided_at,
        } = self
        else {
            return;
        };
        if sent {
            return;
        }
        let _ = with_state(paths, |state| unsent(state, hash, held_back, decided_at));
    }
}

/// Count this crash and decide whether its record is sent; adds the note to `payload` when
/// crashes were held back.
pub fn gate(paths: &Paths, config: &Config, payload: &mut String) -> Gate {
    let Some(limit) = Limit::from_config(config) else {
        return Gate::Open;
    };
    let Some(signature) = Signature::of_payload(payload) else {
        return Gate::Open;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match with_state(paths, |state| decide(state, &signature, limit, now)) {
        Ok(Verdict::Suppress) => {
            say(&format!(
                "crash loop: {} crashed with the same backtrace more than {} times in {} s; \
                 record counted, not sent",
                signature.executable, limit.records, limit.interval
            ));
            Gate::Suppressed
        }
        Ok(Verdict::Send(held_back)) => {
            if let Some(h) = held_back {
                *payload = insert_note(payload, &note_line(h));
            }
            Gate::Counted {
                hash: signature.hash,
                held_back,
                decided_at: now,
            }
        }
        Err(e) => {
            say(&format!(
                "crash-loop state unavailable ({e}); record sent unlimited"
            ));
            Gate::Open
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StateError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {0} held by another crashprobe for {LOCK_TIMEOUT:?}")]
    Busy(std::path::PathBuf),
}

/// Run `f` on the state under the lock, then write the state back.
fn with_state<T>(paths: &Paths, f: impl FnOnce(&mut CrashLoopState) -> T) -> Result<T, StateError> {
    let _lock = lock(paths)?;
    let path = paths.crash_loop_file();
    let mut state = match read_state(&path) {
        Ok(s) => s,
        Err(ReadStateError::Invalid(e)) => {
            say(&format!("{}: {e}; starting afresh", path.display()));
            CrashLoopState::default()
        }
        Err(ReadStateError::Io(source)) => {
            return Err(StateError::Io {
                what: "read",
                path,
                source,
            })
        }
    };
    let out = f(&mut state);
    libtelemetry::fsutil::write_atomic(&path, state.encode().as_bytes(), STATE_FILE_MODE).map_err(
        |source| StateError::Io {
            what: "write",
            path: path.clone(),
            source,
        },
    )?;
    Ok(out)
}

/// The state lock: `flock` on the lock file, tried without blocking until [`LOCK_TIMEOUT`].
fn lock(paths: &Paths) -> Result<File, StateError> {
    let path = paths.crash_loop_lock_file();
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(STATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|source| StateError::Io {
            what: "open",
            path: path.clone(),
            source,
        })?;
    let start = Instant::now();
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK)
            && err.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(StateError::Io {
                what: "lock",
                path,
                source: err,
            });
        }
        if start.elapsed() >= LOCK_TIMEOUT {
            return Err(StateError::Busy(path));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "crashprobe: {msg}");
}

#[cfg(test)]
mod tests;
