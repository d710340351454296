//! Turning successive readings into at most one event per package per poll: deltas against
//! the last reported counters, with the new baseline committed only once the record is
//! delivered (a failed delivery folds into the next interval's record).

use std::fmt::Write as _;
use std::time::Duration;

use libtelemetry::record::MAX_PAYLOAD;

use crate::state::{Baseline, State};
use crate::sysfs::{PackageCounters, Snapshot};

/// Room kept free at the end of a payload for the `cpus_omitted=` line.
const PAYLOAD_SLACK: usize = 64;

/// One package's throttling since the last reported baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEvent {
    pub package: u32,
    /// Increase of the package counter.
    pub package_delta: u64,
    /// Sum of the increases of the core counters of the package's CPUs.
    pub core_delta: u64,
    /// CPUs whose core counter increased.
    pub cpus: Vec<u32>,
    pub payload: String,
    /// Baselines to commit once the record is delivered.
    pub package_baseline: Baseline,
    pub core_baselines: Vec<(u32, Baseline)>,
}

/// Increase of `now` over `base`; `None` when the counter went backwards (CPU hot-unplug
/// of the CPU the package value came from, or a reset): the caller rebases silently.
fn delta(now: Option<u64>, base: u64) -> Option<u64> {
    match now {
        Some(n) if n >= base => Some(n - base),
        Some(_) => None,
        None => Some(0),
    }
}

/// Compare `snap` with the baselines in `state`. Counters that went backwards are rebased
/// in `state` at once, without an event. Returns one event per package with a counter
/// increase.
pub fn compute(state: &mut State, snap: &Snapshot, interval: Duration) -> Vec<PackageEvent> {
    let mut events = Vec::new();
    for pkg in snap.packages.values() {
        if let Some(ev) = package_event(state, pkg, interval) {
            events.push(ev);
        }
    }
    events
}

fn package_event(
    state: &mut State,
    pkg: &PackageCounters,
    interval: Duration,
) -> Option<PackageEvent> {
    let base = state
        .packages
        .get(&pkg.package)
        .copied()
        .unwrap_or_default();
    // Committed with any event of this package, so no time is reported twice.
    let package_baseline = Baseline {
        count: pkg.count.unwrap_or(base.count),
        total_ms: pkg.total_ms.unwrap_or(base.total_ms),
    };
    let (pkg_count_d, pkg_time_d) = match (
        delta(pkg.count, base.count),
        delta(pkg.total_ms, base.total_ms),
    ) {
        (Some(c), Some(t)) => (c, t),
        _ => {
            tracing::info!(
                "package {}: throttle counters went backwards; rebased",
                pkg.package
            );
            state.packages.insert(pkg.package, package_baseline);
            (0, 0)
        }
    };

    struct CoreDelta {
        cpu: u32,
        count: Option<u64>,
        count_d: u64,
        total: Option<u64>,
        total_d: u64,
        max: Option<u64>,
    }
    let mut cores = Vec::new();
    let mut core_baselines = Vec::new();
    for c in &pkg.cpus {
        let base = state.cores.get(&c.cpu).copied().unwrap_or_default();
        let now = Baseline {
            count: c.core_count.unwrap_or(base.count),
            total_ms: c.core_total_ms.unwrap_or(base.total_ms),
        };
        match (
            delta(c.core_count, base.count),
            delta(c.core_total_ms, base.total_ms),
        ) {
            (Some(cd), Some(td)) => {
                if cd > 0 {
                    core_baselines.push((c.cpu, now));
                    cores.push(CoreDelta {
                        cpu: c.cpu,
                        count: c.core_count,
                        count_d: cd,
                        total: c.core_total_ms,
                        total_d: td,
                        max: c.core_max_ms,
                    });
                }
            }
            _ => {
                tracing::info!("cpu{}: throttle counters went backwards; rebased", c.cpu);
                state.cores.insert(c.cpu, now);
            }
        }
    }
    let core_delta: u64 = cores.iter().map(|c| c.count_d).sum();
    if pkg_count_d == 0 && core_delta == 0 {
        return None;
    }

    let mut p = String::new();
    let _ = writeln!(p, "package={}", pkg.package);
    let cpus: Vec<u32> = cores.iter().map(|c| c.cpu).collect();
    let _ = writeln!(
        p,
        "cpus={}",
        cpus.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(n) = pkg.count {
        let _ = writeln!(p, "package_throttle_count={n}");
        let _ = writeln!(p, "package_throttle_count_delta={pkg_count_d}");
    }
    if let Some(n) = pkg.total_ms {
        let _ = writeln!(p, "package_throttle_total_time_ms={n}");
        let _ = writeln!(p, "package_throttle_total_time_ms_delta={pkg_time_d}");
    }
    if let Some(n) = pkg.max_ms {
        let _ = writeln!(p, "package_throttle_max_time_ms={n}");
    }
    let _ = writeln!(p, "core_throttle_count_delta={core_delta}");
    let _ = writeln!(p, "interval_ms={}", interval.as_millis());
    let mut omitted = 0;
    for c in &cores {
        let mut block = String::new();
        if let Some(n) = c.count {
            let _ = writeln!(block, "cpu{}.core_throttle_count={n}", c.cpu);
        }
        let _ = writeln!(
            block,
            "cpu{}.core_throttle_count_delta={}",
            c.cpu, c.count_d
        );
        if let Some(n) = c.total {
            let _ = writeln!(block, "cpu{}.core_throttle_total_time_ms={n}", c.cpu);
            let _ = writeln!(
                block,
                "cpu{}.core_throttle_total_time_ms_delta={}",
                c.cpu, c.total_d
            );
        }
        if let Some(n) = c.max {
            let _ = writeln!(block, "cpu{}.core_throttle_max_time_ms={n}", c.cpu);
        }
        if p.len() + block.len() + PAYLOAD_SLACK > MAX_PAYLOAD || omitted > 0 {
            omitted += 1;
        } else {
            p.push_str(&block);
        }
    }
    if omitted > 0 {
        let _ = writeln!(p, "cpus_omitted={omitted}");
    }
    Some(PackageEvent {
        package: pkg.package,
        package_delta: pkg_count_d,
        core_delta,
        cpus,
        payload: p,
        package_baseline,
        core_baselines,
    })
}

/// Record a delivered event's counters as reported.
pub fn commit(state: &mut State, ev: &PackageEvent) {
    state.packages.insert(ev.package, ev.package_baseline);
    for (cpu, b) in &ev.core_baselines {
        state.cores.insert(*cpu, *b);
    }
}
