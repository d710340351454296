//! What can go wrong with a config file: errors, values kept for their reader to report, and
//! warnings.

use std::fmt;
use std::path::PathBuf;

use super::keys::MAX_CONFIG_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: configuration file larger than {MAX_CONFIG_SIZE} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: invalid value {value:?} for {key}: {message}")]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        message: String,
    },
    #[error("configuration path {0:?} must be absolute")]
    NotAbsolute(PathBuf),
    #[error("configuration path {0:?} is not a regular file")]
    NotRegularFile(PathBuf),
    #[error("{key}: {message}")]
    Delivery { key: &'static str, message: String },
}

impl ConfigError {
    /// The errno the C library would have returned for this condition.
    pub fn errno(&self) -> i32 {
        match self {
            ConfigError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            ConfigError::TooLarge { .. } => libc::EFBIG,
            _ => libc::EINVAL,
        }
    }
}

/// A value that cannot be used of a key that does not fail the parse (those only one
/// program reads), kept for that program to report (as a [`ConfigError::Value`]): see
/// [`KeyReader`](super::KeyReader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredValueError {
    pub path: PathBuf,
    pub line: usize,
    /// One of [`KNOWN_KEYS`](super::KNOWN_KEYS).
    pub key: &'static str,
    pub value: String,
    pub message: String,
}

impl DeferredValueError {
    /// `path:line`, for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.path.display(), self.line)
    }

    pub fn to_error(&self) -> ConfigError {
        ConfigError::Value {
            path: self.path.clone(),
            line: self.line,
            key: self.key.to_string(),
            value: self.value.clone(),
            message: self.message.clone(),
        }
    }
}

/// Something in a config file that is accepted but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A `[settings]` key this suite does not read (C ignored them too).
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        /// The known key it is closest to, when it is a likely misspelling.
        did_you_mean: Option<&'static str>,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownKey {
                path,
                line,
                key,
                did_you_mean,
            } => {
                write!(f, "{}:{line}: unknown key {key:?} ignored", path.display())?;
                if let Some(k) = did_you_mean {
                    write!(f, " (did you mean {k:?}?)")?;
                }
                Ok(())
            }
        }
    }
}
