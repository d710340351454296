//! Which file is read (the C selection order) and how: bounded, never blocking on a FIFO.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::keys::MAX_CONFIG_SIZE;
use crate::paths::Paths;

/// Where the configuration in effect came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Given with `-f` / `tm_set_config_file` / a record's `CFG:` field.
    Explicit(PathBuf),
    /// `/etc/telemetrics/telemetrics.conf`.
    Etc(PathBuf),
    /// `/usr/share/defaults/telemetrics/telemetrics.conf`.
    Distribution(PathBuf),
    /// No file: built-in defaults only.
    BuiltIn,
}

impl ConfigSource {
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Explicit(p) | ConfigSource::Etc(p) | ConfigSource::Distribution(p) => {
                Some(p)
            }
            ConfigSource::BuiltIn => None,
        }
    }
}

/// Which file the C client would read (§9 "Which file").
pub fn select_config_file(paths: &Paths, explicit: Option<&Path>) -> ConfigSource {
    if let Some(p) = explicit {
        return ConfigSource::Explicit(p.to_path_buf());
    }
    let etc = paths.etc_config_file();
    if readable(&etc) {
        return ConfigSource::Etc(etc);
    }
    let dist = paths.default_config_file();
    if readable(&dist) {
        return ConfigSource::Distribution(dist);
    }
    ConfigSource::BuiltIn
}

fn readable(p: &Path) -> bool {
    open_nonblocking(p).is_ok()
}

/// Open a configuration file for reading without ever waiting: a FIFO (or a device) at a
/// config path must not hang a probe or the C library's caller. Regular files read the
/// same with `O_NONBLOCK`; a FIFO without a writer reads as empty, one whose writer sends
/// nothing fails with `EAGAIN`.
fn open_nonblocking(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
}

/// `tm_set_config_file` / `-f` checks: absolute, exists, regular file.
pub fn check_config_path(path: &Path) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(ConfigError::NotAbsolute(path.to_path_buf()));
    }
    let md = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(ConfigError::NotRegularFile(path.to_path_buf()));
    }
    Ok(())
}

pub(super) fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = open_nonblocking(path).map_err(io)?;
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_CONFIG_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // Bytes that are not UTF-8 only matter inside values; keep them visible but harmless.
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
