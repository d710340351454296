//! The record journal and retention copies as telempostd writes them (§6): one entry per
//! record delivered, dropped by the `drop` strategy, or kept local — including records
//! delivered from the spool, which the C daemon left out.
//!
//! Entries are buffered briefly and written in batches with
//! `libtelemetry::journal::append_journal` (atomic replace, pruned to 100 above 150 entries,
//! retention copies pruned with their entries). A crash may lose the entries of the last
//! [`FLUSH_INTERVAL`], never tear a line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use libtelemetry::journal::{append_journal, read_boot_id, write_retention_copy, JournalEntry};
use libtelemetry::record::Header;
use libtelemetry::{Paths, StagedRecord};

/// Longest time an entry waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Entries buffered at most (more than a journal holds).
const MAX_PENDING: usize = 200;

pub struct RecordJournal {
    paths: Paths,
    path: PathBuf,
    /// `Some` when retention is enabled.
    records_dir: Option<PathBuf>,
    pending: Vec<JournalEntry>,
    oldest_pending: Option<Instant>,
    /// Read once: a daemon never outlives a boot.
    boot_id: Option<String>,
}

impl RecordJournal {
    pub fn new(paths: &Paths, retention: bool) -> RecordJournal {
        RecordJournal {
            paths: paths.clone(),
            path: paths.journal_file(),
            records_dir: retention.then(|| paths.records_dir()),
            pending: Vec::new(),
            oldest_pending: None,
            boot_id: None,
        }
    }

    pub fn set_retention(&mut self, retention: bool) {
        self.records_dir = retention.then(|| self.paths.records_dir());
    }

    /// Journal `staged` (processed `now`, seconds since the epoch) and retain its body.
    /// Entries the journal format refuses (invalid classification or event id) or that have
    /// no boot id are skipped, as in C, and then no copy is written (C overwrote the copy of
    /// the previous record).
    pub fn add(&mut self, staged: &StagedRecord, now: i64) {
        if self.boot_id.is_none() {
            match read_boot_id(&self.paths) {
                Ok(b) => self.boot_id = Some(b),
                Err(e) => {
                    tracing::warn!("no journal entry: cannot read boot id: {e}");
                    return;
                }
            }
        }
        let boot_id = self.boot_id.as_deref().unwrap_or_default();
        let entry = match JournalEntry::new(
            libtelemetry::ids::random_id(),
            now,
            staged.headers.get(Header::Classification),
            staged.headers.get(Header::EventId),
            boot_id,
        ) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("no journal entry: {e}");
                return;
            }
        };
        if let Some(dir) = &self.records_dir {
            if let Err(e) = std::fs::create_dir_all(dir)
                .and_then(|_| write_retention_copy(dir, &entry.record_id, &staged.body))
            {
                tracing::warn!("cannot retain record {}: {e}", entry.record_id);
            }
        }
        if self.pending.len() >= MAX_PENDING {
            self.flush();
        }
        self.pending.push(entry);
        self.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// When the buffered entries must be written.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest_pending.map(|t| t + FLUSH_INTERVAL)
    }

    pub fn flush_if_due(&mut self, now: Instant) {
        if self.deadline().is_some_and(|d| d <= now) {
            self.flush();
        }
    }

    /// Write the buffered entries now.
    pub fn flush(&mut self) {
        self.oldest_pending = None;
        if self.pending.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.pending);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match append_journal(&self.path, &entries, self.records_dir.as_deref()) {
            Ok(r) if !r.pruned.is_empty() => {
                tracing::debug!("journal pruned by {} entries", r.pruned.len())
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "cannot write the journal {}: {e}; {} entries lost",
                self.path.display(),
                entries.len()
            ),
        }
    }
}
