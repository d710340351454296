//! Failed delivery attempts per file, kept across runs (the `.path` unit starts a new
//! process for each drain), so a file that keeps failing reaches the quarantine.
//!
//! One line per file: `<attempts> <file name>`. Written atomically.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest tries file read; entries beyond it are forgotten (they start again at 0).
const MAX_TRIES_FILE: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct Tries {
    path: PathBuf,
    counts: BTreeMap<String, u32>,
    dirty: bool,
}

impl Tries {
    pub fn load(path: &Path) -> Tries {
        let mut text = String::new();
        if let Err(e) =
            std::fs::File::open(path).and_then(|f| f.take(MAX_TRIES_FILE).read_to_string(&mut text))
        {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot read {}: {e}", path.display());
            }
        }
        let counts = text
            .lines()
            .filter_map(|l| {
                let (n, name) = l.split_once(' ')?;
                Some((name.to_string(), n.parse().ok()?))
            })
            .collect();
        Tries {
            path: path.to_path_buf(),
            counts,
            dirty: false,
        }
    }

    /// Where the counts are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, name: &str) -> u32 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Count one more failed attempt; returns the new count.
    pub fn fail(&mut self, name: &str) -> u32 {
        let n = self.counts.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        self.dirty = true;
        *n
    }

    pub fn forget(&mut self, name: &str) {
        if self.counts.remove(name).is_some() {
            self.dirty = true;
        }
    }

    /// Drop entries of files that no longer exist.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let before = self.counts.len();
        self.counts.retain(|k, _| keep(k));
        self.dirty |= before != self.counts.len();
    }

    /// Write the file if anything changed (an empty table removes it).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let result = if self.counts.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let text: String = self
                .counts
                .iter()
                .map(|(name, n)| format!("{n} {name}\n"))
                .collect();
            self.path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    libtelemetry::fsutil::write_atomic(&self.path, text.as_bytes(), 0o600)
                })
        };
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!("cannot write {}: {e}", self.path.display()),
        }
    }
}
