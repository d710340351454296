//! klogscanner reading a kmsg fixture (a regular file standing in for `/dev/kmsg`).

use telemetrics_tests::TestRoot;

use crate::support::{fixture, parse_file_records, probe, run_expect, FakeDaemon};

fn root_with_kmsg() -> TestRoot {
    let root = TestRoot::new();
    let kmsg = std::fs::read_to_string(fixture("kmsg/boot.kmsg")).unwrap();
    root.write_host_file("dev/kmsg", &kmsg);
    root
}

/// `--user root` keeps CI (which runs as root) from switching to a missing account.
fn klogscanner(root: &TestRoot) -> std::process::Command {
    let mut c = probe(root, "klogscanner");
    c.args(["--from-start", "--user", "root"]);
    c
}

#[test]
fn reports_each_kernel_oops_of_the_log() {
    let root = root_with_kmsg();
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut klogscanner(&root), 0);
    let got = daemon.received();
    assert_eq!(got.len(), 2, "{got:#?}");

    // The same oops read as kmsg records and as syslog text gives the same payload.
    let from_text = parse_file_records(&fixture("oops/warning_no_addresses.txt"));
    assert_eq!(got[0].classification(), "org.clearlinux/kernel/warning");
    assert_eq!(got[0].severity(), "2");
    assert_eq!(got[0].payload_version(), "1");
    assert_eq!(got[0].payload(), from_text[0].1);

    // A message with escaped newlines is several lines; the user-space "WARNING:" record
    // (facility 1) is not a kernel oops.
    assert_eq!(got[1].classification(), "org.clearlinux/kernel/bug");
    assert_eq!(got[1].severity(), "4");
    assert_eq!(
        got[1].payload(),
        "Crash Report:\n\
         Reason: BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
         Kernel Version : 6.1.0-13-amd64 #1 Debian 6.1.55-1\n\
         Tainted : Not tainted\n\
         Backtrace :\n\
         #1 process_one_work - [kernel]\n\
         #2 worker_thread - [kernel]\n"
    );
    assert!(got.iter().all(|r| !r.payload().contains("forged")));
}

#[test]
fn starts_at_the_end_of_the_log_by_default() {
    let root = root_with_kmsg();
    let daemon = FakeDaemon::start(&root);
    run_expect(probe(&root, "klogscanner").args(["--user", "root"]), 0);
    assert!(daemon.received().is_empty());
}

#[test]
fn explicit_config_file_is_named_in_the_frame() {
    let root = root_with_kmsg();
    let daemon = FakeDaemon::start(&root);
    let cfg = root.config_path();
    run_expect(klogscanner(&root).arg("-f").arg(&cfg), 0);
    let got = daemon.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].frame.cfg_path.as_deref(), cfg.to_str());
}

#[test]
fn not_opted_in_sends_nothing() {
    let root = root_with_kmsg();
    root.opt_out();
    let daemon = FakeDaemon::start(&root);
    let out = run_expect(&mut klogscanner(&root), 0);
    assert!(daemon.received().is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not opted in"));
}

#[test]
fn does_nothing_in_a_container() {
    for (file, content) in [
        ("run/systemd/container", "docker\n"),
        ("proc/1/environ", "PATH=/bin\0container=podman\0"),
        (".dockerenv", ""),
    ] {
        let root = root_with_kmsg();
        root.write_host_file(file, content);
        let daemon = FakeDaemon::start(&root);
        let out = run_expect(&mut klogscanner(&root), 0);
        assert!(daemon.received().is_empty(), "{file}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("container"),
            "{file}"
        );
    }
    // An empty marker file is not a container.
    let root = root_with_kmsg();
    root.write_host_file("run/systemd/container", "");
    let daemon = FakeDaemon::start(&root);
    run_expect(&mut klogscanner(&root), 0);
    assert_eq!(daemon.received().len(), 2);
}

#[test]
fn missing_kernel_log_is_an_error() {
    let root = TestRoot::new();
    let out = run_expect(&mut klogscanner(&root), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("kmsg"));
}

#[test]
fn bad_command_line_and_version() {
    let root = TestRoot::new();
    run_expect(probe(&root, "klogscanner").arg("--bogus"), 2);
    let out = run_expect(probe(&root, "klogscanner").arg("-V"), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(libtelemetry::VERSION));
}

#[test]
fn drops_root_once_the_log_is_open() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").ok().flatten() else {
        eprintln!("skipped: no 'nobody' account");
        return;
    };
    let root = root_with_kmsg();
    // The unprivileged account must reach the config and the socket.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kmsg = root.paths.dev_dir().join("kmsg");
    std::fs::set_permissions(&kmsg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = FakeDaemon::start(&root);
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    run_expect(
        probe(&root, "klogscanner").args(["--from-start", "--user", "nobody"]),
        0,
    );
    let got = daemon.received();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|r| r.peer_uid == nobody.uid.as_raw()),
        "{got:?}"
    );
}

#[test]
fn unknown_user_is_refused_when_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the account only matters for root");
        return;
    }
    let root = root_with_kmsg();
    let out = run_expect(
        probe(&root, "klogscanner").args(["--from-start", "--user", "no-such-user-x"]),
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-user-x"));
}
