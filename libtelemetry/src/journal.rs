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

/// What [`append_journal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalAppend {
    /// Entries now in the file.
    pub entries: usize,
    /// Entries dropped by pruning (oldest first).
    pub pruned: Vec<JournalEntry>,
}

/// Drop the oldest entries when there are more than `LIMIT + DEVIATION` (150), keeping the
/// newest `LIMIT` (100), as the C journal did. Returns the dropped entries, oldest first.
pub fn prune_entries(entries: &mut Vec<JournalEntry>) -> Vec<JournalEntry> {
    if entries.len() <= JOURNAL_RECORD_LIMIT + JOURNAL_DEVIATION {
        return Vec::new();
    }
    let excess = entries.len() - JOURNAL_RECORD_LIMIT;
    entries.drain(..excess).collect()
}

/// Append `new` to the journal at `path`, prune it to 100 entries when it holds more than
/// 150, and replace the file atomically (temp → fsync → rename → fsync dir), so a crash
/// leaves the old or the new journal, never a torn line. Malformed lines already in the file
/// are dropped by the rewrite.
///
/// With `records_dir` (retention enabled), the retention copies of pruned entries are deleted
/// with them, and so are copies no entry refers to any more (left by a crash between writing
/// a copy and its entry).
pub fn append_journal(
    path: &Path,
    new: &[JournalEntry],
    records_dir: Option<&Path>,
) -> std::io::Result<JournalAppend> {
    let mut entries = match read_journal(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    entries.extend_from_slice(new);
    let pruned = prune_entries(&mut entries);
    let mut text = String::with_capacity(entries.len() * 128);
    for e in &entries {
        text.push_str(&e.to_line());
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
    if let Some(dir) = records_dir {
        if !pruned.is_empty() {
            for e in &pruned {
                if let Some(p) = retention_file(dir, &e.record_id) {
                    let _ = std::fs::remove_file(p);
                }
            }
            sweep_retention_copies(dir, &entries);
        }
    }
    Ok(JournalAppend {
        entries: entries.len(),
        pruned,
    })
}

/// `records/<record_id>`, or `None` when `record_id` is not a plain 32-hex id (a journal line
/// must never make the writer touch another path).
pub fn retention_file(records_dir: &Path, record_id: &str) -> Option<std::path::PathBuf> {
    let plain = record_id.len() == 32
        && record_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    plain.then(|| records_dir.join(record_id))
}

/// Write the retained copy of a record's body (§6.3): the staged body (payload + `\n`)
/// followed by one more `\n`, byte for byte what the C daemon's `"%s\n"` wrote. Atomic.
pub fn write_retention_copy(
    records_dir: &Path,
    record_id: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let path = retention_file(records_dir, record_id).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid record id")
    })?;
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.extend_from_slice(body);
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&path, &bytes, 0o640)
}

/// Delete retention copies (32-hex names) whose record id is not in `kept`.
fn sweep_retention_copies(records_dir: &Path, kept: &[JournalEntry]) {
    let Ok(rd) = std::fs::read_dir(records_dir) else {
        return;
    };
    let kept: std::collections::HashSet<&str> = kept.iter().map(|e| e.record_id.as_str()).collect();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if retention_file(records_dir, name).is_some() && !kept.contains(name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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

    fn entry(i: usize) -> JournalEntry {
        JournalEntry::new(
            format!("{i:032x}"),
            1520054957 + i as i64,
            "t/t/t",
            "3bc17766547776eb7fc478eb0eb43e43",
            "23156fd8-5386-4bfa-ae58-eb2136e72a04",
        )
        .unwrap()
    }

    #[test]
    fn append_prunes_to_100_above_150() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("journal");
        let records = d.path().join("records");
        std::fs::create_dir(&records).unwrap();
        for i in 0..150 {
            write_retention_copy(&records, &entry(i).record_id, b"body\n").unwrap();
            let r = append_journal(&j, &[entry(i)], Some(&records)).unwrap();
            assert_eq!(r.entries, i + 1);
            assert!(r.pruned.is_empty());
        }
        assert_eq!(
            std::fs::read(retention_file(&records, &entry(0).record_id).unwrap()).unwrap(),
            b"body\n\n"
        );
        // An orphan copy (crash between copy and entry) goes with the next prune.
        write_retention_copy(&records, &format!("{:032x}", 999_999), b"x").unwrap();
        write_retention_copy(&records, &entry(150).record_id, b"body\n").unwrap();
        let r = append_journal(&j, &[entry(150)], Some(&records)).unwrap();
        assert_eq!(r.entries, 100);
        assert_eq!(r.pruned.len(), 51);
        assert_eq!(r.pruned[0], entry(0));
        let kept = read_journal(&j).unwrap();
        assert_eq!(kept.first(), Some(&entry(51)));
        assert_eq!(kept.last(), Some(&entry(150)));
        let mut copies: Vec<_> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        copies.sort();
        let mut expected: Vec<_> = kept.iter().map(|e| e.record_id.clone()).collect();
        expected.sort();
        assert_eq!(copies, expected);
        // Without a records dir the copies are left alone.
        assert!(retention_file(&records, "../x").is_none());
        let mut v: Vec<_> = (0..151).map(entry).collect();
        assert_eq!(prune_entries(&mut v).len(), 51);
        let mut v: Vec<_> = (0..150).map(entry).collect();
        assert!(prune_entries(&mut v).is_empty());
    }

    #[test]
    fn append_drops_malformed_lines_and_creates_the_file() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("journal");
        append_journal(&j, &[entry(1)], None).unwrap();
        let mut text = std::fs::read_to_string(&j).unwrap();
        text.push_str("torn\u{1e}line");
        std::fs::write(&j, text).unwrap();
        append_journal(&j, &[entry(2)], None).unwrap();
        assert_eq!(read_journal(&j).unwrap(), vec![entry(1), entry(2)]);
        assert_eq!(
            std::fs::read_to_string(&j).unwrap(),
            entry(1).to_line() + &entry(2).to_line()
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(line in "\\PC{0,200}") {
                let _ = JournalEntry::parse(&line);
            }

            #[test]
            fn valid_entries_roundtrip(
                ts in any::<i64>(),
                class in "[a-z.]{1,20}/[a-z]{0,20}/[a-z]{0,20}",
                eid in "[0-9a-f]{32}",
            ) {
                let e = JournalEntry::new(crate::ids::random_id(), ts, &class, &eid, "boot").unwrap();
                prop_assert_eq!(JournalEntry::parse(&e.to_line()).unwrap(), e);
            }
        }
    }
}
