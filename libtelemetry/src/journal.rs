//! The record journal (§6.1): one line per delivered, dropped-by-strategy or locally kept
//! record, five fields separated by ASCII RS (0x1E):
//!
//! ```text
//! <record_id> RS <timestamp> RS <classification> RS <event_id> RS <boot_id> LF
//! ```
//!
//! Architecture Invariant: telempostd writes and telemctl reads the journal only through
//! this module's format and parse functions.

use std::io::Read;
use std::path::Path;

use crate::record::{validate_classification, validate_event_id};

/// Field separator.
pub const RS: char = '\u{1e}';
/// Entries kept after pruning.
pub const JOURNAL_RECORD_LIMIT: usize = 100;
/// Pruning starts above `LIMIT + DEVIATION` entries.
pub const JOURNAL_DEVIATION: usize = 50;
/// Largest journal file read.
pub const MAX_JOURNAL_SIZE: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub record_id: String,
    pub timestamp: i64,
    pub classification: String,
    pub event_id: String,
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("journal entry has an invalid classification or event id")]
    InvalidEntry,
    #[error("journal line is malformed")]
    Malformed,
}

impl JournalEntry {
    /// A new entry; refuses what the C journal skipped (invalid classification or event id).
    pub fn new(
        record_id: String,
        timestamp: i64,
        classification: &str,
        event_id: &str,
        boot_id: &str,
    ) -> Result<JournalEntry, JournalError> {
        if validate_classification(classification).is_err() || validate_event_id(event_id).is_err()
        {
            return Err(JournalError::InvalidEntry);
        }
        Ok(JournalEntry {
            record_id,
            timestamp,
            classification: classification.to_string(),
            event_id: event_id.to_string(),
            boot_id: boot_id.chars().take(36).collect(),
        })
    }

    /// The line, with its trailing `\n`.
    pub fn to_line(&self) -> String {
        format!(
            "{}{RS}{}{RS}{}{RS}{}{RS}{}\n",
            self.record_id, self.timestamp, self.classification, self.event_id, self.boot_id
        )
    }

    /// Parse one line (with or without its `\n`).
    pub fn parse(line: &str) -> Result<JournalEntry, JournalError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut f = line.split(RS);
        let (Some(rid), Some(ts), Some(class), Some(eid), Some(boot), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(JournalError::Malformed);
        };
        Ok(JournalEntry {
            record_id: rid.to_string(),
            timestamp: ts.parse().map_err(|_| JournalError::Malformed)?,
            classification: class.to_string(),
            event_id: eid.to_string(),
            boot_id: boot.to_string(),
        })
    }
}

/// Every well-formed entry of the journal file, oldest first (malformed lines are skipped).
pub fn read_journal(path: &Path) -> std::io::Result<Vec<JournalEntry>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_JOURNAL_SIZE)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| JournalEntry::parse(l).ok())
        .collect())
}

/// The boot id as the journal stores it: the first 36 chars of the kernel's boot_id file.
pub fn read_boot_id(paths: &crate::paths::Paths) -> std::io::Result<String> {
    let bytes = crate::hostinfo::read_host_file(&paths.boot_id_file(), false)?;
    let text = String::from_utf8_lossy(&bytes);
    let id: String = text.trim().chars().take(36).collect();
    if id.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "empty boot_id",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_roundtrip() {
        let e = JournalEntry::new(
            "57b918ce6644c4b2ab11a25310871fb8".into(),
            1522691281,
            "org.clearlinux/hello/world",
            "5de9de8d5f3c6a7d445d75ba01cc3322",
            "23156fd8-5386-4bfa-ae58-eb2136e72a04",
        )
        .unwrap();
        let line = e.to_line();
        assert_eq!(
            line,
            "57b918ce6644c4b2ab11a25310871fb8\u{1e}1522691281\u{1e}org.clearlinux/hello/world\u{1e}5de9de8d5f3c6a7d445d75ba01cc3322\u{1e}23156fd8-5386-4bfa-ae58-eb2136e72a04\n"
        );
        assert_eq!(JournalEntry::parse(&line).unwrap(), e);
        assert!(JournalEntry::new(
            "r".into(),
            1,
            "t/t",
            "3bc17766547776eb7fc478eb0eb43e43",
            "b"
        )
        .is_err());
        assert!(JournalEntry::new(
            "r".into(),
            1,
            "t/t/t",
            "X3bc17766547776eb7fc478eb0eb43e4",
            "b"
        )
        .is_err());
        assert!(JournalEntry::parse("a\u{1e}b").is_err());
        assert!(JournalEntry::parse("a\u{1e}x\u{1e}c\u{1e}d\u{1e}e").is_err());
    }
}
