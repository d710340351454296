//! What mceprobe, thermalprobe and swupdprobe share, so each holds only its own source and
//! policy:
//!
//! * [`shutdown`]: SIGTERM/SIGINT through a `signalfd` (a pipe in tests) that the probes'
//!   loops poll with their sources, and [`shutdown::poll_readable`];
//! * [`deliver`]: records built with the host's headers and sent to telemprobd through
//!   `libtelemetry::client`, with the one-shot retry policy ([`deliver::Retry`]);
//! * [`log`]: the journal or stderr (also used by telemprobd and telempostd);
//! * [`cli`]: the duration syntax of the probes' options;
//! * [`exit`] and [`main`]: the exit codes the three man pages share and the `main()` that
//!   maps a run's result to them.

pub mod cli;
pub mod deliver;
pub mod log;
pub mod shutdown;

use std::fmt::{Debug, Display};
use std::process::ExitCode;

use clap::Parser;
use libtelemetry::Paths;

use crate::shutdown::Shutdown;

/// Exit codes common to the probes; each probe documents its own meaning of `FAILURE` and
/// `UNDELIVERED` and adds codes from 5 up.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// The probe's source (device, directory, ...) failed.
    pub const FAILURE: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The configuration file could not be read or parsed.
    pub const CONFIG: u8 = 3;
    /// Some records could not be delivered.
    pub const UNDELIVERED: u8 = 4;
}

/// A probe's `main()`: parse the command line `C` (usage errors exit with
/// [`exit::USAGE`], `--help` and `--version` with [`exit::SUCCESS`]), log as `name`, turn
/// SIGTERM/SIGINT into a [`Shutdown`] before any thread starts, then `run` with the paths
/// of the environment and map its error through `exit_code`.
pub fn main<C, S, E>(
    name: &'static str,
    run: impl FnOnce(&C, &Paths, &Shutdown) -> Result<S, E>,
    exit_code: impl FnOnce(&E) -> u8,
) -> ExitCode
where
    C: Parser,
    S: Debug,
    E: Display,
{
    let cli = match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    log::init(name);
    let shutdown = match Shutdown::from_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot set up signal handling: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let paths = Paths::from_env();
    match run(&cli, &paths, &shutdown) {
        Ok(summary) => {
            tracing::debug!("{summary:?}");
            ExitCode::from(exit::SUCCESS)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
