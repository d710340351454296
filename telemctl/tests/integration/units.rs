//! The units and system files in `systemd/`: every unit file found there (the probes' too)
//! passes `systemd-analyze verify` with no output, the daemons' sandboxes score ≤ 2.0 with
//! `systemd-analyze security`, and the files agree with `libtelemetry::Paths`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use libtelemetry::Paths;

use crate::common::{files_with_suffix, have, installed_binaries, is_root, repo};

const UNIT_SUFFIXES: &[&str] = &[
    ".service", ".socket", ".path", ".timer", ".target", ".mount", ".slice",
];

/// Keys whose value is a command line.
const EXEC_KEYS: &[&str] = &[
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
];

/// Highest `systemd-analyze security` exposure accepted for the two daemons.
const MAX_DAEMON_EXPOSURE: f64 = 2.0;

fn systemd_dir() -> PathBuf {
    repo().join("systemd")
}

fn units() -> Vec<PathBuf> {
    let u = files_with_suffix(&systemd_dir(), UNIT_SUFFIXES);
    assert!(!u.is_empty(), "no unit files in systemd/");
    u
}

/// `key=value` lines of `text` (all sections), in order.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn values(text: &str, key: &str) -> Vec<String> {
    settings(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

fn require_systemd_analyze() {
    assert!(
        have("systemd-analyze"),
        "systemd-analyze not found: install the `systemd` package (make check installs it)"
    );
}

/// Copies of every unit in a temp dir, with each suite binary in `Exec*=` (not installed on
/// the test machine) replaced by an executable stub of the same name, so `verify` checks
/// everything else in the unit. Programs that exist on this machine are kept.
fn unit_copies(tmp: &Path) -> Vec<PathBuf> {
    let stubs = tmp.join("bin");
    let out = tmp.join("units");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let binaries = installed_binaries();
    let mut copies = Vec::new();
    for unit in units() {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&unit).unwrap();
        let mut rewritten = String::new();
        for line in text.lines() {
            let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
            let mut line = line.to_string();
            if EXEC_KEYS.contains(&key) {
                let value = line.split_once('=').unwrap().1.trim();
                let cmd = value.trim_start_matches(['-', '@', ':', '+', '!', '|']);
                let program = cmd.split_whitespace().next().unwrap_or("");
                assert!(
                    program.starts_with('/'),
                    "{name}: {key}= needs an absolute path"
                );
                if !Path::new(program).exists() {
                    let base = Path::new(program).file_name().unwrap().to_string_lossy();
                    assert!(
                        program == format!("/usr/bin/{base}") && binaries.contains(base.as_ref()),
                        "{name}: {program} is neither on this machine nor /usr/bin/<a binary of the suite> (suite: {binaries:?})"
                    );
                    let stub = stubs.join(base.as_ref());
                    std::fs::write(&stub, "#!/bin/sh\nexit 0\n").unwrap();
                    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                    line = line.replacen(program, &stub.display().to_string(), 1);
                }
            }
            rewritten.push_str(&line);
            rewritten.push('\n');
        }
        let copy = out.join(&name);
        std::fs::write(&copy, rewritten).unwrap();
        copies.push(copy);
    }
    // Units of other packages that ours depend on, as stand-ins next to the copies (verify
    // looks there first): update-triggers.target is Clear Linux swupd's.
    for (name, text) in EXTERNAL_UNITS {
        std::fs::write(out.join(name), text).unwrap();
    }
    copies
}

/// Units that other packages provide, which `verify` must find to check a dependency.
const EXTERNAL_UNITS: &[(&str, &str)] = &[(
    "update-triggers.target",
    "[Unit]\nDescription=Stand-in for swupd's update-triggers.target\n",
)];

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    require_systemd_analyze();
    let tmp = tempfile::tempdir().unwrap();
    let copies = unit_copies(tmp.path());
    // Documentation=man:… must name a page of man/ (verify's own man check is turned off:
    // the pages are not installed on the test machine).
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        for doc in values(&text, "Documentation") {
            for page in doc
                .split_whitespace()
                .filter_map(|d| d.strip_prefix("man:"))
            {
                let (name, section) = page
                    .trim_end_matches(')')
                    .split_once('(')
                    .unwrap_or_else(|| panic!("{}: bad man reference {page}", unit.display()));
                let file = repo().join("man").join(format!("{name}.{section}"));
                assert!(
                    file.is_file(),
                    "{}: {} missing",
                    unit.display(),
                    file.display()
                );
            }
        }
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&copies)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.is_empty(),
        "systemd-analyze verify of {} units failed:\n{stdout}{stderr}",
        copies.len()
    );
    eprintln!("systemd-analyze verify: {} units clean", copies.len());
}

/// `systemd-analyze security --offline=yes` exposure of one unit file.
fn exposure(unit: &Path) -> Option<f64> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.split_once(": ")?.1;
    after.split_whitespace().next()?.parse().ok()
}

fn systemd_version() -> u32 {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn daemons_are_sandboxed() {
    require_systemd_analyze();
    if systemd_version() < 252 {
        eprintln!("systemd < 252 has no `security --offline`; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let copies = unit_copies(tmp.path());
    for copy in copies
        .iter()
        .filter(|c| c.extension().is_some_and(|e| e == "service"))
    {
        let name = copy.file_name().unwrap().to_string_lossy().into_owned();
        let level = exposure(copy).unwrap_or_else(|| panic!("no exposure level for {name}"));
        eprintln!("systemd-analyze security {name}: {level}");
        if name == "telemprobd.service" || name == "telempostd.service" {
            assert!(
                level <= MAX_DAEMON_EXPOSURE,
                "{name}: exposure {level} > {MAX_DAEMON_EXPOSURE}"
            );
        }
    }
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(systemd_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// §10: the update trigger is bound to swupd's target and never enabled on its own.
#[test]
fn update_trigger_matches_the_c_unit() {
    let text = read("telemprobd-update-trigger.service");
    for (key, expected) in [
        ("BindsTo", &["update-triggers.target"][..]),
        ("Type", &["oneshot"]),
        (
            "ExecStart",
            &["/usr/bin/systemctl try-restart telemprobd.service"],
        ),
        ("WantedBy", &[]),
        ("RequiredBy", &[]),
        ("Alias", &[]),
    ] {
        assert_eq!(values(&text, key), expected, "{key}");
    }
    assert!(!text.contains("[Install]"), "no [Install] section, as in C");
}

#[test]
fn units_use_the_suite_paths() {
    let p = Paths::default();
    let spool = p.default_spool_dir().display().to_string();
    let socket = read("telemprobd.socket");
    assert_eq!(
        values(&socket, "ListenStream"),
        [p.default_socket_path().display().to_string()]
    );
    assert_eq!(values(&socket, "SocketMode"), ["0666"]);
    assert_eq!(
        values(&read("telempostd.path"), "DirectoryNotEmpty"),
        std::slice::from_ref(&spool)
    );
    let opt_in = p.opt_in_file().display().to_string();
    for unit in [
        "telemprobd.socket",
        "telemprobd.service",
        "telempostd.path",
        "telempostd.service",
        "hprobe.service",
        "hprobe.timer",
    ] {
        let text = read(unit);
        assert_eq!(
            values(&text, "ConditionPathExists"),
            std::slice::from_ref(&opt_in),
            "{unit}"
        );
    }
    let tmpfiles = read("tmpfiles.d/telemetrics-dirs.conf");
    let made: BTreeSet<String> = tmpfiles
        .lines()
        .filter(|l| l.starts_with("d "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    for dir in [
        p.state_dir(),
        p.default_spool_dir(),
        p.log_dir(),
        p.records_dir(),
        p.cache_dir(),
        p.pstore_cache_dir(),
    ] {
        assert!(
            made.contains(&dir.display().to_string()),
            "tmpfiles.d misses {}",
            dir.display()
        );
    }
    for line in tmpfiles.lines().filter(|l| l.starts_with("d ")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&f[3..], ["telemetry", "telemetry", "-"], "{line}");
    }
    for daemon in ["telemprobd", "telempostd"] {
        let text = read(&format!("{daemon}.service"));
        assert_eq!(values(&text, "Type"), ["notify"], "{daemon}");
        assert_eq!(values(&text, "User"), ["telemetry"], "{daemon}");
        assert_eq!(values(&text, "ExecStart"), [format!("/usr/bin/{daemon}")]);
        assert_eq!(
            values(&text, "WorkingDirectory"),
            std::slice::from_ref(&spool)
        );
        for rw in values(&text, "ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
        {
            assert!(
                made.contains(rw),
                "{daemon}: ReadWritePaths={rw} is not made by tmpfiles.d"
            );
        }
    }
    assert_eq!(
        values(&read("sysctl.d/40-crash-probe.conf"), "kernel.core_pattern"),
        ["|/usr/bin/crashprobe -p %e -E %E -s %s -P %P"]
    );
    let ulimit = read("system.conf.d/40-core-ulimit.conf");
    assert!(ulimit.contains("[Manager]"));
    assert_eq!(values(&ulimit, "DefaultLimitCORE"), ["infinity"]);
}

/// Both daemons re-read their configuration on SIGHUP, so `systemctl reload` must be
/// applicable to them: an `ExecReload=` sending SIGHUP to the main process.
#[test]
fn daemons_reload_on_sighup() {
    for daemon in ["telemprobd", "telempostd"] {
        let text = read(&format!("{daemon}.service"));
        assert_eq!(
            values(&text, "ExecReload"),
            ["/bin/kill -HUP $MAINPID"],
            "{daemon}.service: systemctl reload must send SIGHUP"
        );
    }
}

/// sysusers.d makes the account and tmpfiles.d the directories, in a scratch root.
#[test]
fn sysusers_and_tmpfiles_apply_to_a_scratch_root() {
    if !have("systemd-sysusers") || !have("systemd-tmpfiles") || !is_root() {
        eprintln!("needs root and systemd-sysusers/systemd-tmpfiles; skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    let run = |prog: &str, args: &[&str], file: &str| {
        let out = Command::new(prog)
            .arg(format!("--root={}", t.path().display()))
            .args(args)
            .arg(systemd_dir().join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("systemd-sysusers", &[], "sysusers.d/telemetrics.conf");
    let passwd = std::fs::read_to_string(t.path().join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("telemetry:"))
        .expect("telemetry user");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    run(
        "systemd-tmpfiles",
        &["--create"],
        "tmpfiles.d/telemetrics-dirs.conf",
    );
    let scratch = Paths::new(t.path(), "/");
    for (dir, mode) in [
        (scratch.state_dir(), 0o755),
        (scratch.default_spool_dir(), 0o750),
        (scratch.log_dir(), 0o750),
        (scratch.records_dir(), 0o750),
        (scratch.cache_dir(), 0o750),
        (scratch.pstore_cache_dir(), 0o750),
    ] {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(
            (md.mode() & 0o7777, md.uid()),
            (mode, uid),
            "{}",
            dir.display()
        );
    }
}
