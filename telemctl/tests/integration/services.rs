//! Service control, opt-in and opt-out, with a fake `systemctl` / `systemd-tmpfiles` that
//! record their argument vectors.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use telemctl::services::{SERVICES, SPECIAL_UNITS};
use telemetrics_tests::TestRoot;

use crate::common::{is_root, run, telemctl, Run};

/// Fake programs writing one line per call (`<prog> <args…>`) to `calls.log`. A unit named
/// in `FAKE_FAIL` prints `boom <unit>` and exits 1; one named in `FAKE_MISSING` exits 5
/// ("not installed") like systemctl does; `is-active` prints `FAKE_STATE`.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Fakes {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"#!/bin/sh
log="$(dirname "$0")/calls.log"
name="$(basename "$0")"
printf '%s' "$name" >> "$log"
for a in "$@"; do printf ' [%s]' "$a" >> "$log"; done
printf '\n' >> "$log"
unit="$2"
for u in $FAKE_MISSING; do [ "$u" = "$unit" ] && exit 5; done
for u in $FAKE_FAIL; do
    if [ "$u" = "$unit" ]; then echo "boom $unit"; exit 1; fi
done
[ "$1" = "is-active" ] && echo "${FAKE_STATE:-active}"
exit 0
"#;
        for name in ["systemctl", "tmpfiles"] {
            let p = dir.path().join(name);
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes { dir }
    }

    fn command(&self, root: &TestRoot, args: &[&str]) -> Command {
        let mut c = telemctl(root);
        c.args(args)
            .env("TELEMCTL_SYSTEMCTL", self.dir.path().join("systemctl"))
            .env("TELEMCTL_TMPFILES", self.dir.path().join("tmpfiles"))
            .env_remove("FAKE_FAIL")
            .env_remove("FAKE_MISSING");
        c
    }

    fn run(&self, root: &TestRoot, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(root, args);
        c.envs(env.iter().copied());
        run(c)
    }

    /// Calls recorded since the last `take`.
    fn take(&self) -> Vec<String> {
        let p = self.dir.path().join("calls.log");
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        text.lines().map(str::to_string).collect()
    }
}

fn calls(action: &str, units: &[&str]) -> Vec<String> {
    units
        .iter()
        .map(|u| format!("systemctl [{action}] [{u}]"))
        .collect()
}

fn all_units() -> Vec<&'static str> {
    SPECIAL_UNITS.iter().chain(SERVICES).copied().collect()
}

fn tmpfiles_call(root: &TestRoot) -> String {
    format!(
        "tmpfiles [--create] [{}]",
        root.paths
            .under_root("/usr/lib/tmpfiles.d/telemetrics-dirs.conf")
            .display()
    )
}

#[test]
fn stop_start_restart_run_systemctl_per_unit_in_order() {
    let root = TestRoot::new();
    let f = Fakes::new();
    // The C client's unit lists come first, in its order.
    assert_eq!(
        &SPECIAL_UNITS[..5],
        [
            "hprobe.timer",
            "telemprobd.socket",
            "telempostd.path",
            "klogscanner.service",
            "journal-probe-tail.service"
        ]
    );
    assert_eq!(
        &SERVICES[..5],
        [
            "hprobe.service",
            "pstore-probe.service",
            "telemprobd.service",
            "telempostd.service",
            "journal-probe.service"
        ]
    );

    let r = f.run(&root, &["stop"], &[]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    assert_eq!(f.take(), calls("stop", &all_units()));

    let r = f.run(&root, &["start"], &[]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let mut want = vec![tmpfiles_call(&root)];
    want.extend(calls("start", SPECIAL_UNITS));
    assert_eq!(f.take(), want);

    // A failing unit: its output, the C message, and the other units are still tried.
    let r = f.run(&root, &["start"], &[("FAKE_FAIL", "telemprobd.socket")]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "boom telemprobd.socket\nFailed to start telemprobd.socket. Continuing...\n"
    );
    assert_eq!(f.take().len(), 1 + SPECIAL_UNITS.len());

    // Units that are not installed (optional probes) are not failures.
    let r = f.run(
        &root,
        &["stop"],
        &[("FAKE_MISSING", "klogscanner.service journal-probe.service")],
    );
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    f.take();

    // restart starts even when stop failed (the C client did not).
    let r = f.run(&root, &["restart"], &[("FAKE_FAIL", "telempostd.service")]);
    assert_eq!(r.code, 1);
    assert!(r
        .stderr
        .contains("Failed to stop telempostd.service. Continuing..."));
    let mut want = calls("stop", &all_units());
    want.push(tmpfiles_call(&root));
    want.extend(calls("start", SPECIAL_UNITS));
    assert_eq!(f.take(), want);

    // start needs opt-in.
    root.opt_out();
    let r = f.run(&root, &["start"], &[]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "Opt in to telemetry first.\n")
    );
    assert!(f.take().is_empty());
}

#[test]
fn is_active_prints_both_daemons() {
    let root = TestRoot::new();
    let f = Fakes::new();
    let r = f.run(&root, &["is-active"], &[("FAKE_STATE", "inactive")]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "telemprobd : inactive\ntelempostd : inactive\n");
    assert_eq!(
        f.take(),
        [
            "systemctl [is-active] [telemprobd.socket]",
            "systemctl [is-active] [telempostd.path]"
        ]
    );
    // In a relocated root without TELEMCTL_SYSTEMCTL: from the status files, no systemctl.
    let r = run({
        let mut c = telemctl(&root);
        c.arg("is-active");
        c
    });
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "telemprobd : inactive\ntelempostd : inactive\n");
}

#[test]
fn opt_in_creates_the_file_and_starts_services() {
    let root = TestRoot::new();
    let f = Fakes::new();
    root.opt_out();
    std::fs::remove_dir_all(root.paths.etc_dir()).unwrap();
    let r = f.run(&root, &["opt-in"], &[]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let md = std::fs::metadata(root.paths.opt_in_file()).unwrap();
    assert!(md.is_file());
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    let mut want = vec![tmpfiles_call(&root)];
    want.extend(calls("start", SPECIAL_UNITS));
    assert_eq!(f.take(), want);

    let r = f.run(&root, &["opt-in"], &[]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, "Already opted in. Nothing to do.\n")
    );
    assert!(f.take().is_empty());

    // Without TELEMCTL_SYSTEMCTL a relocated root manages no services.
    root.opt_out();
    let r = run({
        let mut c = telemctl(&root);
        c.arg("opt-in");
        c
    });
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(root.paths.opt_in_file().exists());
    assert!(f.take().is_empty());
}

#[test]
fn opt_out_stops_and_purges_only_owned_data() {
    let root = TestRoot::new();
    let f = Fakes::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep").unwrap();
    let p = &root.paths;
    let files: Vec<PathBuf> = vec![
        p.default_spool_dir().join("staged1"),
        p.default_spool_dir().join(".quarantine/bad"),
        p.journal_file(),
        p.records_dir().join("57b918ce6644c4b2ab11a25310871fb8"),
        p.machine_id_file(),
        p.pstore_cache_dir().join("dmesg-1"),
    ];
    for file in &files {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "x").unwrap();
    }
    std::os::unix::fs::symlink(outside.path(), p.default_spool_dir().join("evil-dir")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("precious"),
        p.log_dir().join("evil-file"),
    )
    .unwrap();

    let r = f.run(&root, &["opt-out"], &[]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert!(!p.opt_in_file().exists());
    assert_eq!(f.take(), calls("stop", &all_units()));
    for file in &files {
        assert!(!file.exists(), "{} purged", file.display());
    }
    for dir in [
        p.default_spool_dir(),
        p.log_dir(),
        p.records_dir(),
        p.state_dir(),
        p.pstore_cache_dir(),
    ] {
        assert!(dir.is_dir(), "{} kept", dir.display());
    }
    assert_eq!(std::fs::read_dir(p.default_spool_dir()).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep",
        "symlinks are removed, never followed"
    );
    // The config survives (it is the admin's).
    assert!(root.config_path().exists());

    let r = f.run(&root, &["opt-out"], &[]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, "Already opted out. Nothing to do.\n")
    );
    assert!(f.take().is_empty());
}

#[test]
fn opt_out_leaves_dirs_outside_the_relocated_root_alone() {
    let mut root = TestRoot::new();
    let f = Fakes::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("not-ours"), "x").unwrap();
    root.set("spool_dir", &elsewhere.path().display().to_string());
    let r = f.run(&root, &["opt-out"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("Not removing the contents of"),
        "{}",
        r.stderr
    );
    assert!(elsewhere.path().join("not-ours").exists());
}

#[test]
fn usage_and_unknown_commands() {
    let root = TestRoot::new();
    let bin = env!("CARGO_BIN_EXE_telemctl");
    let usage_head = format!("{bin} - Control actions for telemetry services\n\n  stop      Stops all running telemetry services\n");
    let r = run(telemctl(&root));
    assert_eq!(r.code, 2);
    assert!(r.stdout.starts_with(&usage_head), "{}", r.stdout);
    assert!(r.stdout.contains("  journal   Prints telemetry journal contents. Use -h argument for journal\n            command for more options\n"));

    let mut c = telemctl(&root);
    c.arg("frobnicate");
    let r = run(c);
    assert_eq!(r.code, 2);
    assert!(r
        .stdout
        .starts_with(&format!("Unknown command passed to {bin}\n\n{usage_head}")));

    for args in [
        &["stop", "extra"][..],
        &["opt-in", "-x"],
        &["status", "now"],
    ] {
        let mut c = telemctl(&root);
        c.args(args);
        assert_eq!(run(c).code, 2, "{args:?}");
    }
    let mut c = telemctl(&root);
    c.arg("--help");
    let r = run(c);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with(&usage_head));
}

#[test]
fn root_only_commands_refuse_other_users_outside_a_relocated_root() {
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_telemctl"));
    // As root the commands run as nobody, who may not reach the build directory (e.g. a
    // checkout under /root): run a copy from a directory anyone can enter.
    let copy_dir = tempfile::tempdir().unwrap();
    let bin = if is_root() {
        std::fs::set_permissions(copy_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = copy_dir.path().join("telemctl");
        std::fs::copy(built, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test thread while the copy was open for writing may
        // hold that descriptor until it execs: retry while exec reports ETXTBSY.
        for attempt in 0.. {
            match Command::new(&copy).arg("--version").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 100 => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => {
                    assert!(other.unwrap().status.success());
                    break;
                }
            }
        }
        copy
    } else {
        built.to_path_buf()
    };
    let mut cmds: Vec<Command> = Vec::new();
    for args in [
        &["stop"][..],
        &["start"],
        &["restart"],
        &["opt-in"],
        &["opt-out"],
        &["journal"],
    ] {
        let mut c = Command::new(&bin);
        c.args(args)
            .current_dir("/")
            .env_remove("TELEMETRICS_ROOT")
            .env("TELEMCTL_SYSTEMCTL", "/bin/false")
            .env("TELEMCTL_TMPFILES", "/bin/false");
        if is_root() {
            // Run as nobody.
            c.uid(65534).gid(65534);
        }
        cmds.push(c);
    }
    for c in cmds {
        let r = run(c);
        assert_eq!(r.code, 1);
        assert_eq!(r.stderr, "Must be root to run this command. Exiting...\n");
    }
}
