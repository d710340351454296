//! `make install` into a temp DESTDIR, and the distribution's default `telemetrics.conf`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use libtelemetry::{Config, Paths};

use crate::common::{files_with_suffix, have, installed_binaries, repo, stub_staticlib};
use crate::man::{pages, section};

const UNIT_SUFFIXES: &[&str] = &[".service", ".socket", ".path", ".timer", ".target"];

fn make_install(dest: &Path, target_dir: &Path, extra: &[&str]) {
    assert!(have("make"), "make not installed");
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("TARGET_DIR={}", target_dir.display()))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file and symlink under `dir`, relative, sorted.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Files the layout always has (independent of which binaries were built).
fn data_files(prefix: &str) -> BTreeSet<String> {
    let p = prefix.trim_start_matches('/');
    let mut want: BTreeSet<String> = [
        format!("{p}/lib/sysctl.d/40-crash-probe.conf"),
        format!("{p}/lib/systemd/system.conf.d/40-core-ulimit.conf"),
        format!("{p}/lib/tmpfiles.d/telemetrics-dirs.conf"),
        format!("{p}/lib/sysusers.d/telemetrics.conf"),
        format!("{p}/share/defaults/telemetrics/telemetrics.conf"),
    ]
    .into_iter()
    .collect();
    for unit in files_with_suffix(&repo().join("systemd"), UNIT_SUFFIXES) {
        want.insert(format!(
            "{p}/lib/systemd/system/{}",
            unit.file_name().unwrap().to_string_lossy()
        ));
    }
    for page in pages() {
        want.insert(format!(
            "{p}/share/man/man{}/{}",
            section(&page).unwrap(),
            page.file_name().unwrap().to_string_lossy()
        ));
    }
    want
}

fn lib_files() -> BTreeSet<String> {
    [
        "usr/lib/libtelemetry.so.4.0.1",
        "usr/lib/libtelemetry.so.4",
        "usr/lib/libtelemetry.so",
        "usr/lib/pkgconfig/libtelemetry.pc",
        "usr/include/telemetry.h",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[test]
fn install_lays_out_a_prebuilt_target_dir() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    std::fs::create_dir_all(target.join("deps")).unwrap();
    let built = [
        "telemprobd",
        "telempostd",
        "telemctl",
        "hprobe",
        "telem-record-gen",
    ];
    for b in built {
        std::fs::write(target.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
    }
    stub_staticlib(&target.join("libtelemetry.a"));
    // Build by-products that must not be installed.
    for junk in [
        "telemctl.d",
        "libtelemetry.d",
        "libtelemetry.rlib",
        "deps/telemctl-123",
    ] {
        std::fs::write(target.join(junk), "junk").unwrap();
    }
    let dest = t.path().join("dest");
    make_install(&dest, &target, &["PREFIX=/usr"]);

    let mut want = data_files("/usr");
    want.extend(lib_files());
    want.extend(built.iter().map(|b| format!("usr/bin/{b}")));
    assert_eq!(tree(&dest), want);

    let d = |rel: &str| dest.join(rel);
    for b in built {
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(d(&format!("usr/bin/{b}"))).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o755, "{b}");
    }
    assert_eq!(
        &std::fs::read(d("usr/lib/libtelemetry.so.4.0.1")).unwrap()[..4],
        b"\x7fELF"
    );
    assert_eq!(
        std::fs::read_link(d("usr/lib/libtelemetry.so.4")).unwrap(),
        PathBuf::from("libtelemetry.so.4.0.1")
    );
    assert_eq!(
        std::fs::read_link(d("usr/lib/libtelemetry.so")).unwrap(),
        PathBuf::from("libtelemetry.so.4")
    );
    assert_eq!(
        read(&d("usr/include/telemetry.h")),
        read(&repo().join("libtelemetry-ffi/include/telemetry.h"))
    );
    let pc = read(&d("usr/lib/pkgconfig/libtelemetry.pc"));
    for line in [
        "prefix=/usr",
        "libdir=/usr/lib",
        "Name: libtelemetry",
        &format!("Version: {}", libtelemetry::VERSION),
        "Libs: -L${libdir} -ltelemetry",
        "Cflags: -I${includedir}",
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "libtelemetry.pc lacks {line:?}:\n{pc}"
        );
    }
    // With PREFIX=/usr, data files are copied unchanged.
    for unit in files_with_suffix(&repo().join("systemd"), UNIT_SUFFIXES) {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            read(&d(&format!("usr/lib/systemd/system/{name}"))),
            read(&unit)
        );
    }
    assert_eq!(
        read(&d("usr/share/defaults/telemetrics/telemetrics.conf")),
        read(&repo().join("etc/telemetrics.conf"))
    );
    assert_eq!(
        read(&d("usr/share/man/man1/telemctl.1")),
        read(&repo().join("man/telemctl.1"))
    );

    // uninstall removes every file again.
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg("uninstall")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("TARGET_DIR={}", target.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(tree(&dest), BTreeSet::new());
}

#[test]
fn another_prefix_rewrites_program_paths() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("telemprobd"), "x").unwrap();
    let dest = t.path().join("dest");
    make_install(&dest, &target, &["PREFIX=/opt/tm"]);
    let mut want = data_files("/opt/tm");
    want.insert("opt/tm/bin/telemprobd".into());
    assert_eq!(tree(&dest), want, "no library without libtelemetry.a");
    let unit = read(&dest.join("opt/tm/lib/systemd/system/telemprobd.service"));
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/opt/tm/bin/telemprobd"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/bin/"));
    let sysctl = read(&dest.join("opt/tm/lib/sysctl.d/40-crash-probe.conf"));
    assert!(sysctl.contains("|/opt/tm/bin/crashprobe -p %e -E %E -s %s"));
}

#[test]
fn makefile_knows_every_binary_of_the_suite() {
    let makefile = read(&repo().join("Makefile"));
    let listed: BTreeSet<&str> = makefile
        .split("BINARIES =")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| l.split_whitespace())
        .filter(|w| *w != "\\")
        .collect();
    for bin in installed_binaries() {
        assert!(
            listed.contains(bin.as_str()),
            "Makefile BINARIES lacks {bin}"
        );
    }
}

/// When this test run's own build holds the real telemctl and libtelemetry.a, install
/// those and run the installed telemctl. `cargo test` leaves the staticlib in `deps/`
/// (only `cargo build` copies it up); it is there when `libtelemetry-ffi` is part of the
/// run, as with `cargo test --workspace`.
#[test]
fn install_of_the_real_build_output() {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let telemctl = Path::new(env!("CARGO_BIN_EXE_telemctl"));
    let Some(staticlib) = [
        profile.join("libtelemetry.a"),
        profile.join("deps/libtelemetry.a"),
    ]
    .into_iter()
    .find(|p| p.is_file()) else {
        eprintln!(
            "no libtelemetry.a in {0} or {0}/deps (libtelemetry-ffi not built); skipped",
            profile.display()
        );
        return;
    };
    let t = tempfile::tempdir().unwrap();
    // A TARGET_DIR holding just the real build output.
    let target = t.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(telemctl, target.join("telemctl")).unwrap();
    std::os::unix::fs::symlink(&staticlib, target.join("libtelemetry.a")).unwrap();
    let dest = t.path().join("dest");
    make_install(&dest, &target, &[]);
    let lib = std::fs::read(dest.join("usr/lib/libtelemetry.so.4.0.1")).unwrap();
    assert_eq!(&lib[..4], b"\x7fELF");
    let installed = tree(&dest);
    for f in lib_files() {
        assert!(installed.contains(&f), "{f} not installed");
    }
    let out = Command::new(dest.join("usr/bin/telemctl"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(libtelemetry::VERSION));
}

/// Every key is there, commented out at its built-in default, as in the C package: the
/// file read as is gives the defaults, and so does the file with every key uncommented.
#[test]
fn default_config_has_every_key_commented_at_its_default() {
    let path = repo().join("etc/telemetrics.conf");
    let text = read(&path);
    let paths = Paths::default();
    let defaults = Config::defaults(&paths);
    assert_eq!(Config::parse(&text, &path, &paths).unwrap(), defaults);
    assert!(
        text.lines()
            .all(|l| l.is_empty() || l.starts_with('#') || l == "[settings]"),
        "only [settings] is uncommented"
    );
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(kv) if kv.contains('=') && !kv.starts_with(' ') => format!("{kv}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let cfg = Config::parse(&uncommented, &path, &paths).unwrap();
    let keys: BTreeSet<&str> = cfg.raw.keys().map(String::as_str).collect();
    for key in [
        "server",
        "delivery_mode",
        "socket_path",
        "spool_dir",
        "cainfo",
        "tidheader",
        "rate_limit_enabled",
        "rate_limit_strategy",
        "record_burst_limit",
        "record_window_length",
        "byte_burst_limit",
        "byte_window_length",
        "record_expiry",
        "spool_max_size",
        "spool_process_time",
        "daemon_recycling_enabled",
        "record_retention_enabled",
        "record_server_delivery_enabled",
        "crash_loop_limit",
        "crash_loop_interval",
    ] {
        assert!(keys.contains(key), "default telemetrics.conf lacks {key}");
    }
    let mut cfg = cfg;
    cfg.raw.clear();
    assert_eq!(
        cfg, defaults,
        "every commented value is the built-in default"
    );
}

/// `scripts/demo` is run by hand (it builds the workspace); here it must at least parse.
#[test]
fn demo_script_parses() {
    let script = repo().join("scripts/demo");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: scripts/demo"));
}

/// Stand-ins for systemctl, systemd-sysusers, systemd-tmpfiles and systemd-sysctl that log
/// their arguments (and whether telemprobd.service is still installed) to `log`, and the
/// environment that makes packaging/systemd-setup use them.
fn recording_tools(dir: &Path, log: &Path, core_pattern: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut env = Vec::new();
    for (var, name) in [
        ("SYSTEMCTL", "systemctl"),
        ("SYSUSERS", "systemd-sysusers"),
        ("TMPFILES", "systemd-tmpfiles"),
        ("SYSCTL_APPLY", "systemd-sysctl"),
    ] {
        let tool = bin.join(name);
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\n\
                 if [ -e \"$UNITDIR/telemprobd.service\" ]; then u=installed; else u=removed; fi\n\
                 echo \"{name} $* [units $u]\" >>'{}'\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        env.push((var.to_string(), tool.display().to_string()));
    }
    env.push(("SYSTEMCTL_FORCE".into(), "1".into()));
    env.push(("CORE_PATTERN".into(), core_pattern.display().to_string()));
    env.push(("SOCKET".into(), dir.join("telem-0").display().to_string()));
    env
}

/// A temp host for `make post-install`/`uninstall`: a fake build output (`target`), an
/// install root (`dest`), the kernel's core_pattern as a file holding `core_pattern`, and
/// the recording tools ([`recording_tools`]) writing to `log`.
struct RecordingHost {
    t: tempfile::TempDir,
    target: PathBuf,
    dest: PathBuf,
    log: PathBuf,
    core_pattern: PathBuf,
    env: Vec<(String, String)>,
}

impl RecordingHost {
    fn new(core_pattern_text: &str) -> RecordingHost {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("telemprobd"), "x").unwrap();
        let dest = t.path().join("dest");
        let log = t.path().join("log");
        let core_pattern = t.path().join("core_pattern");
        std::fs::write(&core_pattern, core_pattern_text).unwrap();
        let env = recording_tools(t.path(), &log, &core_pattern);
        RecordingHost {
            t,
            target,
            dest,
            log,
            core_pattern,
            env,
        }
    }
}

fn make_with(dest: &Path, target: &Path, goal: &str, env: &[(String, String)], extra: &[&str]) {
    let out = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg(goal)
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("TARGET_DIR={}", target.display()))
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make {goal} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn enabled_units() -> Vec<String> {
    read(&repo().join("packaging/enabled-units"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// After `make install` nothing made the telemetry user, the directories or the enablement
/// links: `make post-install` does what the Debian postinst does.
#[test]
fn post_install_creates_the_user_and_dirs_and_enables_the_units() {
    // `_dir` keeps the temp host until the end of the test.
    let RecordingHost {
        t: _dir,
        target,
        dest,
        log,
        core_pattern: _,
        env,
    } = RecordingHost::new("core\n");
    make_install(&dest, &target, &["PREFIX=/usr"]);
    make_with(&dest, &target, "post-install", &env, &["PREFIX=/usr"]);
    let d = dest.display();
    let want = [
        format!("systemd-sysusers {d}/usr/lib/sysusers.d/telemetrics.conf [units installed]"),
        format!(
            "systemd-tmpfiles --create {d}/usr/lib/tmpfiles.d/telemetrics-dirs.conf [units installed]"
        ),
        format!("systemd-sysctl {d}/usr/lib/sysctl.d/40-crash-probe.conf [units installed]"),
        "systemctl daemon-reload [units installed]".to_string(),
        format!(
            "systemctl enable --now {} [units installed]",
            enabled_units().join(" ")
        ),
    ];
    assert_eq!(read(&log).lines().collect::<Vec<_>>(), want);
    for unit in enabled_units() {
        assert!(
            dest.join("usr/lib/systemd/system").join(&unit).is_file(),
            "{unit} is not a unit of the suite"
        );
    }
}

/// `make uninstall` on the running host disables and stops every unit before it deletes
/// the files (no daemon left running a deleted binary, no dangling enablement link, no
/// timer pointing at a vanished unit), gives core dumps back to the kernel and reloads
/// systemd afterwards.
#[test]
fn uninstall_stops_and_disables_the_units_first() {
    let RecordingHost {
        t,
        target,
        dest,
        log,
        core_pattern,
        env,
    } = RecordingHost::new("|/usr/bin/crashprobe -p %e -E %E -s %s\n");
    // The socket file systemd leaves behind when telemprobd.socket stops.
    let socket = std::os::unix::net::UnixListener::bind(t.path().join("telem-0")).unwrap();
    drop(socket);
    make_install(&dest, &target, &["PREFIX=/usr"]);
    make_with(
        &dest,
        &target,
        "uninstall",
        &env,
        &["PREFIX=/usr", "SYSTEMD_SETUP=yes"],
    );
    let lines: Vec<String> = read(&log).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(
        lines[0],
        format!(
            "systemctl disable {} [units installed]",
            enabled_units().join(" ")
        )
    );
    let stopped: Vec<&str> = lines[1]
        .strip_prefix("systemctl stop ")
        .and_then(|l| l.strip_suffix(" [units installed]"))
        .unwrap_or_else(|| panic!("not a stop before removal: {}", lines[1]))
        .split(' ')
        .collect();
    let all: BTreeSet<String> = files_with_suffix(&repo().join("systemd"), UNIT_SUFFIXES)
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        stopped
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        all
    );
    // Activation units before any service, so nothing re-activates a stopped daemon.
    let first_service = stopped
        .iter()
        .position(|u| u.ends_with(".service"))
        .unwrap();
    assert!(stopped[first_service..]
        .iter()
        .all(|u| u.ends_with(".service")));
    assert_eq!(lines[2], "systemctl daemon-reload [units removed]");
    assert!(
        lines[3].starts_with("systemctl reset-failed "),
        "{}",
        lines[3]
    );
    assert_eq!(read(&core_pattern), "core\n");
    assert!(!t.path().join("telem-0").exists(), "socket file left");
    assert_eq!(tree(&dest), BTreeSet::new());
}
