//! The daemons' status files: counters and last results that `telemctl status` reports.
//!
//! Each daemon owns one JSON file, `<state_dir>/<daemon>.status` (state_dir =
//! `/var/lib/telemetry` under `TELEMETRICS_ROOT`), replaced atomically with
//! [`crate::fsutil::write_atomic`]. Counter names in use are the `COUNTER_*` constants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

/// Largest status file read.
pub const MAX_STATUS_SIZE: usize = 64 * 1024;

pub const COUNTER_STAGED: &str = "staged";
pub const COUNTER_REJECTED: &str = "rejected";
pub const COUNTER_DELIVERED: &str = "delivered";
pub const COUNTER_SPOOLED: &str = "spooled";
pub const COUNTER_EXPIRED: &str = "expired";
pub const COUNTER_EVICTED: &str = "evicted";
pub const COUNTER_DROPPED: &str = "dropped";
pub const COUNTER_QUARANTINED: &str = "quarantined";
pub const COUNTER_FAILED_ATTEMPTS: &str = "failed_attempts";
/// Records telempostd kept local because `record_server_delivery_enabled` is false.
pub const COUNTER_LOCAL: &str = "local";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDelivery {
    /// Seconds since the epoch.
    pub time: i64,
    pub ok: bool,
    /// e.g. `HTTP 201`, `connection refused`.
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub daemon: String,
    pub version: String,
    pub pid: u32,
    /// Seconds since the epoch.
    pub started: i64,
    pub updated: i64,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    #[serde(default)]
    pub last_delivery: Option<LastDelivery>,
}

impl DaemonStatus {
    pub fn new(daemon: &str) -> DaemonStatus {
        let now = now_secs();
        DaemonStatus {
            daemon: daemon.to_string(),
            version: crate::VERSION.to_string(),
            pid: std::process::id(),
            started: now,
            updated: now,
            ..Default::default()
        }
    }

    pub fn add(&mut self, counter: &str, n: u64) {
        *self.counters.entry(counter.to_string()).or_default() += n;
    }

    pub fn counter(&self, counter: &str) -> u64 {
        self.counters.get(counter).copied().unwrap_or(0)
    }
}

/// `<state_dir>/<daemon>.status`.
pub fn status_file(paths: &Paths, daemon: &str) -> PathBuf {
    paths.state_dir().join(format!("{daemon}.status"))
}

/// Replace the status file atomically.
pub fn write_status(path: &Path, status: &DaemonStatus) -> std::io::Result<()> {
    let mut s = status.clone();
    s.updated = now_secs();
    let json = serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &json, 0o644)
}

/// Read a status file; a missing file is `Ok(None)`. At most [`MAX_STATUS_SIZE`] + 1 bytes
/// are read, so whatever sits at the path cannot make the reader allocate more.
pub fn read_status(path: &Path) -> std::io::Result<Option<DaemonStatus>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATUS_SIZE as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_STATUS_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "status file too large",
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path(), "/");
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let p = status_file(&paths, "telempostd");
        assert_eq!(read_status(&p).unwrap(), None);
        let mut s = DaemonStatus::new("telempostd");
        s.add(COUNTER_DELIVERED, 3);
        s.last_delivery = Some(LastDelivery {
            time: 1,
            ok: true,
            detail: "HTTP 201".into(),
        });
        write_status(&p, &s).unwrap();
        let r = read_status(&p).unwrap().unwrap();
        assert_eq!(r.counter(COUNTER_DELIVERED), 3);
        assert_eq!(r.last_delivery, s.last_delivery);

        // Oversized or malformed files are errors, never panics.
        std::fs::write(&p, vec![b' '; MAX_STATUS_SIZE + 10]).unwrap();
        assert_eq!(
            read_status(&p).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        std::fs::write(&p, "{not json").unwrap();
        assert!(read_status(&p).is_err());
    }
}
