//! A sysfs tree of CPUs with `thermal_throttle` counters and package topology.

use std::path::{Path, PathBuf};

/// `<root>/devices/system/cpu/cpuN/...`.
pub struct SysTree {
    pub root: PathBuf,
}

/// Counter files written for a CPU; `None` leaves the file out.
#[derive(Clone, Copy, Default)]
pub struct Counters {
    pub core: Option<u64>,
    pub core_total_ms: Option<u64>,
    pub core_max_ms: Option<u64>,
    pub package: Option<u64>,
    pub package_total_ms: Option<u64>,
    pub package_max_ms: Option<u64>,
}

impl Counters {
    /// Counts only (kernels before the time files).
    pub fn counts(core: u64, package: u64) -> Counters {
        Counters {
            core: Some(core),
            package: Some(package),
            ..Counters::default()
        }
    }

    /// Counts and times.
    pub fn full(core: u64, core_ms: u64, package: u64, package_ms: u64) -> Counters {
        Counters {
            core: Some(core),
            core_total_ms: Some(core_ms),
            core_max_ms: Some(core_ms / 2),
            package: Some(package),
            package_total_ms: Some(package_ms),
            package_max_ms: Some(package_ms / 2),
        }
    }
}

impl SysTree {
    pub fn new(root: &Path) -> SysTree {
        let t = SysTree {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(t.cpu_root()).unwrap();
        // Not CPUs: must be ignored.
        std::fs::create_dir_all(t.cpu_root().join("cpufreq")).unwrap();
        std::fs::create_dir_all(t.cpu_root().join("cpuidle")).unwrap();
        std::fs::write(t.cpu_root().join("online"), "0-3\n").unwrap();
        t
    }

    fn cpu_root(&self) -> PathBuf {
        self.root.join("devices/system/cpu")
    }

    /// Create or update `cpuN` in `package` with `c`.
    pub fn set(&self, cpu: u32, package: u32, c: Counters) {
        let dir = self.cpu_root().join(format!("cpu{cpu}"));
        let tt = dir.join("thermal_throttle");
        std::fs::create_dir_all(&tt).unwrap();
        std::fs::create_dir_all(dir.join("topology")).unwrap();
        std::fs::write(
            dir.join("topology/physical_package_id"),
            format!("{package}\n"),
        )
        .unwrap();
        for (name, v) in [
            ("core_throttle_count", c.core),
            ("core_throttle_total_time_ms", c.core_total_ms),
            ("core_throttle_max_time_ms", c.core_max_ms),
            ("package_throttle_count", c.package),
            ("package_throttle_total_time_ms", c.package_total_ms),
            ("package_throttle_max_time_ms", c.package_max_ms),
        ] {
            let p = tt.join(name);
            match v {
                Some(v) => std::fs::write(&p, format!("{v}\n")).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }

    /// A CPU without thermal_throttle (e.g. offline, or a VM).
    pub fn bare_cpu(&self, cpu: u32) {
        std::fs::create_dir_all(self.cpu_root().join(format!("cpu{cpu}/topology"))).unwrap();
    }
}
