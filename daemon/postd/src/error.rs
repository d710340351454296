//! Errors that stop telempostd, and the exit status each maps to.

use std::path::PathBuf;

use libtelemetry::ConfigError;

use super::delivery::TargetError;

/// Errors that stop telempostd: at start-up (exit status 1) or while running (exit status
/// [`EXIT_RUNTIME_FAILURE`], so that systemd sees a failed unit, never a clean stop).
#[derive(Debug, thiserror::Error)]
pub enum PostdError {
    #[error("Configuration file path not valid: {0}")]
    ConfigPath(ConfigError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("invalid {key} value {value:?}: {message}")]
    Setting {
        key: &'static str,
        value: String,
        message: String,
    },
    #[error("spool directory {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// New records would no longer be seen.
    #[error("lost the watch on the spool directory: {0}")]
    WatchLost(String),
    #[error("the delivery workers are gone")]
    WorkersGone,
}

/// Exit status after a failure while running (the spool watch lost, the workers gone).
pub const EXIT_RUNTIME_FAILURE: u8 = 2;

impl PostdError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PostdError::WatchLost(_) | PostdError::WorkersGone => EXIT_RUNTIME_FAILURE,
            _ => 1,
        }
    }
}
