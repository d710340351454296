//! The writer thread: journal entries, retention copies, spool-directory syncs and the status
//! file, all of which fsync, are written here so the event loop never waits on a disk.
//! Messages are handled in order; [`Persister::finish`] waits until everything sent before
//! it is on disk.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtelemetry::status::{status_file, write_status, DaemonStatus};
use libtelemetry::{Paths, StagedRecord};

use super::journal::RecordJournal;

enum Msg {
    Journal(Box<StagedRecord>, i64),
    Retention(bool),
    SyncDir(PathBuf),
    Status(Box<DaemonStatus>),
    Finish(mpsc::Sender<()>),
}

/// Handle of the writer thread.
pub struct Persister {
    tx: mpsc::Sender<Msg>,
}

impl Persister {
    pub fn start(paths: &Paths, retention: bool) -> std::io::Result<Persister> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut journal = RecordJournal::new(paths, retention);
        let status_path = status_file(paths, "telempostd");
        let counters_path = super::counters::counters_file(paths);
        std::thread::Builder::new()
            .name("persist".into())
            .stack_size(128 * 1024)
            .spawn(move || loop {
                let wait = journal.deadline().map_or(Duration::from_secs(3600), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                match rx.recv_timeout(wait) {
                    Ok(Msg::Journal(staged, time)) => journal.add(&staged, time),
                    Ok(Msg::Retention(on)) => journal.set_retention(on),
                    Ok(Msg::SyncDir(dir)) => {
                        if let Err(e) = libtelemetry::fsutil::fsync_dir(&dir) {
                            tracing::warn!("cannot sync {}: {e}", dir.display());
                        }
                    }
                    Ok(Msg::Status(s)) => {
                        if let Some(parent) = status_path.parent() {
                            let _ = std::fs::create_dir_all(parent);
                        }
                        if let Err(e) = super::counters::write_counters(&counters_path, &s.counters)
                        {
                            tracing::warn!("cannot write {}: {e}", counters_path.display());
                        }
                        if let Err(e) = write_status(&status_path, &s) {
                            tracing::warn!("cannot write {}: {e}", status_path.display());
                        }
                    }
                    Ok(Msg::Finish(ack)) => {
                        journal.flush();
                        let _ = ack.send(());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        journal.flush();
                        return;
                    }
                }
                journal.flush_if_due(Instant::now());
            })?;
        Ok(Persister { tx })
    }

    /// Journal (and retain) a record processed at `time` (seconds since the epoch).
    pub fn journal(&self, staged: StagedRecord, time: i64) {
        let _ = self.tx.send(Msg::Journal(Box::new(staged), time));
    }

    pub fn set_retention(&self, on: bool) {
        let _ = self.tx.send(Msg::Retention(on));
    }

    /// Make the unlinks done so far in `dir` durable.
    pub fn sync_dir(&self, dir: PathBuf) {
        let _ = self.tx.send(Msg::SyncDir(dir));
    }

    pub fn status(&self, status: DaemonStatus) {
        let _ = self.tx.send(Msg::Status(Box::new(status)));
    }

    /// Wait (up to `timeout`) until everything sent so far is written.
    pub fn finish(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        self.tx.send(Msg::Finish(ack)).is_ok() && done.recv_timeout(timeout).is_ok()
    }
}
