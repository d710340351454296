//! Command line, startup, signals, socket activation, sd_notify and the machine id.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use libtelemetry::client::{send_record, Delivery};
use libtelemetry::record::Header;
use libtelemetry::status::{read_status, status_file, COUNTER_REJECTED, COUNTER_STAGED};
use telemetrics_tests::{TestDaemon, TestRoot};

use super::{new_record, send, staged, start, STARTUP};

fn run_cli(root: &TestRoot, args: &[&str]) -> std::process::Output {
    root.command("telemprobd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn command_line() {
    let root = TestRoot::new();
    let out = run_cli(&root, &["-V"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2.4.3\n");
    let out = run_cli(&root, &["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": Usage\n") && text.contains("--config_file"));
    for bad in [&["--bogus"][..], &["-f"], &["extra"]] {
        let out = run_cli(&root, bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    }
    for path in ["relative.conf", "/nonexistent/telemetrics.conf"] {
        let out = run_cli(&root, &["-f", path]);
        assert_eq!(out.status.code(), Some(1), "{path}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Configuration file path not valid"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn stale_socket_is_replaced_with_a_world_writable_one() {
    let root = TestRoot::new();
    drop(UnixListener::bind(root.socket_path()).unwrap());
    let _d = start(&root);
    let mode = std::fs::metadata(root.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    assert_eq!(
        send(&root, &new_record(&root, "x")).unwrap(),
        Delivery::Acknowledged
    );
}

#[test]
fn readiness_is_notified() {
    let root = TestRoot::new();
    let notify_path = root.dir().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = root.command("telemprobd");
    cmd.args(["-f", root.config_path().to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path);
    let mut d = TestDaemon::spawn_command(&root, "telemprobd", cmd);
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving.
    assert_eq!(
        send(&root, &new_record(&root, "x")).unwrap(),
        Delivery::Acknowledged
    );
    assert!(d.terminate(STARTUP).unwrap().success());
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

/// `telemprobd` started as systemd does with socket activation: the listening socket as
/// fd 3, `LISTEN_FDS=1` and `LISTEN_PID` = the daemon's pid (set by `sh` just before it
/// `exec`s the daemon, the pid being known only then).
fn spawn_activated(root: &TestRoot, fd: std::os::fd::RawFd) -> TestDaemon {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(telemetrics_tests::bin_path("telemprobd"))
        .args(["-f", root.config_path().to_str().unwrap()]);
    root.apply_env(&mut cmd);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    TestDaemon::spawn_command(root, "telemprobd", cmd)
}

#[test]
fn socket_activation_uses_the_passed_socket() {
    let root = TestRoot::new();
    let activated = root.dir().join("activated.sock");
    let listener = UnixListener::bind(&activated).unwrap();
    let mut d = spawn_activated(&root, listener.as_raw_fd());
    // Probes connect before the daemon runs; the kernel queues them, as with systemd.
    let r = new_record(&root, "activated");
    let delivery = send_record(&root.paths, &activated, &r, None).unwrap();
    assert_eq!(delivery, Delivery::Acknowledged, "log:\n{}", d.log());
    assert_eq!(staged(&root).len(), 1);
    assert!(
        !root.socket_path().exists(),
        "an activated daemon binds nothing itself"
    );
    assert!(d.terminate(STARTUP).unwrap().success());
    drop(listener);
}

#[test]
fn socket_activation_refuses_what_is_not_a_listening_unix_socket() {
    let root = TestRoot::new();
    let not_a_socket = std::fs::File::open(root.config_path()).unwrap();
    let mut d = spawn_activated(&root, not_a_socket.as_raw_fd());
    let status = d.wait_timeout(STARTUP).expect("exits");
    assert_eq!(status.code(), Some(1), "log:\n{}", d.log());
    assert!(d.log().contains("fd 3"), "{}", d.log());
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut d = spawn_activated(&root, a.as_raw_fd());
    assert_eq!(d.wait_timeout(STARTUP).expect("exits").code(), Some(1));
    assert!(d.log().contains("not listening"), "{}", d.log());
}

#[test]
fn sighup_reloads_and_keeps_serving() {
    let mut root = TestRoot::new();
    let d = start(&root);
    d.signal(libc::SIGHUP);
    // The C daemon hung here until the next signal.
    assert_eq!(
        send(&root, &new_record(&root, "after hup")).unwrap(),
        Delivery::Acknowledged
    );
    assert_eq!(staged(&root).len(), 1);

    let other = root.dir().join("other-spool");
    std::fs::create_dir(&other).unwrap();
    root.set("spool_dir", other.to_str().unwrap());
    d.signal(libc::SIGHUP);
    assert!(
        wait_for_count(&d, "configuration reloaded", 2),
        "{}",
        d.log()
    );
    assert_eq!(
        send(&root, &new_record(&root, "moved")).unwrap(),
        Delivery::Acknowledged
    );
    assert_eq!(staged(&root).len(), 1, "old spool unchanged");
    let records = std::fs::read_dir(&other)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(records, 1);
}

fn wait_for_count(d: &TestDaemon, needle: &str, n: usize) -> bool {
    telemetrics_tests::wait_until(Duration::from_secs(10), || {
        d.log().matches(needle).count() >= n
    })
}

#[test]
fn sigterm_exits_zero_and_writes_the_counters() {
    let root = TestRoot::new();
    let mut d = start(&root);
    for i in 0..3 {
        send(&root, &new_record(&root, &format!("r{i}"))).unwrap();
    }
    let mut bad = new_record(&root, "bad");
    bad.headers.set(Header::Severity, "7");
    assert!(send(&root, &bad).is_err());
    let status = d.terminate(STARTUP).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", d.log());
    let s = read_status(&status_file(&root.paths, "telemprobd"))
        .unwrap()
        .expect("status file");
    assert_eq!(s.counter(COUNTER_STAGED), 3);
    assert_eq!(s.counter(COUNTER_REJECTED), 1);
    assert_eq!(s.daemon, "telemprobd");
}

fn set_mtime(path: &std::path::Path, age: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn machine_id_rotates_by_file_age() {
    const OLD: &str = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld00";
    let day = Duration::from_secs(24 * 3600);
    let check = |age: Duration, rotated: bool| {
        let root = TestRoot::new();
        let file = root.paths.machine_id_file();
        std::fs::write(&file, OLD).unwrap();
        set_mtime(&file, age);
        let _d = start(&root);
        send(&root, &new_record(&root, "id")).unwrap();
        let id = staged(&root)[0].headers.get(Header::MachineId).to_string();
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert_eq!(id, on_disk, "the staged id is the file's");
        assert_eq!(id != OLD, rotated, "age {age:?}");
        if rotated {
            assert_eq!(id.len(), 32);
        }
    };
    check(day * 2, false);
    check(day * 3 + Duration::from_secs(120), true);
}

#[test]
fn static_machine_id_overrides_the_rotating_one() {
    let root = TestRoot::new();
    std::fs::write(root.paths.static_machine_id_file(), "my-static-id\nignored").unwrap();
    let _d = start(&root);
    send(&root, &new_record(&root, "id")).unwrap();
    assert_eq!(
        staged(&root)[0].headers.get(Header::MachineId),
        "my-static-id"
    );
    // The rotating file is still maintained.
    assert!(root.paths.machine_id_file().exists());
}

/// F10: settings that cannot work are refused at start, with the reason, exit status 1.
#[test]
fn unusable_socket_path_or_spool_dir_is_refused_at_start() {
    let mut root = TestRoot::new();
    let long = root.dir().join("s".repeat(205));
    root.set("socket_path", long.to_str().unwrap());
    let cfg = root.config_path();
    let out = run_cli(&root, &["-f", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("at most 107 bytes"), "{err}");
    assert!(!long.exists(), "no socket file left behind");

    let mut root = TestRoot::new();
    root.set("spool_dir", "/proc/1");
    let out = run_cli(&root, &["-f", cfg_of(&root).as_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("spool_dir /proc/1 is not usable"), "{err}");
    assert!(!root.socket_path().exists());

    let mut root = TestRoot::new();
    let file = root.dir().join("a-file");
    std::fs::write(&file, "").unwrap();
    root.set("spool_dir", file.to_str().unwrap());
    let out = run_cli(&root, &["-f", cfg_of(&root).as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

fn cfg_of(root: &TestRoot) -> String {
    root.config_path().to_str().unwrap().to_string()
}

/// F10: a spool every user may write to is served, with a warning.
#[test]
fn a_world_writable_spool_is_warned_about() {
    let root = TestRoot::new();
    std::fs::set_permissions(root.spool_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = start(&root);
    assert!(d.wait_for_log("writable by every user", Duration::from_secs(5)));
    assert_eq!(
        send(&root, &new_record(&root, "x")).unwrap(),
        Delivery::Acknowledged
    );
}

/// F10: a flood of refused records gives a bounded number of log lines and one summary.
#[test]
fn refused_records_are_logged_in_bounded_summaries() {
    let root = TestRoot::new();
    let d = start(&root);
    let garbage = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for _ in 0..200 {
        let reply = super::exchange(&root.socket_path(), &[garbage], Duration::ZERO);
        assert_eq!(reply, b"I");
    }
    assert!(
        d.wait_for_log(
            "199 more records refused in the last",
            Duration::from_secs(40)
        ),
        "{}",
        d.log()
    );
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains("rejected frame"))
        .count();
    assert_eq!(lines, 1, "{}", d.log());
}

/// Voluntary context switches of every thread of `pid` (each is a wakeup after a wait).
fn voluntary_switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// An idle daemon sleeps: no periodic timer (status writes, summaries, machine id and idle
/// exit are computed deadlines, armed only when due).
#[test]
fn an_idle_daemon_does_not_wake_up() {
    let root = TestRoot::new();
    let d = start(&root);
    assert_eq!(
        send(&root, &new_record(&root, "x")).unwrap(),
        Delivery::Acknowledged
    );
    // Let the status write after that record and the blocking thread's exit pass.
    std::thread::sleep(Duration::from_secs(12));
    let before = voluntary_switches(d.pid());
    std::thread::sleep(Duration::from_secs(5));
    let woke = voluntary_switches(d.pid()) - before;
    assert!(woke <= 2, "{woke} wakeups in 5 s of idleness");
}
