//! thermalprobe: CPU thermal throttling → `org.clearlinux/mce/thermal` telemetry records.
//!
//! Since Linux 4.11 thermal events are no longer logged as fake machine checks, so mcelog
//! cannot produce this class any more; the counters in
//! `/sys/devices/system/cpu/cpu*/thermal_throttle/` are polled instead ([`sysfs`]). An
//! increase of a core or package counter gives one record per package per poll interval
//! ([`poller`]); the counters last reported are kept with the boot id ([`state`]).

pub mod cli;
pub mod poller;
pub mod state;
pub mod sysfs;

pub use probe_support::{deliver, log, shutdown};

use std::path::PathBuf;
use std::time::Duration;

use libtelemetry::Paths;
use thiserror::Error;

use crate::cli::Cli;
use crate::deliver::{Outcome, Retry, Sender};
use crate::poller::PackageEvent;
use crate::shutdown::Shutdown;
use crate::state::State;

/// Classification of every record (the backend's Thermal view counts these).
pub const CLASSIFICATION: &str = "org.clearlinux/mce/thermal";
/// Severity of every record (as the mcelog patch gave corrected thermal events).
pub const SEVERITY: u32 = 2;
/// `payload_format_version` of the key=value payload.
pub const PAYLOAD_VERSION: u32 = 1;
/// Name of the state file in the state directory.
pub const STATE_FILE_NAME: &str = "thermalprobe.state";
/// Delivery attempts per record in one-shot mode.
pub const ONESHOT_ATTEMPTS: u32 = 3;

/// Documented exit codes (see thermalprobe(1)): the probes' common ones, where
/// `UNDELIVERED` means a one-shot run could not deliver some records (they are reported
/// next time); and this probe's own.
pub mod exit {
    pub use probe_support::exit::*;
    /// No CPU has a `thermal_throttle` directory.
    pub const NO_COUNTERS: u8 = 5;
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] libtelemetry::ConfigError),
    #[error("no thermal_throttle counters under {0}")]
    NoCounters(PathBuf),
    #[error("{0} record(s) could not be delivered; they are reported on the next run")]
    Undelivered(usize),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::NoCounters(_) => exit::NO_COUNTERS,
            Error::Undelivered(_) => exit::UNDELIVERED,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub polls: usize,
    pub delivered: usize,
    pub not_opted_in: usize,
    pub failed: usize,
}

/// The polling loop's state: where to read, where to remember, whom to tell.
pub struct Probe {
    sys_dir: PathBuf,
    state_path: PathBuf,
    state: State,
    sender: Option<Sender>,
    interval: Duration,
    pub summary: Summary,
}

impl Probe {
    pub fn new(cli: &Cli, paths: &Paths) -> Result<Probe, Error> {
        let sender = if cli.dry_run {
            None
        } else {
            Some(Sender::new(paths, cli.config.config_file.as_deref())?)
        };
        let state_path = cli
            .state_file
            .clone()
            .unwrap_or_else(|| paths.state_dir().join(STATE_FILE_NAME));
        let boot_id = libtelemetry::journal::read_boot_id(paths).unwrap_or_else(|e| {
            tracing::warn!("cannot read the boot id: {e}");
            "unknown".to_string()
        });
        Ok(Probe {
            sys_dir: cli.sysfs.clone().unwrap_or_else(|| paths.sys_dir()),
            state: State::load(&state_path, &boot_id),
            state_path,
            sender,
            interval: cli.interval,
            summary: Summary::default(),
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Read the counters, report the packages that throttled, remember what was reported.
    /// Returns how many records could not be delivered.
    pub fn poll(&mut self, shutdown: &Shutdown, once: bool) -> Result<usize, Error> {
        self.summary.polls += 1;
        let snap = sysfs::read_snapshot(&self.sys_dir);
        if snap.is_empty() {
            return Err(Error::NoCounters(sysfs::cpu_root(&self.sys_dir)));
        }
        let before = self.state.clone();
        let events = poller::compute(&mut self.state, &snap, self.interval);
        let mut undelivered = 0;
        for ev in &events {
            tracing::info!(
                "package {} throttled: package +{}, cores +{} (cpus {:?})",
                ev.package,
                ev.package_delta,
                ev.core_delta,
                ev.cpus
            );
            if self.deliver(ev, shutdown, once) {
                poller::commit(&mut self.state, ev);
            } else {
                undelivered += 1;
            }
        }
        if self.sender.is_some() && self.state != before {
            if let Err(e) = self.state.save(&self.state_path) {
                tracing::warn!("cannot write {}: {e}", self.state_path.display());
            }
        }
        Ok(undelivered)
    }

    /// True when the event is done with (delivered, or dropped because not opted in).
    fn deliver(&mut self, ev: &PackageEvent, shutdown: &Shutdown, once: bool) -> bool {
        let Some(sender) = &self.sender else {
            println!(
                "classification: {CLASSIFICATION}\nseverity: {SEVERITY}\n\n{}",
                ev.payload
            );
            return true;
        };
        let record = match sender.build(
            SEVERITY,
            CLASSIFICATION,
            PAYLOAD_VERSION,
            ev.payload.as_bytes(),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot build record: {e}");
                return true;
            }
        };
        let mut retry = Retry::for_run(once, ONESHOT_ATTEMPTS);
        match sender.send_retrying(&record, shutdown, &mut retry) {
            Ok(Outcome::Accepted) => {
                self.summary.delivered += 1;
                true
            }
            Ok(Outcome::NotOptedIn) => {
                self.summary.not_opted_in += 1;
                true
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    "cannot deliver to {}: {e}; the counters are reported next time",
                    sender.socket_path().display()
                );
                self.summary.failed += 1;
                false
            }
            Err(e) => {
                tracing::error!("record rejected, dropped: {e}");
                true
            }
        }
    }
}

/// Poll once (`--once`) or every interval until `shutdown`.
pub fn run(cli: &Cli, paths: &Paths, shutdown: &Shutdown) -> Result<Summary, Error> {
    let mut probe = Probe::new(cli, paths)?;
    loop {
        let undelivered = probe.poll(shutdown, cli.once)?;
        if cli.once {
            if undelivered > 0 {
                return Err(Error::Undelivered(undelivered));
            }
            return Ok(probe.summary.clone());
        }
        if shutdown.wait(cli.interval) {
            return Ok(probe.summary.clone());
        }
    }
}
