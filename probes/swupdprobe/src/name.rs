//! swupd's file names: `<version>.<class>.<severity>.<random>` (swupd-client creates them
//! with `mkostemp("<version>.<class>.<level>.XXXXXX")` and renames them into the drop
//! directory).
//!
//! Unlike the original probe, every token is validated, and a version other than `2` still
//! takes its severity from the third token (the original read the second).

use thiserror::Error;

/// Classification prefix of every record.
pub const CLASS_PREFIX: &str = "org.clearlinux/swupd-client/";
/// The only file format version whose class is used as is.
pub const KNOWN_VERSION: u32 = 2;
/// Class used for other versions.
pub const UNKNOWN_CLASS: &str = "unknown";
/// Longest class token (the classification's last segment may have 40 characters).
pub const MAX_CLASS_LEN: usize = 40;
/// Longest random token accepted.
pub const MAX_RANDOM_LEN: usize = 64;
/// Longest version token (fits a `u32`).
const MAX_VERSION_LEN: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("expected <version>.<class>.<severity>.<random>, found {0} dot-separated parts")]
    Parts(usize),
    #[error("version {0:?} is not a number")]
    Version(String),
    #[error("class {0:?} is empty, longer than {MAX_CLASS_LEN} or not [A-Za-z0-9_-]")]
    Class(String),
    #[error("severity {0:?} is not 1..4")]
    Severity(String),
    #[error("random part {0:?} is empty, too long or not [A-Za-z0-9_-]")]
    Random(String),
}

/// A valid swupd telemetry file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwupdName {
    pub version: u32,
    pub class: String,
    pub severity: u32,
    pub random: String,
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl SwupdName {
    pub fn parse(name: &str) -> Result<SwupdName, NameError> {
        let parts: Vec<&str> = name.split('.').collect();
        let [version, class, severity, random] = parts[..] else {
            return Err(NameError::Parts(parts.len()));
        };
        if version.is_empty()
            || version.len() > MAX_VERSION_LEN
            || !version.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(NameError::Version(version.into()));
        }
        let version = version
            .parse()
            .map_err(|_| NameError::Version(version.into()))?;
        if class.is_empty() || class.len() > MAX_CLASS_LEN || !class.bytes().all(is_token_char) {
            return Err(NameError::Class(class.into()));
        }
        let severity = match severity {
            "1" => 1,
            "2" => 2,
            "3" => 3,
            "4" => 4,
            other => return Err(NameError::Severity(other.into())),
        };
        if random.is_empty() || random.len() > MAX_RANDOM_LEN || !random.bytes().all(is_token_char)
        {
            return Err(NameError::Random(random.into()));
        }
        Ok(SwupdName {
            version,
            class: class.into(),
            severity,
            random: random.into(),
        })
    }

    /// `org.clearlinux/swupd-client/<class>` for version 2, `.../unknown` otherwise.
    pub fn classification(&self) -> String {
        if self.version == KNOWN_VERSION {
            format!("{CLASS_PREFIX}{}", self.class)
        } else {
            format!("{CLASS_PREFIX}{UNKNOWN_CLASS}")
        }
    }
}

/// Suffixes of backup and package-manager files, which systemd's `DirectoryNotEmpty=`
/// does not count either (`hidden_or_backup_file()`).
const BACKUP_SUFFIXES: [&str; 17] = [
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-tmp",
    ".dpkg-dist",
    ".dpkg-bak",
    ".dpkg-backup",
    ".dpkg-remove",
    ".ucf-new",
    ".ucf-old",
    ".ucf-dist",
    ".swp",
    ".bak",
    ".old",
    ".new",
];

/// Names the probe never touches: exactly the entries systemd's `DirectoryNotEmpty=`
/// ignores — dotfiles (temporary files, the `.quarantine` directory, the tries file),
/// names ending in `~` and backup suffixes. Everything else that wakes the `.path` unit is
/// either delivered or quarantined, so the unit cannot re-trigger forever.
pub fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || BACKUP_SUFFIXES.iter().any(|s| name.ends_with(s))
}
