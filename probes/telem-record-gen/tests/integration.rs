//! telem-record-gen as users run it: options, messages, exit codes, payload sources and
//! what reaches a stand-in telemprobd.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use libtelemetry::client::Ack;
use libtelemetry::record::{Header, HEADER_NAMES};
use telemetrics_tests::cabi::RecordListener;
use telemetrics_tests::TestRoot;

const EVENT_ID: &str = "0123456789abcdef0123456789abcdef";

fn command(root: &TestRoot) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_telem-record-gen"));
    root.apply_env(&mut c);
    c
}

/// Run with `args`, feeding `stdin`.
fn run(root: &TestRoot, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn telem-record-gen");
    // A writer must never see EPIPE: the tool drains stdin past the limit.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("all of stdin consumed");
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `args` exit with `code`, printing exactly `stdout` and `stderr`.
fn check(args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let root = TestRoot::new();
    let out = run(&root, args, b"");
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
fn echo_without_posting_prints_the_record() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let out = run(&root, &["-c", "a/b/c", "-p", "hi", "-o", "-n"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 16, "{stdout}");
    for (line, name) in lines.iter().zip(HEADER_NAMES) {
        assert!(line.starts_with(&format!("{name}: ")), "{line}");
    }
    assert_eq!(lines[1], "classification: a/b/c");
    assert_eq!(lines[7], "build: 42");
    assert_eq!(lines[15], "hi");
    assert!(stdout.ends_with("hi\n"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(listener.drain().is_empty(), "-n sends nothing");
}

#[test]
fn option_errors_and_messages() {
    let help = telem_record_gen::HELP;
    check(&["-h"], 0, help, "");
    check(&["--help", "-c"], 0, help, "");
    check(&["-V"], 0, "2.4.3\n", "");
    check(
        &["-n"],
        1,
        "",
        "Error: Classification required. See --help.\n",
    );
    check(
        &["-c", "a/b", "-n"],
        1,
        "",
        "Error: Classification needs to be in most/to/least specific format, 2 '/' required.\n",
    );
    check(
        &["-c", "", "-n"],
        1,
        "",
        "Error: Valid size for classification is 1-122 chars\n",
    );
    check(
        &["-c", &format!("a/{}/c", "b".repeat(41)), "-n"],
        1,
        "",
        "Error: Classification strings between slashes should have at most 40 chars\n",
    );
    check(
        &["-c", "a/b/c", "-s", "5", "-n"],
        1,
        "",
        "Error: Valid range for severity is 1-4\n",
    );
    check(
        &["-c", "a/b/c", "-s", "0", "-n"],
        1,
        "",
        "Error: Valid range for severity is 1-4\n",
    );
    check(
        &["-c", "a/b/c", "-s", "2x"],
        1,
        "",
        "Invalid severity number. Must be an integer\n",
    );
    check(
        &["-c", "a/b/c", "-s", "99999999999999999999"],
        1,
        "",
        "ERROR: Failed to convert severity number: Numerical result out of range\n",
    );
    check(
        &["-c", "a/b/c", "-s", "4294967297", "-n"],
        1,
        "",
        "Error: Valid range for severity is 1-4\n",
    );
    check(
        &["-c", "a/b/c", "-R", "x"],
        1,
        "",
        "Invalid record-version number. Must be an integer\n",
    );
    check(
        &["-c", "a/b/c", "-e", "abc", "-n"],
        1,
        "",
        "Error: event_id length 3 it should have 32 characters\n",
    );
    check(
        &["-c", "a/b/c", "-e", "0123456789abcdef0123456789abcdeF", "-n"],
        1,
        "",
        "Error: event_id contains invalid character 'F' at position 31, valid characters are 0123456789abcdef\n",
    );
    check(
        &["-c", "a/b/c", "-f", "relative.conf"],
        1,
        "",
        "Configuration file path not valid\n",
    );
    check(&["-c", "a/b/c", "-p", "bell\x07", "-n"], 1, "", "Error: Failed to create record: payload byte 4 (0x07) is neither printable nor whitespace\n");
}

#[test]
fn unknown_options_are_reported_and_ignored() {
    let root = TestRoot::new();
    let out = run(
        &root,
        &["-x", "--bogus", "-c", "a/b/c", "-p", "hi", "-n", "-o"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    let prog = env!("CARGO_BIN_EXE_telem-record-gen");
    assert_eq!(
        text(&out.stderr),
        format!("{prog}: invalid option -- 'x'\n{prog}: unrecognized option '--bogus'\n")
    );
    assert!(text(&out.stdout).ends_with("\nhi\n"));
}

#[test]
fn sends_the_record_with_the_given_fields() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let out = run(
        &root,
        &[
            "--class",
            "org.example/x/y",
            "--sev",
            "3",
            "-R",
            "7",
            "-e",
            EVENT_ID,
            "-p",
            "body",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "a plain success prints nothing"
    );
    let frame = listener.recv_frame();
    let h = &frame.record.headers;
    assert_eq!(h.get(Header::Classification), "org.example/x/y");
    assert_eq!(h.get(Header::Severity), "3");
    assert_eq!(h.get(Header::PayloadFormatVersion), "7");
    assert_eq!(h.get(Header::EventId), EVENT_ID);
    assert_eq!(h.get(Header::SystemName), "testos");
    assert_eq!(frame.record.payload, b"body");
    assert_eq!(frame.cfg_path, None);
}

#[test]
fn echo_and_send_agree() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let out = run(&root, &["-c", "a/b/c", "-o"], b"from stdin\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let frame = listener.recv_frame();
    let mut expected = frame.record.headers.block();
    expected.extend_from_slice(b"from stdin\n\n");
    assert_eq!(text(&out.stdout), text(&expected));
}

#[test]
fn both_config_file_spellings_are_sent_as_cfg() {
    for opt in ["--config-file", "--config_file", "-f"] {
        let root = TestRoot::new();
        let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
        let cfg = root.config_path().display().to_string();
        let out = run(&root, &["-c", "a/b/c", "-p", "x", opt, &cfg], b"");
        assert_eq!(out.status.code(), Some(0), "{opt}: {}", text(&out.stderr));
        assert_eq!(
            listener.recv_frame().cfg_path.as_deref(),
            Some(cfg.as_str())
        );
    }
}

#[test]
fn send_failures_exit_1() {
    let root = TestRoot::new();
    let out = run(&root, &["-c", "a/b/c", "-p", "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: Failed to send record to daemon: No such file or directory\n"
    );
    let _listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    root.opt_out();
    let out = run(&root, &["-c", "a/b/c", "-p", "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Unable to send record. Make sure to opt-in to telemetry first 'telemctl opt-in'\n"
    );
    // Printing needs no opt-in.
    let out = run(&root, &["-c", "a/b/c", "-p", "x", "-o", "-n"], b"");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn payload_sources_and_the_8191_byte_cut() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let payload_of = |args: &[&str], stdin: &[u8]| {
        let out = run(&root, args, stdin);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        listener.recv_frame().record.payload
    };
    // stdin, cut, the rest drained.
    assert_eq!(
        payload_of(&["-c", "a/b/c"], &vec![b'a'; 100_000]),
        vec![b'a'; 8191]
    );
    assert_eq!(payload_of(&["-c", "a/b/c"], b""), b"");
    // -p, cut.
    let long = "p".repeat(9000);
    assert_eq!(
        payload_of(&["-c", "a/b/c", "-p", &long], b""),
        vec![b'p'; 8191]
    );
    // -P wins over -p; cut; bytes after a NUL ignored.
    let file = root.dir().join("payload.txt");
    std::fs::write(&file, vec![b'f'; 9000]).unwrap();
    let f = file.display().to_string();
    assert_eq!(
        payload_of(&["-c", "a/b/c", "-p", "x", "-P", &f], b""),
        vec![b'f'; 8191]
    );
    std::fs::write(&file, b"before\0after").unwrap();
    assert_eq!(
        payload_of(&["-c", "a/b/c", "--payload-file", &f], b""),
        b"before"
    );

    let missing = root.dir().join("missing.txt").display().to_string();
    let out = run(&root, &["-c", "a/b/c", "-P", &missing], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("Error: file {missing} could not be opened for reading\n")
    );
}
