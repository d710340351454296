//! telempostd's counters and last delivery result, for its status file
//! (`<state_dir>/telempostd.status`, written by the `persist` thread) at most once
//! per [`WRITE_INTERVAL`] and at exit.
//!
//! The counters are totals over the daemon's life across restarts: the persist thread
//! writes them durably to `<state_dir>/telempostd.counters` with each status write, and a
//! start reads them back ([`Counters::restored`]). That file is read bounded
//! ([`MAX_COUNTERS_SIZE`], at most [`MAX_COUNTERS`] names), without following a symlink
//! or waiting on a FIFO; a file that is missing starts from zero, one that is not valid
//! starts from zero with a warning.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libtelemetry::status::{DaemonStatus, LastDelivery};
use libtelemetry::Paths;

/// Largest counters file read.
pub const MAX_COUNTERS_SIZE: u64 = 16 * 1024;
/// Most counter names kept from the file.
pub const MAX_COUNTERS: usize = 64;

/// `<state_dir>/telempostd.counters`.
pub fn counters_file(paths: &Paths) -> PathBuf {
    paths.state_dir().join("telempostd.counters")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CountersFile {
    counters: BTreeMap<String, u64>,
}

/// Write the counters durably (temp, fsync, rename, fsync dir).
pub fn write_counters(path: &Path, counters: &BTreeMap<String, u64>) -> std::io::Result<()> {
    let json = serde_json::to_vec(&CountersFile {
        counters: counters.clone(),
    })
    .map_err(std::io::Error::other)?;
    libtelemetry::fsutil::write_atomic(path, &json, 0o644)
}

/// Read the counters a previous run left; `Ok(None)` when there is no file.
pub fn read_counters(path: &Path) -> Result<Option<BTreeMap<String, u64>>, String> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let md = file.metadata().map_err(|e| e.to_string())?;
    if !md.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_COUNTERS_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_COUNTERS_SIZE {
        return Err(format!("larger than {MAX_COUNTERS_SIZE} bytes"));
    }
    let parsed: CountersFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if parsed.counters.len() > MAX_COUNTERS || parsed.counters.keys().any(|k| k.len() > 64) {
        return Err("too many or too long counter names".into());
    }
    Ok(Some(parsed.counters))
}

pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

pub use libtelemetry::status::COUNTER_LOCAL;

pub struct Counters {
    status: DaemonStatus,
    dirty: bool,
    last_write: Instant,
}

impl Counters {
    /// Counters continuing the totals a previous run left in `paths`' state dir.
    pub fn restored(paths: &Paths) -> Counters {
        let mut c = Counters::new();
        let path = counters_file(paths);
        match read_counters(&path) {
            Ok(Some(totals)) => c.status.counters = totals,
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot use the counters of the previous run in {}: {e}; starting from zero",
                path.display()
            ),
        }
        c
    }

    pub fn new() -> Counters {
        Counters {
            status: DaemonStatus::new("telempostd"),
            dirty: true,
            // Due at once: the first write announces the daemon.
            last_write: Instant::now()
                .checked_sub(WRITE_INTERVAL)
                .unwrap_or_else(Instant::now),
        }
    }

    pub fn add(&mut self, counter: &str, n: u64) {
        self.status.add(counter, n);
        self.dirty = true;
    }

    pub fn get(&self, counter: &str) -> u64 {
        self.status.counter(counter)
    }

    /// The last POST's result, answered at `time` (Unix seconds).
    pub fn last_delivery(&mut self, time: i64, ok: bool, detail: String) {
        self.status.last_delivery = Some(LastDelivery { time, ok, detail });
        self.dirty = true;
    }

    /// When the next write is due (None when nothing changed).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(self.last_write + WRITE_INTERVAL)
    }

    /// The status to write when a write is due (and mark it written).
    pub fn due(&mut self, now: Instant) -> Option<DaemonStatus> {
        if self.deadline().is_some_and(|d| d <= now) {
            Some(self.snapshot(now))
        } else {
            None
        }
    }

    /// The status to write at `now` (and mark it written).
    pub fn snapshot(&mut self, now: Instant) -> DaemonStatus {
        self.last_write = now;
        self.dirty = false;
        self.status.clone()
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_and_bad_files_start_from_zero() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path(), "/");
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        assert_eq!(Counters::restored(&paths).get("delivered"), 0);
        let mut c = Counters::restored(&paths);
        c.add("delivered", 7);
        write_counters(&counters_file(&paths), &c.snapshot(Instant::now()).counters).unwrap();
        let mut again = Counters::restored(&paths);
        assert_eq!(again.get("delivered"), 7);
        again.add("delivered", 1);
        assert_eq!(again.snapshot(Instant::now()).counter("delivered"), 8);
        let path = counters_file(&paths);
        for bad in [
            &b"{not json"[..],
            br#"{"counters":{"delivered":-1}}"#,
            &vec![b' '; MAX_COUNTERS_SIZE as usize + 1],
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_counters(&path).is_err());
            assert_eq!(Counters::restored(&paths).get("delivered"), 0);
        }
        let many: BTreeMap<String, u64> =
            (0..MAX_COUNTERS + 1).map(|i| (i.to_string(), 1)).collect();
        write_counters(&path, &many).unwrap();
        assert!(read_counters(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_counters(&path).is_err(), "a FIFO, without blocking");
    }
}
