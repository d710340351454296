//! Every fixed filesystem location of the suite, resolved under two roots.
//!
//! * `TELEMETRICS_ROOT` (default `/`) holds the suite's own files: `/etc/telemetrics`,
//!   `/usr/share/defaults/telemetrics`, `/var/lib/telemetry`, `/var/spool/telemetry`,
//!   `/var/log/telemetry`, `/var/cache/telemetry`, `/run/telem-0`.
//! * `TELEMETRICS_HOST_ROOT` (default `/`) holds the host facts read for record headers and by
//!   probes: `/etc/os-release`, `/usr/lib/os-release`, `/sys/...`, `/proc/...`, `/dev/...`.
//!
//! Architecture Invariant: no other module of the suite spells one of these absolute paths;
//! they all ask a [`Paths`] value, so tests and the quick start run in a temp dir.

use std::path::{Path, PathBuf};

/// Environment variable naming the root of the suite's own files.
pub const ROOT_ENV: &str = "TELEMETRICS_ROOT";
/// Environment variable naming the root of the host facts (`/sys`, `/proc`, os-release).
pub const HOST_ROOT_ENV: &str = "TELEMETRICS_HOST_ROOT";

/// Name of the quarantine subdirectory of a directory a daemon or probe consumes (the spool
/// dir for telempostd, the drop dir for swupdprobe): files it could never use are moved
/// there. Hidden, so systemd's `DirectoryNotEmpty=` ignores it.
pub const QUARANTINE_DIR: &str = ".quarantine";

/// Resolved roots. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
    host_root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths::new("/", "/")
    }
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>, host_root: impl Into<PathBuf>) -> Self {
        Paths {
            root: root.into(),
            host_root: host_root.into(),
        }
    }

    /// Roots from `TELEMETRICS_ROOT` / `TELEMETRICS_HOST_ROOT`; an unset or empty variable
    /// means `/`.
    pub fn from_env() -> Self {
        let var = |name: &str| match std::env::var_os(name) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from("/"),
        };
        Paths::new(var(ROOT_ENV), var(HOST_ROOT_ENV))
    }

    /// True when the suite's root is not `/` (tests, the quick start): root-only commands
    /// may then run unprivileged.
    pub fn is_relocated(&self) -> bool {
        self.root != Path::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    /// `abs` (an absolute path like `/var/spool/telemetry`) under the suite root.
    pub fn under_root(&self, abs: &str) -> PathBuf {
        join_under(&self.root, abs)
    }

    /// `abs` (an absolute path like `/proc/cpuinfo`) under the host root.
    pub fn under_host(&self, abs: &str) -> PathBuf {
        join_under(&self.host_root, abs)
    }

    // --- the suite's own files -------------------------------------------------------

    pub fn etc_dir(&self) -> PathBuf {
        self.under_root("/etc/telemetrics")
    }
    pub fn opt_in_file(&self) -> PathBuf {
        self.under_root("/etc/telemetrics/opt-in")
    }
    pub fn static_machine_id_file(&self) -> PathBuf {
        self.under_root("/etc/telemetrics/opt-in-static-machine-id")
    }
    pub fn no_privacy_filters_file(&self) -> PathBuf {
        self.under_root("/etc/telemetrics/opt-in-no-privacy-filters")
    }
    /// Admin config, `/etc/telemetrics/telemetrics.conf`.
    pub fn etc_config_file(&self) -> PathBuf {
        self.under_root("/etc/telemetrics/telemetrics.conf")
    }
    /// Distribution default config, `/usr/share/defaults/telemetrics/telemetrics.conf`.
    pub fn default_config_file(&self) -> PathBuf {
        self.under_root("/usr/share/defaults/telemetrics/telemetrics.conf")
    }
    /// Default `socket_path`.
    pub fn default_socket_path(&self) -> PathBuf {
        self.under_root("/run/telem-0")
    }
    /// Default `spool_dir`.
    pub fn default_spool_dir(&self) -> PathBuf {
        self.under_root("/var/spool/telemetry")
    }
    /// `/var/lib/telemetry`: machine id and the daemons' status files.
    pub fn state_dir(&self) -> PathBuf {
        self.under_root("/var/lib/telemetry")
    }
    /// crashprobe's crash-loop counts (`crashloop` module).
    pub fn crash_loop_file(&self) -> PathBuf {
        self.under_root("/var/lib/telemetry/crash-loops")
    }
    /// The lock crashprobe holds while it updates [`Self::crash_loop_file`].
    pub fn crash_loop_lock_file(&self) -> PathBuf {
        self.under_root("/var/lib/telemetry/crash-loops.lock")
    }
    /// crashprobe's cache of files fetched from debuginfod servers.
    pub fn debuginfod_cache_dir(&self) -> PathBuf {
        self.under_root("/var/lib/telemetry/debuginfod")
    }
    pub fn machine_id_file(&self) -> PathBuf {
        self.under_root("/var/lib/telemetry/machine_id")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.under_root("/var/log/telemetry")
    }
    pub fn journal_file(&self) -> PathBuf {
        self.under_root("/var/log/telemetry/journal")
    }
    /// Retained payload copies, `records/<record_id>`.
    pub fn records_dir(&self) -> PathBuf {
        self.under_root("/var/log/telemetry/records")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.under_root("/var/cache/telemetry")
    }
    pub fn pstore_cache_dir(&self) -> PathBuf {
        self.under_root("/var/cache/telemetry/pstore")
    }
    /// swupd's telemetry drop directory.
    pub fn swupd_dir(&self) -> PathBuf {
        self.under_root("/var/lib/swupd/telemetry")
    }

    // --- host facts ----------------------------------------------------------------

    /// os-release candidates, in the order they are tried.
    pub fn os_release_files(&self) -> [PathBuf; 2] {
        [
            self.under_host("/etc/os-release"),
            self.under_host("/usr/lib/os-release"),
        ]
    }
    pub fn dmi_dir(&self) -> PathBuf {
        self.under_host("/sys/class/dmi/id")
    }
    pub fn cpuinfo_file(&self) -> PathBuf {
        self.under_host("/proc/cpuinfo")
    }
    pub fn boot_id_file(&self) -> PathBuf {
        self.under_host("/proc/sys/kernel/random/boot_id")
    }
    pub fn sys_dir(&self) -> PathBuf {
        self.under_host("/sys")
    }
    pub fn proc_dir(&self) -> PathBuf {
        self.under_host("/proc")
    }
    pub fn dev_dir(&self) -> PathBuf {
        self.under_host("/dev")
    }
}

fn join_under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_give_the_c_paths() {
        let p = Paths::default();
        assert_eq!(p.opt_in_file(), Path::new("/etc/telemetrics/opt-in"));
        assert_eq!(p.default_socket_path(), Path::new("/run/telem-0"));
        assert_eq!(p.journal_file(), Path::new("/var/log/telemetry/journal"));
        assert_eq!(p.cpuinfo_file(), Path::new("/proc/cpuinfo"));
        assert!(!p.is_relocated());
    }

    #[test]
    fn relocated_roots() {
        let p = Paths::new("/tmp/r", "/tmp/h");
        assert_eq!(
            p.default_spool_dir(),
            Path::new("/tmp/r/var/spool/telemetry")
        );
        assert_eq!(p.dmi_dir(), Path::new("/tmp/h/sys/class/dmi/id"));
        assert!(p.is_relocated());
    }
}
