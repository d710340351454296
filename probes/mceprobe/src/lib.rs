//! mceprobe: machine-check records → `org.clearlinux/mce/<class>` telemetry records, read
//! natively from the kernel (no mcelog).
//!
//! * [`device`]: `/dev/mcelog` (record length from `MCE_GET_RECORD_LEN`, poll, overflow
//!   from `MCE_GETCLEAR_FLAGS`), also used for `--from-file` replays;
//! * [`tracefs`]: the `mce:mce_record` tracepoint through a private tracefs instance, when
//!   `/dev/mcelog` is absent;
//! * [`mce`]: `struct mce` and the class/severity of the mcelog telemetry patch;
//! * [`decode`]: mcelog's text layout, the payload the backend's MCE view parses;
//! * [`deliver`]: records to telemprobd through libtelemetry.

pub mod cli;
pub mod decode;
pub mod device;
pub mod mce;
pub mod tracefs;

pub use probe_support::{deliver, log, shutdown};

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libtelemetry::record::Record;
use libtelemetry::Paths;
use thiserror::Error;

use crate::cli::{Cli, SourceKind};
use crate::decode::CpuDecode;
use crate::deliver::{Outcome, Retry, Sender};
use crate::device::{DeviceError, McelogReader};
use crate::mce::Mce;
use crate::shutdown::{poll_readable, Shutdown};
use crate::tracefs::{EventFormat, Instance, PageLayout, TraceError};

/// Classification prefix of every record.
pub const CLASS_PREFIX: &str = "org.clearlinux/mce/";
/// `payload_format_version` (the patch created records with version 1).
pub const PAYLOAD_VERSION: u32 = 1;
/// Undelivered records kept for retry in follow mode; the oldest is dropped beyond this.
pub const MAX_PENDING: usize = 256;
/// Delivery attempts per record in one-shot modes.
pub const ONESHOT_ATTEMPTS: u32 = 3;
/// Pages read from one CPU's buffer per wake-up (bounds the work of one cycle).
const MAX_PAGES_PER_CYCLE: usize = 256;

/// Documented exit codes (see mceprobe(1)): the probes' common ones, where `FAILURE`
/// means reading the source failed and `UNDELIVERED` that a one-shot run or replay could
/// not deliver some records; and this probe's own.
pub mod exit {
    pub use probe_support::exit::*;
    /// Neither `/dev/mcelog` nor a usable tracefs exists.
    pub const NO_SOURCE: u8 = 5;
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] libtelemetry::ConfigError),
    #[error("no machine-check source: {0}")]
    NoSource(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} record(s) could not be delivered")]
    Undelivered(usize),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::NoSource(_) => exit::NO_SOURCE,
            Error::Undelivered(_) => exit::UNDELIVERED,
            Error::Device(_) | Error::Trace(_) | Error::Io { .. } => exit::FAILURE,
        }
    }
}

/// What a run did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records_read: usize,
    pub delivered: usize,
    pub not_opted_in: usize,
    pub dropped: usize,
    pub overflows: usize,
    pub missed_trace_events: usize,
}

/// Records read in one go, with the loss indications of their source.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Mce>,
    pub overflow: bool,
    pub missed_events: bool,
    pub bytes: usize,
}

/// A source of machine-check records.
pub enum Source {
    Mcelog(McelogReader),
    Tracefs(TraceSource),
}

impl Source {
    /// Choose and open the source `cli` asks for.
    pub fn open(cli: &Cli, paths: &Paths) -> Result<Source, Error> {
        let device = cli
            .device
            .clone()
            .unwrap_or_else(|| paths.dev_dir().join("mcelog"));
        let use_device = match cli.source {
            SourceKind::Mcelog => true,
            SourceKind::Tracefs => false,
            SourceKind::Auto => device.exists(),
        };
        if use_device {
            return Ok(Source::Mcelog(McelogReader::open(&device, cli.record_len)?));
        }
        let tracefs = match tracefs::find_tracefs(&paths.sys_dir(), cli.tracefs.as_deref()) {
            Ok(t) => t,
            Err(TraceError::NoTracefs(tried)) if cli.source == SourceKind::Auto => {
                return Err(Error::NoSource(format!(
                    "{} does not exist and no tracefs was found (tried {tried})",
                    device.display()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Source::Tracefs(TraceSource::open(&tracefs, &cli.instance)?))
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Mcelog(r) => format!(
                "mcelog device (record length {}, log length {}{})",
                r.record_len(),
                r.log_len(),
                if r.is_device() {
                    ""
                } else {
                    ", not the kernel device"
                }
            ),
            Source::Tracefs(t) => format!("tracefs instance {}", t.instance.dir().display()),
        }
    }

    fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Source::Mcelog(r) => vec![r.fd()],
            Source::Tracefs(t) => t.pipes.iter().map(|p| p.file.as_fd()).collect(),
        }
    }

    /// Everything readable now, without blocking.
    pub fn read(&mut self) -> Result<Batch, Error> {
        match self {
            Source::Mcelog(r) => {
                let mut out = Batch::default();
                // The device hands out every pending record per read; a replay file needs
                // several reads. Bound the loop so one cycle stays short.
                for _ in 0..64 {
                    let b = r.read_batch()?;
                    if b.bytes == 0 {
                        break;
                    }
                    out.bytes += b.bytes;
                    out.overflow |= b.overflow;
                    out.records.extend(b.records);
                    if r.is_device() {
                        break;
                    }
                }
                Ok(out)
            }
            Source::Tracefs(t) => t.read(),
        }
    }

    /// Disable and remove the tracefs instance (no-op for the device).
    pub fn close(&mut self) {
        if let Source::Tracefs(t) = self {
            t.close();
        }
    }
}

/// One CPU's `trace_pipe_raw`, with a partial page carried between reads.
struct CpuPipe {
    cpu: u32,
    path: PathBuf,
    file: File,
    carry: Vec<u8>,
}

/// The tracepoint source: instance, event layout and per-CPU pipes.
pub struct TraceSource {
    instance: Instance,
    format: EventFormat,
    layout: PageLayout,
    page_size: usize,
    pipes: Vec<CpuPipe>,
}

impl TraceSource {
    pub fn open(tracefs: &Path, name: &str) -> Result<TraceSource, Error> {
        let mut instance = Instance::create(tracefs, name)?;
        let format = instance.format()?;
        let layout = instance.page_layout();
        instance.enable()?;
        let mut pipes = Vec::new();
        for (cpu, path) in instance.cpu_pipes()? {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            pipes.push(CpuPipe {
                cpu,
                path,
                file,
                carry: Vec::new(),
            });
        }
        Ok(TraceSource {
            instance,
            format,
            layout,
            page_size: page_size(),
            pipes,
        })
    }

    pub fn instance_dir(&self) -> &Path {
        self.instance.dir()
    }

    /// Close the per-CPU pipes, then disable the event and remove the instance. The order
    /// matters: every open `trace_pipe_raw` holds a reference on the instance, and the
    /// kernel refuses to remove an instance that is still referenced (`EBUSY`).
    pub fn close(&mut self) {
        self.pipes.clear();
        self.instance.close();
    }

    fn read(&mut self) -> Result<Batch, Error> {
        let mut out = Batch::default();
        let mut page = vec![0u8; self.page_size];
        for pipe in &mut self.pipes {
            for _ in 0..MAX_PAGES_PER_CYCLE {
                let n = match pipe.file.read(&mut page) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(source) => {
                        return Err(Error::Io {
                            path: pipe.path.clone(),
                            source,
                        })
                    }
                };
                if n == 0 {
                    break;
                }
                out.bytes += n;
                pipe.carry.extend_from_slice(&page[..n]);
                // The kernel returns whole pages; a replay file may deliver them in parts.
                while pipe.carry.len() >= self.page_size {
                    let rest = pipe.carry.split_off(self.page_size);
                    let full = std::mem::replace(&mut pipe.carry, rest);
                    let events = tracefs::parse_page(&full, &self.layout);
                    if events.malformed {
                        tracing::warn!("cpu{}: malformed ring-buffer page", pipe.cpu);
                    }
                    out.missed_events |= events.missed_events;
                    out.records
                        .extend(events.events.iter().filter_map(|e| self.format.to_mce(e)));
                }
            }
        }
        Ok(out)
    }
}

impl Drop for TraceSource {
    fn drop(&mut self) {
        // Fields drop in declaration order (the instance before the pipes); close the
        // pipes first, as above.
        self.close();
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Where records go: telemprobd, or stdout with `--dry-run`.
pub enum Output {
    Daemon(Box<Sender>),
    Print,
}

/// The probe: turns batches into records and delivers them, keeping undelivered ones.
pub struct Probe {
    output: Output,
    host_is_intel: bool,
    /// Records waiting for a retry (follow mode).
    pending: VecDeque<Record>,
    pub summary: Summary,
}

impl Probe {
    pub fn new(output: Output, paths: &Paths) -> Probe {
        let cpuinfo = libtelemetry::hostinfo::read_host_file(&paths.cpuinfo_file(), false)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Probe {
            output,
            host_is_intel: decode::cpuinfo_is_intel(&cpuinfo),
            pending: VecDeque::new(),
            summary: Summary::default(),
        }
    }

    /// The `(classification, severity, payload)` of record `index` of a batch.
    pub fn describe(&self, m: &Mce, index: usize) -> (String, u32, String) {
        let mut m = m.clone();
        // mcelog's mce_prepare(): a record without wall time gets the current time.
        if m.time == 0 {
            m.time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        }
        let c = m.classify();
        let payload =
            decode::payload_text(&m, index, CpuDecode::for_record(&m, self.host_is_intel));
        (format!("{CLASS_PREFIX}{}", c.class), c.severity, payload)
    }

    /// Turn a batch into records and try to deliver them (and older pending ones).
    /// `attempts_left` is how often a failing record is retried right away (one-shot).
    pub fn handle(&mut self, batch: &Batch, shutdown: &Shutdown, once: bool) {
        if batch.overflow {
            self.summary.overflows += 1;
            tracing::warn!("the kernel's machine-check log overflowed: records were lost");
        }
        if batch.missed_events {
            self.summary.missed_trace_events += 1;
            tracing::warn!("the trace buffer overran: machine-check events were lost");
        }
        for (i, m) in batch.records.iter().enumerate() {
            self.summary.records_read += 1;
            let (class, severity, payload) = self.describe(m, i);
            tracing::info!(
                "machine check on CPU {} bank {}: {class} (severity {severity})",
                m.cpu_number(),
                m.bank
            );
            match &self.output {
                Output::Print => {
                    println!("classification: {class}\nseverity: {severity}\n\n{payload}\n");
                    self.summary.delivered += 1;
                }
                Output::Daemon(sender) => {
                    match sender.build(severity, &class, PAYLOAD_VERSION, payload.as_bytes()) {
                        Ok(r) => self.pending.push_back(r),
                        Err(e) => {
                            self.summary.dropped += 1;
                            tracing::error!("cannot build record: {e}");
                        }
                    }
                }
            }
        }
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
            self.summary.dropped += 1;
            tracing::error!("too many undelivered records: dropped the oldest");
        }
        self.flush(shutdown, once);
    }

    /// Deliver pending records in order; stop at the first transient failure (one-shot:
    /// retry it a few times first).
    pub fn flush(&mut self, shutdown: &Shutdown, once: bool) {
        let Output::Daemon(sender) = &self.output else {
            return;
        };
        let mut retry = Retry::for_run(once, ONESHOT_ATTEMPTS);
        while let Some(record) = self.pending.front() {
            match sender.send_retrying(record, shutdown, &mut retry) {
                Ok(Outcome::Accepted) => {
                    self.summary.delivered += 1;
                    self.pending.pop_front();
                }
                Ok(Outcome::NotOptedIn) => {
                    tracing::debug!("not opted in: record dropped");
                    self.summary.not_opted_in += 1;
                    self.pending.pop_front();
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(
                        "cannot deliver to {}: {e} ({} record(s) pending)",
                        sender.socket_path().display(),
                        self.pending.len()
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!("record rejected, dropped: {e}");
                    self.summary.dropped += 1;
                    self.pending.pop_front();
                }
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Run the probe as `cli` says until done (one-shot) or until `shutdown`.
pub fn run(cli: &Cli, paths: &Paths, shutdown: &Shutdown) -> Result<Summary, Error> {
    let output = if cli.dry_run {
        Output::Print
    } else {
        Output::Daemon(Box::new(Sender::new(
            paths,
            cli.config.config_file.as_deref(),
        )?))
    };
    let mut probe = Probe::new(output, paths);
    if let Some(file) = &cli.from_file {
        let mut source = Source::Mcelog(McelogReader::open(file, cli.record_len)?);
        return finish_once(&mut probe, &mut source, shutdown);
    }
    let mut source = Source::open(cli, paths)?;
    tracing::info!("reading machine checks from the {}", source.describe());
    let result = if cli.once {
        finish_once(&mut probe, &mut source, shutdown)
    } else {
        follow(&mut probe, &mut source, shutdown, cli.poll_interval).map(|()| probe.summary.clone())
    };
    source.close();
    result
}

fn finish_once(
    probe: &mut Probe,
    source: &mut Source,
    shutdown: &Shutdown,
) -> Result<Summary, Error> {
    loop {
        let batch = source.read()?;
        if batch.bytes == 0 {
            break;
        }
        probe.handle(&batch, shutdown, true);
        if shutdown.requested() {
            break;
        }
    }
    if let Source::Mcelog(r) = source {
        if r.partial_bytes() > 0 {
            tracing::warn!(
                "ignored {} trailing bytes: not a whole record of {} bytes",
                r.partial_bytes(),
                r.record_len()
            );
        }
    }
    source.close();
    if probe.pending() > 0 {
        return Err(Error::Undelivered(probe.pending()));
    }
    Ok(probe.summary.clone())
}

/// Follow mode: poll the source (and the shutdown fd), read, deliver, retry.
pub fn follow(
    probe: &mut Probe,
    source: &mut Source,
    shutdown: &Shutdown,
    poll_interval: Duration,
) -> Result<(), Error> {
    loop {
        let mut fds = source.fds();
        fds.push(shutdown.fd());
        let ready = poll_readable(&fds, Some(poll_interval)).map_err(|source| Error::Io {
            path: PathBuf::from("poll"),
            source,
        })?;
        drop(fds);
        if shutdown.requested() {
            return Ok(());
        }
        let batch = source.read()?;
        if batch.bytes > 0 {
            probe.handle(&batch, shutdown, false);
        } else {
            probe.flush(shutdown, false);
            // A readable source that had nothing (a regular file at its end, an old kernel
            // whose trace pipes poll as always ready): wait instead of spinning.
            let source_ready = ready.iter().rev().skip(1).any(|r| *r);
            if source_ready && shutdown.wait(poll_interval) {
                return Ok(());
            }
        }
    }
}
