//! telempostd: delivers staged records to the backend.
//!
//! Two halves. [`sched`] is the policy as a pure scheduler: events in (a file picked up, a
//! delivery's outcome, a signal, the time), actions out (submit a job, delete, quarantine,
//! journal, …), no I/O and no clock of its own. [`event_loop`] is the thin I/O loop around
//! it: one thread that owns the scheduler and the directory side ([`directory`]: the
//! watch, scans, reads, deletes, quarantine, spool switch) and reads a single channel fed
//! by the inotify watcher ([`pickup`]), a signalfd reader, and fixed pools of delivery
//! workers ([`workers`] over [`delivery`]; ureq is blocking, so parallelism comes from
//! threads sharing keep-alive agents). Journal entries ([`journal`]), spool syncs and the
//! status file ([`counters`]) go to a writer thread ([`persist`]) so the loop never waits
//! on fsync.
//!
//! Architecture Invariant: a spooled file is deleted only after the backend answered 200/201
//! for it, or by an explicit, counted and logged policy: expiry (`expired`), quota
//! (`evicted`), the `drop` rate-limit strategy (`dropped`), delivery disabled (`local`), or
//! quarantine (`quarantined`, moved rather than deleted).

/// The C command line, shared with the other daemon.
pub use daemon_common::cli;
pub mod concurrency;
pub mod counters;
pub mod delivery;
pub mod directory;
pub mod error;
pub mod event_loop;
pub mod gate;
pub mod http;
mod input;
pub mod journal;
mod lanes;
pub mod logsummary;
pub mod otlp;
pub mod persist;
pub mod pickup;
pub mod ratelimit;
pub mod sched;
pub mod settings;
pub mod spool;
pub mod timers;
pub mod trust;
pub mod workers;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use cli::Options;
pub use error::{PostdError, EXIT_RUNTIME_FAILURE};
pub use event_loop::{run, IDLE_EXIT, IDLE_EXIT_ENV};
pub use settings::{DEFAULT_MAX_IN_FLIGHT, MAX_IN_FLIGHT_LIMIT};

/// The whole program: parse `args` (with argv0), run, map errors to exit codes.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    daemon_common::cli::main(args, "telempostd", |opts| {
        daemon_common::logging::init("telempostd");
        match run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// Path helper for tests and telemctl: the quarantine of a spool dir.
pub fn quarantine_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join(pickup::QUARANTINE_DIR)
}
