//! Deltas, coalescing, rebasing and the state file, without processes.

use std::time::Duration;

use thermalprobe::poller::{commit, compute, PackageEvent};
use thermalprobe::state::{Baseline, State, StateError};
use thermalprobe::sysfs::read_snapshot;

use crate::fixtures::{Counters, SysTree};

const MIN: Duration = Duration::from_secs(60);

/// One poll step: counters to write, then the expected `(package, package delta, core
/// delta, cpus)` of the events, which are then committed.
type Step<'a> = (&'a [(u32, u32, Counters)], &'a [(u32, u64, u64, &'a [u32])]);

fn check(steps: &[Step<'_>]) {
    let dir = tempfile::tempdir().unwrap();
    let tree = SysTree::new(dir.path());
    let mut state = State::fresh("boot-1");
    for (i, (writes, want)) in steps.iter().enumerate() {
        for (cpu, pkg, c) in *writes {
            tree.set(*cpu, *pkg, *c);
        }
        let events = compute(&mut state, &read_snapshot(dir.path()), MIN);
        let got: Vec<(u32, u64, u64, Vec<u32>)> = events
            .iter()
            .map(|e| (e.package, e.package_delta, e.core_delta, e.cpus.clone()))
            .collect();
        let want: Vec<(u32, u64, u64, Vec<u32>)> = want
            .iter()
            .map(|(p, pd, cd, cpus)| (*p, *pd, *cd, cpus.to_vec()))
            .collect();
        assert_eq!(got, want, "step {i}");
        for e in &events {
            assert!(e.payload.len() <= libtelemetry::record::MAX_PAYLOAD);
            commit(&mut state, e);
        }
    }
}

#[test]
fn counter_increases_give_one_event_per_package() {
    let c = Counters::counts;
    check(&[
        // Since boot: everything counts (a fresh baseline is zero).
        (
            &[
                (0, 0, c(2, 1)),
                (1, 0, c(0, 1)),
                (2, 1, c(0, 0)),
                (3, 1, c(0, 0)),
            ],
            &[(0, 1, 2, &[0])],
        ),
        // Nothing changed: nothing reported (a restart does not re-report).
        (&[], &[]),
        // A burst on two cores of package 1 and the package counter: one event.
        (&[(2, 1, c(3, 4)), (3, 1, c(1, 4))], &[(1, 4, 4, &[2, 3])]),
        // The package value is per CPU in the kernel: the largest counts.
        (&[(0, 0, c(2, 5)), (1, 0, c(0, 3))], &[(0, 4, 0, &[])]),
        // Going backwards (a CPU went away) rebases silently; growth after it counts.
        (&[(0, 0, c(1, 5))], &[]),
        (&[(0, 0, c(4, 5))], &[(0, 0, 3, &[0])]),
    ]);
}

#[test]
fn bursts_between_polls_are_coalesced() {
    let dir = tempfile::tempdir().unwrap();
    let tree = SysTree::new(dir.path());
    let mut state = State::fresh("b");
    tree.set(0, 0, Counters::full(0, 0, 0, 0));
    tree.set(1, 0, Counters::full(0, 0, 0, 0));
    assert!(compute(&mut state, &read_snapshot(dir.path()), MIN).is_empty());
    // Ten throttling episodes before the next poll.
    for n in 1..=10 {
        tree.set(0, 0, Counters::full(n, n * 10, n, n * 20));
        tree.set(1, 0, Counters::full(n / 2, n * 5, n, n * 20));
    }
    let events = compute(&mut state, &read_snapshot(dir.path()), MIN);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].package_delta, events[0].core_delta), (10, 15));
}

#[test]
fn golden_payload() {
    let dir = tempfile::tempdir().unwrap();
    let tree = SysTree::new(dir.path());
    tree.set(0, 0, Counters::full(0, 0, 5, 1200));
    tree.set(1, 0, Counters::full(2, 40, 5, 1200));
    tree.bare_cpu(7);
    let mut state = State::fresh("b");
    state.packages.insert(
        0,
        Baseline {
            count: 1,
            total_ms: 200,
        },
    );
    let events = compute(&mut state, &read_snapshot(dir.path()), MIN);
    assert_eq!(
        events,
        vec![PackageEvent {
            package: 0,
            package_delta: 4,
            core_delta: 2,
            cpus: vec![1],
            payload: "package=0\ncpus=1\npackage_throttle_count=5\n\
package_throttle_count_delta=4\npackage_throttle_total_time_ms=1200\n\
package_throttle_total_time_ms_delta=1000\npackage_throttle_max_time_ms=600\n\
core_throttle_count_delta=2\ninterval_ms=60000\ncpu1.core_throttle_count=2\n\
cpu1.core_throttle_count_delta=2\ncpu1.core_throttle_total_time_ms=40\n\
cpu1.core_throttle_total_time_ms_delta=40\ncpu1.core_throttle_max_time_ms=20\n"
                .into(),
            package_baseline: Baseline {
                count: 5,
                total_ms: 1200
            },
            core_baselines: vec![(
                1,
                Baseline {
                    count: 2,
                    total_ms: 40
                }
            )],
        }]
    );
}

#[test]
fn counts_only_kernels_have_no_time_keys() {
    let dir = tempfile::tempdir().unwrap();
    let tree = SysTree::new(dir.path());
    tree.set(0, 3, Counters::counts(1, 0));
    let events = compute(&mut State::fresh("b"), &read_snapshot(dir.path()), MIN);
    assert_eq!(
        events[0].payload,
        "package=3\ncpus=0\npackage_throttle_count=0\npackage_throttle_count_delta=0\n\
core_throttle_count_delta=1\ninterval_ms=60000\ncpu0.core_throttle_count=1\n\
cpu0.core_throttle_count_delta=1\n"
    );
}

#[test]
fn huge_packages_fit_the_payload_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tree = SysTree::new(dir.path());
    for cpu in 0..400 {
        tree.set(
            cpu,
            0,
            Counters::full(1_000_000 + u64::from(cpu), 99_999_999, 7, 70),
        );
    }
    let events = compute(&mut State::fresh("b"), &read_snapshot(dir.path()), MIN);
    let p = &events[0].payload;
    assert!(p.len() <= libtelemetry::record::MAX_PAYLOAD, "{}", p.len());
    let omitted: usize = p
        .lines()
        .find_map(|l| l.strip_prefix("cpus_omitted="))
        .expect("cpus_omitted line")
        .parse()
        .unwrap();
    let shown = p
        .lines()
        .filter(|l| l.starts_with("cpu") && l.contains(".core_throttle_count_delta="))
        .count();
    assert!(shown > 10, "{shown}");
    assert_eq!(shown + omitted, 400);
    assert_eq!(
        events[0].core_delta,
        (0..400u64).map(|c| 1_000_000 + c).sum::<u64>()
    );
}

fn check_state(text: &str, want: Result<State, StateError>) {
    assert_eq!(State::parse(text), want, "{text:?}");
    if let Ok(st) = State::parse(text) {
        assert_eq!(State::parse(&st.render()), Ok(st));
    }
}

#[test]
fn state_file_format() {
    let mut st = State::fresh("23156fd8-5386-4bfa-ae58-eb2136e72a04");
    st.cores.insert(
        0,
        Baseline {
            count: 3,
            total_ms: 40,
        },
    );
    st.packages.insert(
        1,
        Baseline {
            count: 9,
            total_ms: 0,
        },
    );
    check_state(
        "boot_id=23156fd8-5386-4bfa-ae58-eb2136e72a04\ncore 0 3 40\npackage 1 9 0\n",
        Ok(st),
    );
    check_state("# comment\n\nboot_id=x\n", Ok(State::fresh("x")));
    check_state("core 0 1 1\n", Err(StateError::NoBootId));
    check_state(
        "boot_id=x\ncore 0 1\n",
        Err(StateError::Syntax(2, "\"core 0 1\"".into())),
    );
    check_state(
        "boot_id=x\ncore a 1 1\n",
        Err(StateError::Syntax(2, "bad number \"a\"".into())),
    );
    check_state(
        "boot_id=x\ngpu 0 1 1\n",
        Err(StateError::Syntax(2, "unknown entry \"gpu\"".into())),
    );
    check_state(
        "boot_id=x\ncore 4294967296 1 1\n",
        Err(StateError::Syntax(2, "bad id \"4294967296\"".into())),
    );
}

#[test]
fn state_load_follows_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/thermalprobe.state");
    let mut st = State::fresh("boot-a");
    st.cores.insert(
        2,
        Baseline {
            count: 5,
            total_ms: 1,
        },
    );
    st.save(&path).unwrap();
    assert_eq!(State::load(&path, "boot-a"), st);
    assert_eq!(State::load(&path, "boot-b"), State::fresh("boot-b"));
    std::fs::write(&path, "garbage\n").unwrap();
    assert_eq!(State::load(&path, "boot-a"), State::fresh("boot-a"));
    assert_eq!(
        State::load(&dir.path().join("none"), "boot-a"),
        State::fresh("boot-a")
    );
}
