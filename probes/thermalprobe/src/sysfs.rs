//! Reading `/sys/devices/system/cpu/cpu*/thermal_throttle/*` and the package topology.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most CPUs read (bounds the work and the state file).
pub const MAX_CPUS: usize = 8192;
/// Bytes read from one counter file.
const MAX_VALUE_FILE: u64 = 64;

/// The counter files of one CPU (a missing file is `None`: the time files appeared in
/// kernel 5.x, package counters need a package thermal interrupt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuCounters {
    pub cpu: u32,
    pub package: u32,
    pub core_count: Option<u64>,
    pub core_max_ms: Option<u64>,
    pub core_total_ms: Option<u64>,
    pub package_count: Option<u64>,
    pub package_max_ms: Option<u64>,
    pub package_total_ms: Option<u64>,
}

/// Package-wide counters: the kernel keeps them per CPU (each CPU of the package sees the
/// package interrupt), so the largest value of the package's CPUs is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageCounters {
    pub package: u32,
    pub count: Option<u64>,
    pub max_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub cpus: Vec<CpuCounters>,
}

/// One reading of every CPU with a `thermal_throttle` directory, grouped by package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub packages: BTreeMap<u32, PackageCounters>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    pub fn cpu_count(&self) -> usize {
        self.packages.values().map(|p| p.cpus.len()).sum()
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_VALUE_FILE)
        .read_to_string(&mut s)
        .ok()?;
    s.trim().parse().ok()
}

/// `<sys>/devices/system/cpu`.
pub fn cpu_root(sys_dir: &Path) -> PathBuf {
    sys_dir.join("devices/system/cpu")
}

/// Read every `cpuN/thermal_throttle` under `sys_dir`.
pub fn read_snapshot(sys_dir: &Path) -> Snapshot {
    let root = cpu_root(sys_dir);
    let mut cpus: Vec<(u32, PathBuf)> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix("cpu")?;
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    Some((n.parse().ok()?, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    cpus.sort();
    cpus.truncate(MAX_CPUS);
    let mut snap = Snapshot::default();
    for (cpu, dir) in cpus {
        let tt = dir.join("thermal_throttle");
        if !tt.is_dir() {
            continue;
        }
        let package = read_u64(&dir.join("topology/physical_package_id"))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let c = CpuCounters {
            cpu,
            package,
            core_count: read_u64(&tt.join("core_throttle_count")),
            core_max_ms: read_u64(&tt.join("core_throttle_max_time_ms")),
            core_total_ms: read_u64(&tt.join("core_throttle_total_time_ms")),
            package_count: read_u64(&tt.join("package_throttle_count")),
            package_max_ms: read_u64(&tt.join("package_throttle_max_time_ms")),
            package_total_ms: read_u64(&tt.join("package_throttle_total_time_ms")),
        };
        let p = snap
            .packages
            .entry(package)
            .or_insert_with(|| PackageCounters {
                package,
                ..PackageCounters::default()
            });
        p.count = max_opt(p.count, c.package_count);
        p.max_ms = max_opt(p.max_ms, c.package_max_ms);
        p.total_ms = max_opt(p.total_ms, c.package_total_ms);
        p.cpus.push(c);
    }
    snap
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
