//! The daemons' command line, byte for byte against what glibc's getopt_long and the C
//! daemons print (the same table as hprobe's): invalid and argument-less options, long-name
//! abbreviations and clustered flags.

use std::process::Stdio;

use telemetrics_tests::TestRoot;

const DAEMONS: [&str; 2] = ["telemprobd", "telempostd"];

fn usage(prog: &str) -> String {
    match prog {
        "telemprobd" => daemon::probd::cli::usage(prog),
        _ => daemon::postd::cli::usage(prog),
    }
}

/// `args` exit with `code`, printing exactly `stdout` and `stderr`.
fn check(root: &TestRoot, daemon: &str, args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let bin = telemetrics_tests::bin_path(daemon);
    let out = root
        .command(daemon)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref(),
        ),
        (
            Some(code),
            stdout.replace("{prog}", &bin.to_string_lossy()).as_str(),
            stderr.replace("{prog}", &bin.to_string_lossy()).as_str(),
        ),
        "{daemon} {args:?}"
    );
}

#[test]
fn options_answer_as_glibc_getopt_long() {
    let root = TestRoot::new();
    for daemon in DAEMONS {
        let prog = telemetrics_tests::bin_path(daemon)
            .to_string_lossy()
            .into_owned();
        let usage = usage(&prog);
        check(&root, daemon, &["-V"], 0, "2.4.3\n", "");
        check(&root, daemon, &["-h"], 0, &usage, "");
        // Clustered flags: the first one wins, as in C.
        check(&root, daemon, &["-hV"], 0, &usage, "");
        check(&root, daemon, &["-Vh"], 0, "2.4.3\n", "");
        // An unambiguous prefix of a long name, with `=` or a separate argument.
        check(&root, daemon, &["--conf=/x", "-V"], 0, "2.4.3\n", "");
        check(&root, daemon, &["--vers"], 0, "2.4.3\n", "");
        check(
            &root,
            daemon,
            &["-x"],
            1,
            "",
            &format!("{{prog}}: invalid option -- 'x'\n{usage}"),
        );
        check(
            &root,
            daemon,
            &["-f"],
            1,
            "",
            &format!("{{prog}}: option requires an argument -- 'f'\n{usage}"),
        );
        check(
            &root,
            daemon,
            &["--config_file"],
            1,
            "",
            &format!("{{prog}}: option '--config_file' requires an argument\n{usage}"),
        );
        check(
            &root,
            daemon,
            &["--bogus"],
            1,
            "",
            &format!("{{prog}}: unrecognized option '--bogus'\n{usage}"),
        );
        check(
            &root,
            daemon,
            &["--help=yes"],
            1,
            "",
            &format!("{{prog}}: option '--help' doesn't allow an argument\n{usage}"),
        );
        check(
            &root,
            daemon,
            &["extra"],
            1,
            "",
            &format!("{{prog}}: unexpected argument 'extra'\n{usage}"),
        );
    }
}

#[test]
fn an_abbreviated_config_option_takes_its_path() {
    let root = TestRoot::new();
    for daemon in DAEMONS {
        let out = root
            .command(daemon)
            .arg("--conf=/nonexistent/telemetrics.conf")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{daemon}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Configuration file path not valid"),
            "{daemon}: {stderr}"
        );
    }
}

/// Both daemons accept an unknown key, as C did, and log where it is and what it probably
/// misspells (seen here on the way to a start-up error, so the test need not stop them).
#[test]
fn unknown_config_keys_are_logged_with_a_suggestion() {
    for (daemon, fatal) in [
        ("telemprobd", ("socket_path", "/nonexistent/dir/telem-0")),
        ("telempostd", ("record_expiry", "-1")),
    ] {
        let mut root = TestRoot::new();
        root.set("delivery_max_inflight", "8");
        root.set(fatal.0, fatal.1);
        let out = root
            .command(daemon)
            .env("TELEMETRICS_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{daemon}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let config = root.config_path();
        let expected = format!(
            "{}:{}: unknown key \"delivery_max_inflight\" ignored (did you mean \"delivery_max_in_flight\"?)",
            config.display(),
            line_of(&config, "delivery_max_inflight=")
        );
        assert!(stderr.contains(&expected), "{daemon}: {stderr}");
    }
}

fn line_of(path: &std::path::Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    1 + text
        .lines()
        .position(|l| l.starts_with(prefix))
        .expect("key in the config")
}
