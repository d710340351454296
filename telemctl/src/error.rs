//! telemctl's errors and their exit codes.
//!
//! Exit codes (documented in telemctl(1)):
//! * 0 — success (also `journal` with no matching entry, `opt-in` when already opted in);
//! * 1 — the action failed (not root, not opted in, a service action failed, the journal or a
//!   file could not be read or written);
//! * 2 — usage error (unknown command or option, bad option value).

use std::path::PathBuf;

use libtelemetry::ConfigError;

/// Exit code of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code of a failed action.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a usage error.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The C client's exact message.
    #[error("Must be root to run this command. Exiting...")]
    NotRoot,
    /// The C client's exact message.
    #[error("Opt in to telemetry first.")]
    NotOptedIn,
    #[error("Failed to create {}.", path.display())]
    OptIn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to remove {}.", path.display())]
    OptOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Messages were already printed per unit; only the exit code is left to report.
    #[error("a service action failed")]
    ServiceFailed,
    /// Some telemetry data could not be purged on opt-out (each problem was printed).
    #[error("some telemetry data could not be removed")]
    PurgeFailed,
    /// The C telem_journal's exact message.
    #[error("Unable to open journal")]
    JournalOpen(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read {}: {message}", path.display())]
    CrashLoopState { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Whether `run` prints this error (some carry messages printed earlier).
    pub fn is_silent(&self) -> bool {
        matches!(self, CtlError::ServiceFailed | CtlError::PurgeFailed)
    }
}

/// Output errors: a closed pipe (`telemctl journal | head`) ends the command quietly.
pub fn output(e: std::io::Error) -> CtlError {
    CtlError::Output(e)
}
