//! swupdprobe: swupd's telemetry files → `org.clearlinux/swupd-client/<class>` records,
//! delivered in-process through libtelemetry.
//!
//! * [`name`]: the `<version>.<class>.<severity>.<random>` file names;
//! * [`Processor`]: one file → one record; the file is deleted only after telemprobd
//!   accepted the record, quarantined when invalid or after `max_tries` failed attempts
//!   ([`tries`] keeps the count across runs);
//! * [`drain`]: empty the directory and exit (started by `swupdprobe.path`), retrying while
//!   telemprobd is unreachable;
//! * [`watch`]: stay and react to `IN_MOVED_TO` / `IN_CLOSE_WRITE`.
//!
//! Delivery guarantee: at least once. A file is removed only after the daemon's
//! acknowledgement, so a crash (or `kill -9`) can at worst re-send the one file whose
//! acknowledgement arrived just before the crash; no file is ever lost.

pub mod cli;
pub mod name;
pub mod tries;

pub use probe_support::{deliver, log, shutdown};

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libtelemetry::client::{Ack, SendError};
use libtelemetry::record::MAX_PAYLOAD;
use libtelemetry::Paths;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use thiserror::Error;

use crate::cli::Cli;
use crate::deliver::{DeliverError, Outcome, Sender};
use crate::name::SwupdName;
use crate::shutdown::{poll_readable, Shutdown};
use crate::tries::Tries;

/// Name of the failure-count file in the drop directory (hidden: systemd's
/// `DirectoryNotEmpty=` and the probe both ignore dotfiles).
pub const TRIES_FILE_NAME: &str = ".swupdprobe-tries";
/// Most files kept in quarantine; beyond it a bad file is deleted (and logged).
pub const MAX_QUARANTINE: usize = 1000;
/// Most directory entries looked at in one pass (the rest wait for the next pass).
pub const MAX_ENTRIES_PER_PASS: usize = 10_000;

/// Documented exit codes (see swupdprobe(1)): the probes' common ones, where `FAILURE`
/// means the directory cannot be read or watched and `UNDELIVERED` that drain mode gave up
/// (`--retry-for`) with files still undelivered.
pub mod exit {
    pub use probe_support::exit::*;
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] libtelemetry::ConfigError),
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: the watched directory was removed or moved")]
    DirGone(PathBuf),
    #[error("{0} file(s) still undelivered; they stay for the next run")]
    Undelivered(usize),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Dir { .. } | Error::DirGone(_) => exit::FAILURE,
            Error::Undelivered(_) => exit::UNDELIVERED,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Accepted by telemprobd and deleted.
    Delivered,
    /// Moved to the quarantine directory (invalid, or failed too often).
    Quarantined(String),
    /// Delivery failed; counted, the file stays for a retry.
    Failed,
    /// Not ours to handle (dotfile, temporary or backup name).
    Ignored,
    /// The probe's own bookkeeping (the tries file, the quarantine directory).
    Own,
    /// Disappeared before it could be read.
    Gone,
    /// telemprobd is not reachable or is shedding load: not the file's fault, not counted.
    DaemonUnavailable,
    /// The host is not opted in: files stay untouched.
    NotOptedIn,
    /// `--dry-run`: printed, left in place.
    Printed,
}

/// Counts over a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub delivered: usize,
    pub quarantined: usize,
    pub failed: usize,
    pub passes: usize,
}

/// Result of one pass over the directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Files still to deliver (failed, or not reached because the daemon is unavailable).
    pub pending: usize,
    /// Entries ignored on purpose (dotfiles, temporary and backup names).
    pub ignored: usize,
    pub daemon_unavailable: bool,
    pub not_opted_in: bool,
}

/// Handles the files of one drop directory.
pub struct Processor {
    dir: PathBuf,
    quarantine: PathBuf,
    sender: Option<Sender>,
    tries: Tries,
    max_tries: u32,
    pub summary: Summary,
}

impl Processor {
    pub fn new(cli: &Cli, paths: &Paths) -> Result<Processor, Error> {
        let sender = if cli.dry_run {
            None
        } else {
            Some(Sender::new(paths, cli.config.config_file.as_deref())?)
        };
        let dir = cli.dir.clone().unwrap_or_else(|| paths.swupd_dir());
        let tries_path = cli
            .state_file
            .clone()
            .unwrap_or_else(|| dir.join(TRIES_FILE_NAME));
        Ok(Processor {
            quarantine: cli
                .quarantine_dir
                .clone()
                .unwrap_or_else(|| dir.join(libtelemetry::paths::QUARANTINE_DIR)),
            dir,
            sender,
            tries: Tries::load(&tries_path),
            max_tries: cli.max_tries,
            summary: Summary::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Handle one directory entry.
    pub fn process(&mut self, name: &str) -> FileOutcome {
        let outcome = self.process_inner(name);
        match &outcome {
            FileOutcome::Delivered => self.summary.delivered += 1,
            FileOutcome::Quarantined(_) => self.summary.quarantined += 1,
            FileOutcome::Failed => self.summary.failed += 1,
            _ => {}
        }
        self.tries.save();
        outcome
    }

    /// Is `name` (in the drop directory) the tries file or the quarantine directory?
    fn is_own(&self, name: &str) -> bool {
        [self.quarantine.as_path(), self.tries.path()]
            .iter()
            .any(|p| p.parent() == Some(self.dir.as_path()) && p.file_name() == Some(name.as_ref()))
    }

    fn process_inner(&mut self, name: &str) -> FileOutcome {
        if self.is_own(name) {
            return FileOutcome::Own;
        }
        if name::is_ignored(name) {
            return FileOutcome::Ignored;
        }
        let path = self.dir.join(name);
        let lmeta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return FileOutcome::Gone,
            Err(e) => return self.failed(name, &format!("cannot stat: {e}")),
        };
        if lmeta.is_dir() {
            return self.quarantine(name, "a directory");
        }
        let parsed = match SwupdName::parse(name) {
            Ok(n) => n,
            Err(e) => return self.quarantine(name, &format!("invalid name: {e}")),
        };
        if lmeta.file_type().is_symlink() {
            return self.quarantine(name, "symbolic links are refused");
        }
        if !lmeta.is_file() {
            return self.quarantine(name, "not a regular file");
        }
        // O_NOFOLLOW: a file swapped for a symlink after the lstat above is refused too.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return FileOutcome::Gone,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return self.quarantine(name, "symbolic links are refused")
            }
            Err(e) => return self.failed(name, &format!("cannot open: {e}")),
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return self.quarantine(name, "not a regular file"),
            Err(e) => return self.failed(name, &format!("cannot stat: {e}")),
        };
        let mut content = Vec::with_capacity(meta.len().min(MAX_PAYLOAD as u64 + 1) as usize);
        if let Err(e) = (&file)
            .take(MAX_PAYLOAD as u64 + 1)
            .read_to_end(&mut content)
        {
            return self.failed(name, &format!("cannot read: {e}"));
        }
        if content.len() > MAX_PAYLOAD {
            return self.quarantine(name, &format!("larger than {MAX_PAYLOAD} bytes"));
        }
        let classification = parsed.classification();
        let Some(sender) = &self.sender else {
            println!(
                "{name}\nclassification: {classification}\nseverity: {}\npayload_format_version: {}\n\n{}\n",
                parsed.severity,
                parsed.version,
                String::from_utf8_lossy(&content)
            );
            return FileOutcome::Printed;
        };
        let record = match sender.build(parsed.severity, &classification, parsed.version, &content)
        {
            Ok(r) => r,
            Err(e) => return self.quarantine(name, &format!("invalid content: {e}")),
        };
        match sender.send(&record) {
            Ok(Outcome::Accepted) => {
                self.remove_delivered(name, &path, meta.dev(), meta.ino());
                tracing::info!("delivered {name} as {classification}");
                FileOutcome::Delivered
            }
            Ok(Outcome::NotOptedIn)
            | Err(DeliverError::Send(SendError::Rejected(Ack::NotOptedIn))) => {
                FileOutcome::NotOptedIn
            }
            Err(DeliverError::Send(SendError::Connect { .. }))
            | Err(DeliverError::Send(SendError::Rejected(Ack::Overloaded))) => {
                FileOutcome::DaemonUnavailable
            }
            Err(e) if !e.is_transient() => self.quarantine(name, &format!("rejected: {e}")),
            Err(e) => self.failed(name, &e.to_string()),
        }
    }

    /// Delete a delivered file — the one that was read, not a newer file of the same name.
    fn remove_delivered(&mut self, name: &str, path: &Path, dev: u64, ino: u64) {
        self.tries.forget(name);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.dev() == dev && m.ino() == ino => {}
            _ => return,
        }
        if let Err(e) = std::fs::remove_file(path) {
            // It will be sent again on the next pass: a duplicate, never a loss.
            tracing::error!("delivered {name} but cannot delete it: {e}");
            return;
        }
        if let Err(e) = libtelemetry::fsutil::fsync_dir(&self.dir) {
            tracing::warn!("fsync {}: {e}", self.dir.display());
        }
    }

    fn failed(&mut self, name: &str, why: &str) -> FileOutcome {
        let n = self.tries.fail(name);
        if n >= self.max_tries {
            return self.quarantine(name, &format!("failed {n} times, last: {why}"));
        }
        tracing::warn!("{name}: attempt {n} of {} failed: {why}", self.max_tries);
        FileOutcome::Failed
    }

    /// Move `name` out of the drop directory into the quarantine directory.
    fn quarantine(&mut self, name: &str, reason: &str) -> FileOutcome {
        self.tries.forget(name);
        let src = self.dir.join(name);
        if self.sender.is_none() {
            println!("{name}: would be quarantined: {reason}\n");
            return FileOutcome::Printed;
        }
        let result = (|| -> io::Result<String> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.quarantine)?;
            let held = std::fs::read_dir(&self.quarantine)?
                .take(MAX_QUARANTINE)
                .count();
            if held >= MAX_QUARANTINE {
                std::fs::remove_file(&src)?;
                return Ok("deleted (quarantine full)".into());
            }
            let mut target = self.quarantine.join(name);
            let mut n = 1;
            while target.symlink_metadata().is_ok() && n < 1000 {
                target = self.quarantine.join(format!("{name}.{n}"));
                n += 1;
            }
            match std::fs::rename(&src, &target) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => move_across(&src, &target)?,
                Err(e) => return Err(e),
            }
            libtelemetry::fsutil::fsync_dir(&self.quarantine)?;
            libtelemetry::fsutil::fsync_dir(&self.dir)?;
            Ok(format!("moved to {}", target.display()))
        })();
        match result {
            Ok(what) => {
                tracing::warn!("quarantined {name}: {reason}; {what}");
                FileOutcome::Quarantined(reason.to_string())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileOutcome::Gone,
            Err(e) => {
                tracing::error!("cannot quarantine {name} ({reason}): {e}");
                FileOutcome::Failed
            }
        }
    }

    /// One pass over the directory, in name order. Stops early when the daemon is
    /// unavailable or the host is not opted in (the rest would fail the same way).
    pub fn pass(&mut self, shutdown: &Shutdown) -> Result<Pass, Error> {
        self.summary.passes += 1;
        let names = self.list()?;
        let mut pass = Pass::default();
        for (i, name) in names.iter().enumerate() {
            if shutdown.requested() {
                pass.pending += names.len() - i;
                break;
            }
            match self.process(name) {
                FileOutcome::Failed => pass.pending += 1,
                FileOutcome::Ignored => pass.ignored += 1,
                FileOutcome::DaemonUnavailable => {
                    pass.daemon_unavailable = true;
                    pass.pending += names.len() - i;
                    break;
                }
                FileOutcome::NotOptedIn => {
                    pass.not_opted_in = true;
                    pass.pending += names.len() - i;
                    break;
                }
                _ => {}
            }
        }
        let present: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        self.tries.retain(|n| present.contains(n));
        self.tries.save();
        Ok(pass)
    }

    /// Entry names of the drop directory, sorted, at most [`MAX_ENTRIES_PER_PASS`].
    fn list(&self) -> Result<Vec<String>, Error> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Dir {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| match e.file_name().into_string() {
                Ok(s) => Some(s),
                Err(raw) => {
                    tracing::warn!("ignoring non-UTF-8 name {raw:?}");
                    None
                }
            })
            .take(MAX_ENTRIES_PER_PASS)
            .collect();
        names.sort();
        Ok(names)
    }
}

/// `rename` across file systems: copy, fsync, then remove the source.
fn move_across(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_file() {
        let mut input = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(src)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)?;
        let mut buf = Vec::new();
        Read::by_ref(&mut input)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut buf)?;
        out.write_all(&buf)?;
        out.sync_all()?;
    }
    // Symlinks and special files are not copied: only their removal matters.
    std::fs::remove_file(src)
}

/// Drain mode: pass over the directory until nothing deliverable is left, retrying while
/// telemprobd is unavailable for at most `--retry-for`.
pub fn drain(cli: &Cli, proc: &mut Processor, shutdown: &Shutdown) -> Result<Summary, Error> {
    let deadline = Instant::now() + cli.retry_for;
    let mut backoff = Duration::from_secs(1).min(cli.retry_interval);
    let mut settled = false;
    loop {
        let pass = proc.pass(shutdown)?;
        if shutdown.requested() {
            return Ok(proc.summary.clone());
        }
        if pass.not_opted_in {
            tracing::info!("not opted in: {} file(s) left in place", pass.pending);
            return Ok(proc.summary.clone());
        }
        if pass.pending == 0 {
            // Only ignored entries are left (not counting the probe's own tries file and
            // quarantine directory): a writer may be about to rename its temporary file
            // into place. Look once more after a short while.
            if pass.ignored > 0 && !settled {
                settled = true;
                if shutdown.wait(cli.settle) {
                    return Ok(proc.summary.clone());
                }
                continue;
            }
            return Ok(proc.summary.clone());
        }
        if Instant::now() + backoff > deadline {
            return Err(Error::Undelivered(pass.pending));
        }
        if pass.daemon_unavailable {
            tracing::info!("telemprobd unavailable; retrying in {backoff:?}");
        }
        if shutdown.wait(backoff) {
            return Ok(proc.summary.clone());
        }
        backoff = (backoff * 2).min(cli.retry_interval);
    }
}

/// Watch mode: an initial pass, then one file per `IN_MOVED_TO` / `IN_CLOSE_WRITE`, and a
/// full pass every `--retry-interval` while files are pending (and after an event-queue
/// overflow).
pub fn watch(cli: &Cli, proc: &mut Processor, shutdown: &Shutdown) -> Result<Summary, Error> {
    let dir = proc.dir().to_path_buf();
    let dir_err = |source: io::Error| Error::Dir {
        path: dir.clone(),
        source,
    };
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| dir_err(e.into()))?;
    // The watch exists before the first scan, so no file can slip between the two.
    inotify
        .add_watch(
            proc.dir(),
            AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )
        .map_err(|e| dir_err(e.into()))?;
    tracing::info!("watching {}", proc.dir().display());
    let mut pending = proc.pass(shutdown)?.pending;
    let mut next_retry = Instant::now() + cli.retry_interval;
    loop {
        let timeout = if pending > 0 {
            next_retry.saturating_duration_since(Instant::now())
        } else {
            cli.retry_interval
        };
        let ready =
            poll_readable(&[inotify.as_fd(), shutdown.fd()], Some(timeout)).map_err(dir_err)?;
        if shutdown.requested() {
            return Ok(proc.summary.clone());
        }
        let mut full_pass = false;
        if ready[0] {
            let events = match inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => Vec::new(),
                Err(e) => return Err(dir_err(e.into())),
            };
            for ev in events {
                if ev.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                ) {
                    return Err(Error::DirGone(proc.dir().to_path_buf()));
                }
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    full_pass = true;
                    continue;
                }
                let Some(name) = ev.name.and_then(|n| n.into_string().ok()) else {
                    continue;
                };
                if shutdown.requested() {
                    return Ok(proc.summary.clone());
                }
                match proc.process(&name) {
                    FileOutcome::Failed
                    | FileOutcome::DaemonUnavailable
                    | FileOutcome::NotOptedIn => {
                        if pending == 0 {
                            next_retry = Instant::now() + cli.retry_interval;
                        }
                        pending += 1;
                    }
                    _ => {}
                }
            }
        }
        if full_pass || (pending > 0 && Instant::now() >= next_retry) {
            pending = proc.pass(shutdown)?.pending;
            next_retry = Instant::now() + cli.retry_interval;
        }
    }
}

/// Drain (default) or watch, as `cli` says.
pub fn run(cli: &Cli, paths: &Paths, shutdown: &Shutdown) -> Result<Summary, Error> {
    let mut proc = Processor::new(cli, paths)?;
    if cli.watch {
        watch(cli, &mut proc, shutdown)
    } else {
        drain(cli, &mut proc, shutdown)
    }
}
