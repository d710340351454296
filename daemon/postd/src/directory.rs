//! The directory side of telempostd: the watch on the spool dir, looking at and reading
//! staged files, scans, deleting, quarantining, the files left alone, and the switch to a
//! new `spool_dir` (with the sweep of the previous ones). The event loop performs the
//! scheduler's file actions here and turns what it finds into scheduler events.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use libtelemetry::{parse_staged, StagedRecord};

use super::input::Input;
use super::pickup::{self, PickupError, Watcher};
use super::sched::{Found, Inspection, ReadFailure};

pub struct SpoolDirectory {
    dir: PathBuf,
    /// The watch on `dir`, and its generation (events of a stopped watch are ignored).
    watcher: Option<Watcher>,
    generation: u64,
    /// Spool dirs used before a SIGHUP changed `spool_dir`: records still appearing there
    /// are moved into the current one at each rescan.
    previous: Vec<PathBuf>,
    /// Files that could be neither read, deleted nor quarantined; left alone until
    /// restart.
    ignored: HashSet<String>,
    /// For new watches.
    tx: mpsc::Sender<Input>,
}

/// Create the spool dir (and its parents) when it does not exist.
pub fn create_spool_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).create(dir)
}

impl SpoolDirectory {
    /// Watch `dir`; its events go to `tx`.
    pub fn watch(dir: PathBuf, tx: mpsc::Sender<Input>) -> std::io::Result<SpoolDirectory> {
        let watcher = pickup::spawn_watcher(&dir, tx.clone(), |ev| Input::Watch(0, ev))?;
        Ok(SpoolDirectory {
            dir,
            watcher: Some(watcher),
            generation: 0,
            previous: Vec::new(),
            ignored: HashSet::new(),
            tx,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an event of watch `generation` is about the current spool dir.
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// A look at `name`: `None` when it is left alone, or on a passing error (logged).
    pub fn inspect(&self, name: &str) -> Option<Inspection> {
        if self.ignored.contains(name) {
            return None;
        }
        match pickup::inspect(&self.dir, name) {
            Ok(info) => Some(Inspection::Found(Found {
                created: info.created,
                size: info.size,
                len: info.len,
                age: SystemTime::now()
                    .duration_since(info.mtime)
                    .unwrap_or(Duration::ZERO),
            })),
            Err(PickupError::Vanished) => Some(Inspection::Vanished),
            Err(e) if e.is_permanent() => Some(Inspection::Refused(e.to_string())),
            Err(e) => {
                tracing::warn!("cannot inspect {name}: {e}");
                None
            }
        }
    }

    /// The staged names in the spool dir, after moving in what previous dirs hold;
    /// `None` when it cannot be listed (logged).
    pub fn scan(&self) -> Option<Vec<String>> {
        self.sweep_previous(false);
        match pickup::scan(&self.dir) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("cannot scan {}: {e}", self.dir.display());
                None
            }
        }
    }

    /// Read and parse a record.
    pub fn read(&self, name: &str) -> Result<Box<StagedRecord>, ReadFailure> {
        match pickup::read(&self.dir, name) {
            Ok((bytes, _)) => parse_staged(&bytes)
                .map(Box::new)
                .map_err(|e| ReadFailure::Refused(format!("cannot parse: {e}"))),
            Err(PickupError::Vanished) => Err(ReadFailure::Vanished),
            Err(e) if e.is_permanent() => Err(ReadFailure::Refused(e.to_string())),
            Err(e) => Err(ReadFailure::Passing(e.to_string())),
        }
    }

    /// Move `name` to the quarantine: where it went, or `None` when it could not be moved
    /// (then it is left alone until restart).
    pub fn quarantine(&mut self, name: &str, reason: &str) -> Option<PathBuf> {
        match pickup::quarantine(&self.dir, OsStr::new(name)) {
            Ok(to) => Some(to),
            Err(e) => {
                tracing::error!("cannot quarantine {name} ({reason}): {e}; ignoring it");
                self.ignored.insert(name.to_string());
                None
            }
        }
    }

    /// Delete a record's file; one that cannot be deleted is left alone until restart, so
    /// it is never sent twice.
    pub fn delete(&mut self, name: &str) {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!("cannot delete {name}: {e}; ignoring it from now on");
                self.ignored.insert(name.to_string());
            }
        }
    }

    /// Leave `name` alone until restart.
    pub fn ignore(&mut self, name: String) {
        self.ignored.insert(name);
    }

    pub fn shrink_to_fit(&mut self) {
        self.ignored.shrink_to_fit();
    }

    /// Use `new` (no job in flight): watch it, move the records left in the current dir
    /// into it (same names, same creation times). False when `new` cannot be watched: the
    /// current dir stays in use.
    pub fn switch(&mut self, new: PathBuf) -> bool {
        let generation = self.generation + 1;
        let watcher = match pickup::spawn_watcher(&new, self.tx.clone(), move |ev| {
            Input::Watch(generation, ev)
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot watch the new spool_dir {}: {e}; keeping {}",
                    new.display(),
                    self.dir.display()
                );
                return false;
            }
        };
        if let Some(old) = self.watcher.replace(watcher) {
            old.stop();
        }
        self.generation = generation;
        let previous = std::mem::replace(&mut self.dir, new.clone());
        self.previous.retain(|d| *d != new);
        if !self.previous.contains(&previous) {
            self.previous.push(previous);
        }
        self.ignored.clear();
        self.sweep_previous(true);
        true
    }

    /// Move records found in previous spool dirs into the current one: those left at the
    /// switch, and any a telemprobd that had not reloaded yet staged there since. Records
    /// that cannot be moved (another filesystem, a name taken) stay, logged as a warning
    /// when `loud` (at the switch), quietly afterwards.
    fn sweep_previous(&self, loud: bool) {
        for dir in &self.previous {
            match pickup::move_records(dir, &self.dir) {
                Ok(report) => {
                    if report.moved > 0 {
                        tracing::info!(
                            "moved {} records from the previous spool_dir {} into {}",
                            report.moved,
                            dir.display(),
                            self.dir.display()
                        );
                    }
                    for (name, e) in report.left {
                        if loud {
                            tracing::warn!(
                                "cannot move {name} from the previous spool_dir {}: {e}; \
                                 it stays there, undelivered",
                                dir.display()
                            );
                        } else {
                            tracing::debug!("cannot move {name} from {}: {e}", dir.display());
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::debug!("cannot sweep {}: {e}", dir.display()),
            }
        }
    }
}
