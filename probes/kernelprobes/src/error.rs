//! The probes' error type and its exit codes.

use std::io;
use std::path::PathBuf;

use libtelemetry::{ConfigError, RecordError, SendError};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a runtime failure (an input could not be read, a child failed, …).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command line (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the configuration file could not be read or parsed.
pub const EXIT_CONFIG: u8 = 3;
/// Exit code: one or more records could not be handed to telemprobd.
pub const EXIT_NOT_DELIVERED: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("cannot drop privileges to user {user:?}: {source}")]
    DropPrivileges {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program:?} {status}")]
    ChildFailed {
        program: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("cannot mount pstore on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
    #[error("cannot send record: {0}")]
    Send(#[from] SendError),
    #[error("{0} record(s) could not be delivered")]
    NotDelivered(usize),
    #[error("{0} file(s) could not be copied")]
    CopyFailed(usize),
}

impl ProbeError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> ProbeError {
        ProbeError::Io {
            path: path.into(),
            source,
        }
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProbeError::Config(_) => EXIT_CONFIG,
            ProbeError::Send(_) | ProbeError::NotDelivered(_) => EXIT_NOT_DELIVERED,
            _ => EXIT_FAILURE,
        }
    }
}
