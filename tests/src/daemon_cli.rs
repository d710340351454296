//! The daemons' command line, checked byte for byte against what glibc's getopt_long and
//! the C daemons print (the same table as hprobe's): invalid and argument-less options,
//! long-name abbreviations and clustered flags. Each daemon's integration tests call these
//! checks with its binary's name and usage text, so both answer from one table.

use std::process::Stdio;

use crate::{bin_path, TestRoot};

/// `args` exit with `code`, printing exactly `stdout` and `stderr`.
fn check(root: &TestRoot, daemon: &str, args: &[&str], code: i32, stdout: &str, stderr: &str) {
    let bin = bin_path(daemon);
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

/// `daemon` (a binary of the suite) answers every row of the getopt table; `usage` is its
/// usage text for a program name.
pub fn options_answer_as_glibc_getopt_long(daemon: &str, usage: fn(&str) -> String) {
    let root = TestRoot::new();
    {
        let prog = bin_path(daemon).to_string_lossy().into_owned();
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

/// `--conf=<path>` (an abbreviation of `--config_file`) is taken as the config path.
pub fn an_abbreviated_config_option_takes_its_path(daemon: &str) {
    let root = TestRoot::new();
    {
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

/// `daemon` accepts an unknown key, as C did, and logs where it is and what it probably
/// misspells (seen on the way to the start-up error that the key/value `fatal` causes, so
/// the test need not stop the daemon).
pub fn unknown_config_keys_are_logged_with_a_suggestion(daemon: &str, fatal: (&str, &str)) {
    {
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
