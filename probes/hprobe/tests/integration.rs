//! hprobe as the timer runs it: options, messages, exit codes, and the payload that
//! reaches a stand-in telemprobd.

use std::process::{Command, Output};

use libtelemetry::client::Ack;
use libtelemetry::frame::Frame;
use libtelemetry::record::Header;
use telemetrics_tests::cabi::RecordListener;
use telemetrics_tests::TestRoot;

fn run(root: &TestRoot, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hprobe"));
    root.apply_env(&mut c);
    c.env("LC_ALL", "C")
        .args(args)
        .output()
        .expect("run hprobe")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run with a listening stand-in daemon; expect success and return the record sent.
fn sent(root: &TestRoot, args: &[&str]) -> Frame {
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let out = run(root, args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Successfully sent record to daemon.\n");
    listener.recv_frame()
}

#[test]
fn hello_record() {
    let root = TestRoot::new();
    let f = sent(&root, &[]);
    let h = &f.record.headers;
    assert_eq!(h.get(Header::Classification), "org.clearlinux/hello/world");
    assert_eq!(h.get(Header::Severity), "1");
    assert_eq!(h.get(Header::PayloadFormatVersion), "1");
    assert_eq!(f.record.payload, b"hello\n");
    assert_eq!(f.cfg_path, None);
}

#[test]
fn heartbeat_with_locale_and_uptime() {
    let root = TestRoot::new();
    root.write_host_file("proc/uptime", "518.61 2000.10\n");
    let f = sent(&root, &["-Hlu"]);
    assert_eq!(
        f.record.headers.get(Header::Classification),
        "org.clearlinux/heartbeat/ping"
    );
    assert_eq!(f.record.payload, b"hello\nLC_ALL: C\nuptime: 518\n");
    let f = sent(&root, &["--heartbeat", "--locale", "--uptime"]);
    assert_eq!(f.record.payload, b"hello\nLC_ALL: C\nuptime: 518\n");
}

#[test]
fn bundles_are_listed_sorted_without_dotfiles() {
    let root = TestRoot::new();
    for name in ["os-core", "editors", ".hidden", "Zeta"] {
        root.write_host_file(&format!("usr/share/clear/bundles/{name}"), "");
    }
    let f = sent(&root, &["-b"]);
    assert_eq!(
        f.record.payload,
        b"hello\n\nBundles (3):\nZeta\neditors\nos-core\n"
    );
}

#[test]
fn long_bundle_list_is_cut() {
    let root = TestRoot::new();
    for i in 0..1000 {
        root.write_host_file(&format!("usr/share/clear/bundles/bundle-number-{i:04}"), "");
    }
    let f = sent(&root, &["--bundles"]);
    assert_eq!(f.record.payload.len(), 8191);
    assert!(f.record.payload.ends_with(b"\n..."));
    assert!(f
        .record
        .payload
        .starts_with(b"hello\n\nBundles (1000):\nbundle-number-0000\n"));
}

#[test]
fn config_file_spellings() {
    for opt in ["-f", "--config_file", "--config-file"] {
        let root = TestRoot::new();
        let cfg = root.config_path().display().to_string();
        assert_eq!(
            sent(&root, &[opt, &cfg]).cfg_path.as_deref(),
            Some(cfg.as_str())
        );
    }
}

/// `args` exit with `code`, printing exactly `stdout` and `stderr`.
fn check(root: &TestRoot, args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let out = run(root, args);
    assert_eq!(
        (
            out.status.code(),
            text(&out.stdout).as_str(),
            text(&out.stderr).as_str()
        ),
        (Some(code), stdout, stderr),
        "{args:?}"
    );
}

#[test]
fn failures_and_messages() {
    let root = TestRoot::new();
    let prog = env!("CARGO_BIN_EXE_hprobe");
    check(&root, &["-V"], 0, "2.4.3\n", "");
    check(&root, &["-h"], 0, &hprobe::usage(prog), "");
    check(
        &root,
        &["-x"],
        1,
        "",
        &format!("{prog}: invalid option -- 'x'\n"),
    );
    check(
        &root,
        &["--nope"],
        1,
        "",
        &format!("{prog}: unrecognized option '--nope'\n"),
    );
    check(
        &root,
        &["-f"],
        1,
        "",
        &format!("{prog}: option requires an argument -- 'f'\n"),
    );
    check(
        &root,
        &["-f", "rel.conf"],
        1,
        "",
        "Configuration file path not valid\n",
    );
    check(
        &root,
        &["-b"],
        1,
        "",
        "ERROR: scandir failed: No such file or directory\n",
    );
    check(
        &root,
        &[],
        1,
        "",
        "Failed to send record to daemon: No such file or directory\n",
    );
    let _listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    root.opt_out();
    check(
        &root,
        &[],
        1,
        "",
        "Failed to send record to daemon: Connection refused\n",
    );
    root.opt_in();
    let bad = root.dir().join("bad.conf");
    std::fs::write(&bad, "[settings]\nno equals sign\n").unwrap();
    check(
        &root,
        &["-f", &bad.display().to_string()],
        1,
        "",
        &format!(
            "{}:2: expected key=value\nFailed to send record to daemon: Invalid argument\n",
            bad.display()
        ),
    );
}
