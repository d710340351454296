//! The machine id telemprobd writes into every record (§4.4).
//!
//! * `/var/lib/telemetry/machine_id` holds 32 lower-case hex characters (no newline). It is
//!   generated when missing and regenerated when its mtime is more than 3 days old; that
//!   check runs at startup and then at most once an hour, before a record is staged.
//! * `/etc/telemetrics/opt-in-static-machine-id`, when present and not empty, overrides it:
//!   its first ≤ 32 bytes, cut at the first newline. Read at startup and on SIGHUP (the C
//!   daemon needed a restart).
//! * If neither can be read, the id is `0`.
//!
//! Clocks are passed in (`Instant` for the hourly check, wall time for the file's age), so
//! the rotation is tested without waiting.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::Paths;

/// A machine id file older than this is replaced (C: 259200 s).
pub const ROTATION_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// The file's age is checked at most this often (C: 3600 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest machine id used.
pub const MAX_ID_LEN: usize = 32;
/// The id used when no file can be read.
pub const FALLBACK_ID: &str = "0";

/// The machine id source, with the value cached between checks.
#[derive(Debug)]
pub struct MachineId {
    paths: Paths,
    static_id: Option<String>,
    file_id: Option<String>,
    last_check: Option<Instant>,
}

impl MachineId {
    /// Reads the static override; the rotating file is checked on first use.
    pub fn new(paths: Paths) -> MachineId {
        let mut m = MachineId {
            paths,
            static_id: None,
            file_id: None,
            last_check: None,
        };
        m.reload_static();
        m
    }

    /// Re-read the static override file.
    pub fn reload_static(&mut self) {
        self.static_id = read_static_id(&self.paths.static_machine_id_file());
    }

    /// The id for a record staged at `now` / `wall`: runs the rotation check when it is due.
    pub fn current(&mut self, now: Instant, wall: SystemTime) -> &str {
        let due = match self.last_check {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= CHECK_INTERVAL,
        };
        if due {
            self.refresh(wall);
            self.last_check = Some(now);
        }
        self.static_id
            .as_deref()
            .or(self.file_id.as_deref())
            .unwrap_or(FALLBACK_ID)
    }

    /// `update_machine_id()`: (re)generate the file when missing or too old, then cache its
    /// value.
    pub fn refresh(&mut self, wall: SystemTime) {
        let file = self.paths.machine_id_file();
        let regenerate = match std::fs::metadata(&file) {
            Ok(md) => match md.modified() {
                Ok(mtime) => wall
                    .duration_since(mtime)
                    .is_ok_and(|age| age > ROTATION_AGE),
                Err(_) => false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!("cannot stat machine id file {}: {e}", file.display());
                false
            }
        };
        if regenerate {
            let id = libtelemetry::ids::random_id();
            match libtelemetry::fsutil::write_atomic(&file, id.as_bytes(), 0o644) {
                Ok(()) => tracing::info!("new machine id written to {}", file.display()),
                Err(e) => {
                    tracing::warn!("cannot write machine id file {}: {e}", file.display())
                }
            }
        }
        self.file_id = read_file_id(&file);
    }
}

/// First ≤ 32 bytes of the override, cut at the first newline; empty means absent.
fn read_static_id(path: &Path) -> Option<String> {
    let bytes = read_prefix(path, MAX_ID_LEN)?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    (!line.is_empty()).then(|| String::from_utf8_lossy(line).into_owned())
}

/// First whitespace-delimited token, at most 32 characters.
fn read_file_id(path: &Path) -> Option<String> {
    let bytes = read_prefix(path, 256)?;
    let token = bytes
        .split(|b| b.is_ascii_whitespace())
        .find(|t| !t.is_empty())?;
    let token = &token[..token.len().min(MAX_ID_LEN)];
    Some(String::from_utf8_lossy(token).into_owned())
}

fn read_prefix(path: &Path, limit: usize) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(limit);
    file.take(limit as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn setup() -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path(), "/");
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        std::fs::create_dir_all(paths.etc_dir()).unwrap();
        (d, paths)
    }

    fn set_age(path: &Path, age: Duration) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn generated_when_missing_and_kept_while_young() {
        let (_d, paths) = setup();
        let mut m = MachineId::new(paths.clone());
        let t0 = Instant::now();
        let id = m.current(t0, SystemTime::now()).to_string();
        assert_eq!(id.len(), 32);
        assert!(libtelemetry::record::validate_event_id(&id).is_ok());
        assert_eq!(
            std::fs::read_to_string(paths.machine_id_file()).unwrap(),
            id
        );
        set_age(&paths.machine_id_file(), Duration::from_secs(2 * 24 * 3600));
        m.refresh(SystemTime::now());
        assert_eq!(m.current(t0, SystemTime::now()), id, "2 days old: kept");
    }

    #[test]
    fn rotated_after_three_days_at_the_next_hourly_check() {
        let (_d, paths) = setup();
        let mut m = MachineId::new(paths.clone());
        let t0 = Instant::now();
        let first = m.current(t0, SystemTime::now()).to_string();
        set_age(
            &paths.machine_id_file(),
            ROTATION_AGE + Duration::from_secs(60),
        );
        // Not yet an hour since the last check: the cached id stays.
        let later = t0 + Duration::from_secs(3599);
        assert_eq!(m.current(later, SystemTime::now()), first);
        // An hour later the check runs and rotates.
        let due = t0 + CHECK_INTERVAL;
        let second = m.current(due, SystemTime::now()).to_string();
        assert_ne!(second, first);
        assert_eq!(
            std::fs::read_to_string(paths.machine_id_file()).unwrap(),
            second
        );
        // A clock that says the file is 3 days old rotates it too (wall time injected).
        let third = {
            m.refresh(SystemTime::now() + ROTATION_AGE + Duration::from_secs(1));
            m.current(due, SystemTime::now()).to_string()
        };
        assert_ne!(third, second);
    }

    #[test]
    fn static_override_and_fallback() {
        let (_d, paths) = setup();
        std::fs::write(
            paths.static_machine_id_file(),
            "static-id-0123456789abcdef0123456789-too-long\nsecond line",
        )
        .unwrap();
        let mut m = MachineId::new(paths.clone());
        assert_eq!(
            m.current(Instant::now(), SystemTime::now()),
            "static-id-0123456789abcdef012345"
        );
        std::fs::write(paths.static_machine_id_file(), "abc\n").unwrap();
        m.reload_static();
        assert_eq!(m.current(Instant::now(), SystemTime::now()), "abc");
        std::fs::write(paths.static_machine_id_file(), "").unwrap();
        m.reload_static();
        assert_ne!(m.current(Instant::now(), SystemTime::now()), "");

        // No state dir: nothing can be written or read.
        let d = tempfile::tempdir().unwrap();
        let mut none = MachineId::new(Paths::new(d.path(), "/"));
        assert_eq!(none.current(Instant::now(), SystemTime::now()), FALLBACK_ID);
    }

    #[test]
    fn file_token_is_bounded() {
        let (_d, paths) = setup();
        std::fs::write(
            paths.machine_id_file(),
            format!("  {}  x\n", "a".repeat(40)),
        )
        .unwrap();
        let mut m = MachineId::new(paths);
        assert_eq!(m.current(Instant::now(), SystemTime::now()), "a".repeat(32));
    }
}
