//! Files a sender names, followed as untrusted input: a record's `CFG:` configuration
//! override and the `cainfo` CA bundle it names.
//!
//! A sender is the uid telemprobd read from its connection and wrote into the staged file's
//! name ([`StagedSender`]). telempostd follows a sender's `CFG:` path only to a file the
//! sender could have written itself or that root provides:
//! * opened `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (no symlink at the last component, no
//!   wait on a FIFO or a device), checked with `fstat` on the open fd: a regular file,
//!   owned by root or by the sender's uid (a record of unknown sender: root only), at most
//!   [`MAX_CONFIG_SIZE`] (config) or [`MAX_CAINFO_SIZE`] (CA bundle) bytes;
//! * read by the delivery worker, never under a lock another delivery waits on;
//! * its values are never echoed: errors name the record's config path and what is wrong,
//!   not the server, tidheader, headers or any value read from it.
//!
//! A file that may not be followed ([`OverrideError::Refused`]) quarantines the record: it
//! will not become followable by retrying, and it must not be sent anywhere else (its data
//! was meant for that server). A file that is only unusable now (missing, unreadable, not
//! parsable) is a failed attempt of the record, retried as before.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use libtelemetry::config::{ConfigError, MAX_CONFIG_SIZE};
use libtelemetry::staged::StagedSender;
use libtelemetry::{Config, Paths};

/// Largest CA bundle read (the Debian system bundle is about 220 KiB).
pub const MAX_CAINFO_SIZE: u64 = 1024 * 1024;

/// Who may own the files a configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trust {
    /// The daemon's own configuration: the administrator's choice, symlinks followed (a
    /// distribution's CA bundle often is one), any owner.
    Daemon,
    /// A record's override: files owned by root or by this sender only, no symlink.
    Sender(StagedSender),
}

impl Trust {
    fn owner_allowed(self, uid: u32) -> bool {
        match self {
            Trust::Daemon => true,
            Trust::Sender(StagedSender::Uid(sender)) => uid == 0 || uid == sender,
            Trust::Sender(StagedSender::Unknown) => uid == 0,
        }
    }
}

/// Why a file a configuration names cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// Never to be followed for this sender: the record is quarantined.
    #[error("{0}")]
    Refused(String),
    /// Not usable now (missing, unreadable, not parsable): a failed attempt.
    #[error("{0}")]
    Unusable(String),
}

impl OverrideError {
    pub fn is_refused(&self) -> bool {
        matches!(self, OverrideError::Refused(_))
    }
}

/// An open, checked file: its metadata as `fstat` gave it.
pub struct CheckedFile {
    pub file: File,
    pub metadata: std::fs::Metadata,
}

impl CheckedFile {
    /// Its contents (at most the size it was checked for; a file that grew is cut there,
    /// and then fails to parse rather than allocating more).
    pub fn read(self, max: u64) -> Result<Vec<u8>, OverrideError> {
        let mut buf = Vec::with_capacity(self.metadata.len().min(max) as usize);
        self.file
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| OverrideError::Unusable(format!("cannot read: {e}")))?;
        if buf.len() as u64 > max {
            return Err(OverrideError::Refused(format!("larger than {max} bytes")));
        }
        Ok(buf)
    }
}

/// Open `path` as `trust` allows, without blocking and without reading it.
pub fn open_checked(path: &Path, trust: Trust, max: u64) -> Result<CheckedFile, OverrideError> {
    if !path.is_absolute() {
        return Err(OverrideError::Refused("not an absolute path".into()));
    }
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if trust != Trust::Daemon {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => OverrideError::Refused("a symbolic link".into()),
            _ => OverrideError::Unusable(format!("cannot open: {e}")),
        })?;
    let metadata = file
        .metadata()
        .map_err(|e| OverrideError::Unusable(format!("cannot stat: {e}")))?;
    if !metadata.file_type().is_file() {
        return Err(OverrideError::Refused("not a regular file".into()));
    }
    if !trust.owner_allowed(metadata.uid()) {
        return Err(OverrideError::Refused(format!(
            "owned by uid {}, neither root nor the record's sender",
            metadata.uid()
        )));
    }
    if metadata.len() > max {
        return Err(OverrideError::Refused(format!("larger than {max} bytes")));
    }
    Ok(CheckedFile { file, metadata })
}

/// Read and parse the `CFG:` file of a record from `sender`. Errors say what is wrong
/// without echoing any value of the file.
pub fn load_override(
    path: &Path,
    sender: StagedSender,
    paths: &Paths,
) -> Result<Config, OverrideError> {
    let bytes =
        open_checked(path, Trust::Sender(sender), MAX_CONFIG_SIZE)?.read(MAX_CONFIG_SIZE)?;
    let text = String::from_utf8_lossy(&bytes);
    Config::parse(&text, path, paths).map_err(|e| OverrideError::Unusable(redacted(&e)))
}

/// A config error without the values it quotes.
fn redacted(e: &ConfigError) -> String {
    match e {
        ConfigError::Value { line, key, .. } => format!("line {line}: invalid value for {key}"),
        ConfigError::Syntax { line, message, .. } => format!("line {line}: {message}"),
        ConfigError::TooLarge { .. } => format!("larger than {MAX_CONFIG_SIZE} bytes"),
        ConfigError::Io { source, .. } => format!("cannot read: {source}"),
        ConfigError::Delivery { key, .. } => format!("invalid {key}"),
        ConfigError::NotAbsolute(_) => "not an absolute path".into(),
        ConfigError::NotRegularFile(_) => "not a regular file".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_root_or_the_sender_are_followed() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("x.conf");
        std::fs::write(&conf, "[settings]\nserver=http://secret.example/\n").unwrap();
        let link = d.path().join("link.conf");
        std::os::unix::fs::symlink(&conf, &link).unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // SAFETY: geteuid(2) has no side effects.
        let me = unsafe { libc::geteuid() };
        let paths = Paths::default();
        let ok = load_override(&conf, StagedSender::Uid(me), &paths).unwrap();
        assert_eq!(ok.server, "http://secret.example/");
        let refused = |p: &Path, s| load_override(p, s, &paths).unwrap_err().is_refused();
        assert!(refused(&link, StagedSender::Uid(me)), "symlink");
        assert!(
            refused(&fifo, StagedSender::Uid(me)),
            "FIFO, without blocking"
        );
        assert!(refused(Path::new("/dev/zero"), StagedSender::Uid(me)));
        assert!(refused(Path::new("relative.conf"), StagedSender::Uid(me)));
        if me == 0 {
            std::os::unix::fs::chown(&conf, Some(4242), None).unwrap();
            assert!(load_override(&conf, StagedSender::Uid(4242), &paths).is_ok());
            assert!(
                refused(&conf, StagedSender::Uid(4243)),
                "another user's file"
            );
            assert!(
                refused(&conf, StagedSender::Unknown),
                "unknown sender: root only"
            );
            std::os::unix::fs::chown(&conf, Some(0), None).unwrap();
            assert!(load_override(&conf, StagedSender::Unknown, &paths).is_ok());
        } else {
            assert!(
                refused(&conf, StagedSender::Uid(me + 1)),
                "another user's file"
            );
            assert!(
                refused(&conf, StagedSender::Unknown),
                "unknown sender: root only"
            );
        }
        let big = d.path().join("big.conf");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_SIZE as usize + 1]).unwrap();
        assert!(refused(&big, StagedSender::Uid(me)));
        let missing = load_override(&d.path().join("gone"), StagedSender::Uid(me), &paths);
        assert!(matches!(missing, Err(OverrideError::Unusable(_))));
        // Values are not echoed.
        std::fs::write(&conf, "[settings]\nrecord_expiry=secret-value\n").unwrap();
        let e = load_override(&conf, StagedSender::Uid(me), &paths).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(!e.is_refused());
    }
}
