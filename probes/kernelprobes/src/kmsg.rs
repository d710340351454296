//! klogscanner: kernel oopses from `/dev/kmsg`.
//!
//! `/dev/kmsg` is read non-destructively (unlike the C client's `klogctl(SYSLOG_ACTION_READ)`,
//! which consumed the log other readers wanted), one structured record per `read`:
//!
//! ```text
//! <prio>,<seq>,<usec>,<flags>[,...];<text>\n
//!  KEY=value\n                                  (optional dictionary lines)
//! ```
//!
//! Only kernel records (facility 0) are scanned, so a process writing to `/dev/kmsg` cannot
//! fake an oops. `\x0a` escapes in the text are line breaks of one multi-line message. When
//! the kernel overwrites records before they are read, `read` fails with `EPIPE`: the scan
//! goes on with the oldest record still available, and an oops cut by the gap is reported
//! with what was collected.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::ProbeError;
use crate::lines::LineAssembler;
use crate::oops::{Oops, OopsParser, PayloadOptions};

/// Read buffer: larger than any kmsg record (the kernel refuses shorter reads with EINVAL).
const READ_BUF: usize = 16 * 1024;
/// A kmsg line (header, text and escapes) is bounded well below this.
const MAX_RECORD_LINE: usize = 16 * 1024;
/// An oops still open after this long without a new kernel line is reported as it is.
pub const IDLE_FLUSH: Duration = Duration::from_secs(5);

/// One `/dev/kmsg` record header and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    pub facility: u32,
    pub level: u8,
    pub seq: u64,
    pub text: &'a [u8],
}

/// Parse one line of `/dev/kmsg` output. Dictionary lines (starting with a space) and
/// malformed lines give `None`.
pub fn parse_record(line: &[u8]) -> Option<KmsgRecord<'_>> {
    if line.first() == Some(&b' ') {
        return None;
    }
    let semi = line.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&line[..semi]).ok()?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    Some(KmsgRecord {
        facility: prio >> 3,
        level: (prio & 7) as u8,
        seq,
        text: &line[semi + 1..],
    })
}

/// The lines of a record's text: split at the `\x0a` escapes the kernel writes for
/// embedded newlines.
pub fn text_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.windows(4).position(|w| w == b"\\x0a") {
            Some(i) => {
                rest = Some(&t[i + 4..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Feeds kmsg output (any chunking) to the oops parser.
#[derive(Debug)]
pub struct KmsgScanner {
    lines: LineAssembler,
    parser: OopsParser,
}

impl Default for KmsgScanner {
    fn default() -> Self {
        KmsgScanner::new()
    }
}

impl KmsgScanner {
    pub fn new() -> KmsgScanner {
        KmsgScanner {
            lines: LineAssembler::new(MAX_RECORD_LINE),
            parser: OopsParser::new(),
        }
    }

    /// Feed bytes read from kmsg; returns the oopses they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Oops> {
        let mut done = Vec::new();
        let parser = &mut self.parser;
        self.lines.push(chunk, &mut |line| {
            let Some(rec) = parse_record(line) else {
                return;
            };
            if rec.facility != 0 {
                return;
            }
            for text in text_lines(rec.text) {
                done.extend(parser.push_message(text));
            }
        });
        done
    }

    pub fn is_collecting(&self) -> bool {
        self.parser.is_collecting()
    }

    /// Report the oops being collected (end of input, a gap, or a quiet log), after any
    /// completed by a last line that had no `\n`.
    pub fn flush(&mut self) -> Vec<Oops> {
        let mut done = Vec::new();
        let parser = &mut self.parser;
        self.lines.finish(&mut |line| {
            if let Some(rec) = parse_record(line).filter(|r| r.facility == 0) {
                for text in text_lines(rec.text) {
                    done.extend(parser.push_message(text));
                }
            }
        });
        done.extend(self.parser.finish());
        done
    }
}

/// Why klogscanner should not run here: the container manager's name, detected as systemd
/// does (`/run/systemd/container`, `/run/host/container-manager`, `container=` in PID 1's
/// environment, `/.dockerenv`, `/run/.containerenv`, OpenVZ), under the host root.
pub fn detect_container(paths: &libtelemetry::Paths) -> Option<String> {
    let read = |rel: &str| std::fs::read(paths.under_host(rel)).ok();
    let exists = |rel: &str| std::fs::symlink_metadata(paths.under_host(rel)).is_ok();
    for rel in ["/run/systemd/container", "/run/host/container-manager"] {
        if let Some(bytes) = read(rel) {
            let name = String::from_utf8_lossy(&bytes).trim().to_string();
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
    if let Some(environ) = read("/proc/1/environ") {
        for var in environ.split(|&b| b == 0) {
            if let Some(v) = var.strip_prefix(b"container=") {
                if !v.is_empty() {
                    return Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
    if exists("/.dockerenv") {
        return Some("docker".into());
    }
    if exists("/run/.containerenv") {
        return Some("podman".into());
    }
    if exists("/proc/vz") && !exists("/proc/bc") {
        return Some("openvz".into());
    }
    None
}

/// Open the kernel log for non-blocking reads, positioned at its end unless `from_start`.
pub fn open_kmsg(path: &Path, from_start: bool) -> Result<File, ProbeError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| ProbeError::io(path, e))?;
    if !from_start {
        // On /dev/kmsg SEEK_END means "after the newest record": only new oopses count.
        (&file)
            .seek(SeekFrom::End(0))
            .map_err(|e| ProbeError::io(path, e))?;
    }
    Ok(file)
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanSummary {
    pub oopses: usize,
    pub delivered: usize,
    /// Times records were lost to overruns (`EPIPE`).
    pub overruns: usize,
}

/// Read `file` (non-blocking) until it ends (a regular file; `/dev/kmsg` never ends) and
/// hand every oops to `report`. An oops open for [`IDLE_FLUSH`] without a new line is reported as it is.
pub fn scan<R: Read + AsFd>(
    file: &mut R,
    path: &Path,
    idle_flush: Duration,
    mut report: impl FnMut(&Oops) -> bool,
) -> Result<ScanSummary, ProbeError> {
    let mut scanner = KmsgScanner::new();
    let mut summary = ScanSummary::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut handle = |oops: &Oops, summary: &mut ScanSummary| {
        summary.oopses += 1;
        if report(oops) {
            summary.delivered += 1;
        }
    };
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                for oops in scanner.push(&buf[..n]) {
                    handle(&oops, &mut summary);
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EPIPE) => {
                    summary.overruns += 1;
                    tracing::warn!("kernel log overrun: some records were lost");
                    for oops in scanner.flush() {
                        handle(&oops, &mut summary);
                    }
                }
                Some(libc::EAGAIN) => {
                    let timeout = if scanner.is_collecting() {
                        PollTimeout::try_from(idle_flush).unwrap_or(PollTimeout::MAX)
                    } else {
                        PollTimeout::NONE
                    };
                    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, timeout) {
                        Ok(0) => {
                            for oops in scanner.flush() {
                                handle(&oops, &mut summary);
                            }
                        }
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(errno) => return Err(ProbeError::io(path, io::Error::from(errno))),
                    }
                }
                _ => return Err(ProbeError::io(path, e)),
            },
        }
    }
    for oops in scanner.flush() {
        handle(&oops, &mut summary);
    }
    Ok(summary)
}

/// `/dev/kmsg` under the host root.
pub fn kmsg_path(paths: &libtelemetry::Paths) -> PathBuf {
    paths.dev_dir().join("kmsg")
}

/// The payload options for a host (register values only without privacy filters).
pub fn payload_options(privacy_filters_disabled: bool) -> PayloadOptions {
    PayloadOptions {
        register_values: privacy_filters_disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_headers() {
        let r = parse_record(b"4,1234,5678,-;WARNING: x").unwrap();
        assert_eq!((r.facility, r.level, r.seq), (0, 4, 1234));
        assert_eq!(r.text, b"WARNING: x");
        let r = parse_record(b"30,7,1,-,caller=T1;systemd[1]: hi").unwrap();
        assert_eq!((r.facility, r.level), (3, 6));
        assert!(parse_record(b" SUBSYSTEM=pci").is_none());
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"x,1,2,-;t").is_none());
    }

    #[test]
    fn escaped_newlines_split_a_message() {
        let got: Vec<&[u8]> = text_lines(b"a\\x0ab\\x09c\\x0a").collect();
        assert_eq!(got, vec![&b"a"[..], &b"b\\x09c"[..], &b""[..]]);
    }

    #[test]
    fn user_records_cannot_open_an_oops() {
        let mut s = KmsgScanner::new();
        assert!(s.push(b"12,1,0,-;WARNING: fake\n").is_empty());
        assert!(!s.is_collecting());
        s.push(b"4,2,0,-;WARNING: real\n4,3,0,-;---[ end trace 1 ]---\n");
        assert!(!s.is_collecting());
    }

    #[test]
    fn records_split_across_reads() {
        let mut s = KmsgScanner::new();
        let mut all = Vec::new();
        for chunk in [
            &b"4,1,0,-;WARN"[..],
            b"ING: a\n4,2,0,-;x\n",
            b"4,3,0,-;---[ end ",
            b"trace ]---\n",
        ] {
            all.extend(s.push(chunk));
        }
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].reason(), "WARNING: a");
        assert_eq!(all[0].lines, vec!["WARNING: a", "x"]);
    }

    #[test]
    fn quiet_log_flushes_an_open_oops() {
        use std::io::Write;
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        use std::os::fd::AsRawFd;
        nix::fcntl::fcntl(
            read_end.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut reader = File::from(read_end);
        let mut writer = File::from(write_end);
        let feeder = std::thread::spawn(move || {
            writer
                .write_all(b"4,1,0,-;WARNING: quiet\n4,2,0,-;Call Trace:\n")
                .unwrap();
            // Longer than the idle bound: the oops must be reported before EOF.
            std::thread::sleep(Duration::from_millis(400));
            writer.write_all(b"6,3,0,-;later\n").unwrap();
        });
        let mut reported = Vec::new();
        let started = std::time::Instant::now();
        let summary = scan(
            &mut reader,
            Path::new("pipe"),
            Duration::from_millis(50),
            |o| {
                reported.push((o.reason().to_string(), started.elapsed()));
                true
            },
        )
        .unwrap();
        feeder.join().unwrap();
        assert_eq!(summary.oopses, 1);
        assert_eq!(reported[0].0, "WARNING: quiet");
        assert!(
            reported[0].1 < Duration::from_millis(390),
            "{:?}",
            reported[0].1
        );
    }

    /// A kernel log that loses records between two reads.
    struct Overrun {
        chunks: Vec<io::Result<Vec<u8>>>,
        fd: File,
    }

    impl Read for Overrun {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.chunks.is_empty() {
                return Ok(0);
            }
            let chunk = self.chunks.remove(0)?;
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    impl AsFd for Overrun {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    #[test]
    fn overrun_reports_the_cut_oops_and_goes_on() {
        let mut log = Overrun {
            chunks: vec![
                Ok(b"4,1,0,-;BUG: before the gap\n".to_vec()),
                Ok(b"4,2,0,-;Call Trace:\n".to_vec()),
                Err(io::Error::from_raw_os_error(libc::EPIPE)),
                Ok(b"4,9,0,-;WARNING: after the gap\n".to_vec()),
                Err(io::Error::from_raw_os_error(libc::EINTR)),
                Ok(b"4,10,0,-;---[ end trace 0 ]---\n".to_vec()),
            ],
            fd: File::open("/dev/null").unwrap(),
        };
        let mut reasons = Vec::new();
        let summary = scan(&mut log, Path::new("kmsg"), IDLE_FLUSH, |o| {
            reasons.push(o.lines.clone());
            false
        })
        .unwrap();
        assert_eq!(
            reasons,
            vec![
                vec!["BUG: before the gap".to_string(), "Call Trace:".to_string()],
                vec!["WARNING: after the gap".to_string()],
            ]
        );
        assert_eq!(
            summary,
            ScanSummary {
                oopses: 2,
                delivered: 0,
                overruns: 1
            }
        );
    }

    #[test]
    fn read_errors_end_the_scan() {
        let mut log = Overrun {
            chunks: vec![Err(io::Error::from_raw_os_error(libc::EINVAL))],
            fd: File::open("/dev/null").unwrap(),
        };
        assert!(scan(&mut log, Path::new("kmsg"), IDLE_FLUSH, |_| true).is_err());
    }
}
