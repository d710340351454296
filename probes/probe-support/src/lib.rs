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
//!
//! `cli` and `main` (clap) are the default feature `cli`; the daemons, which parse the C
//! command line with `libtelemetry::getopt`, use this crate without it.

#[cfg(feature = "cli")]
pub mod cli;
pub mod deliver;
pub mod log;
pub mod shutdown;

#[cfg(feature = "cli")]
mod probe_main;
#[cfg(feature = "cli")]
pub use probe_main::main;

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
