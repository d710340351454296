//! The check_libtelemetry cases of the C test suite (spec §12), in C, reading
//! `ref->record->headers[]` through the documented layout.

use telemetrics_tests::TestRoot;

use super::{assert_tap_passed, program, run_in, Lang};

#[test]
fn check_libtelemetry_cases() {
    let root = TestRoot::new();
    assert_tap_passed(&run_in(&root, &program("check_libtelemetry", Lang::C), &[]));
    root.opt_out();
    assert_tap_passed(&run_in(&root, &program("check_libtelemetry", Lang::C), &[]));
}

#[test]
fn unreadable_host_facts_do_not_fail_records() {
    // No /proc/cpuinfo (C failed the record with -1) and no os-release.
    let root = TestRoot::new();
    std::fs::remove_dir_all(root.paths.host_root()).unwrap();
    assert_tap_passed(&run_in(&root, &program("check_libtelemetry", Lang::C), &[]));
}
