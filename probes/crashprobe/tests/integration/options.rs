//! Options, privacy filters, opt-in and exit codes.

use telemetrics_tests::TestRoot;

use crate::backtraces::LEVELS_C;
use crate::support::*;

fn small_core() -> (Lab, Vec<u8>) {
    let lab = Lab::new();
    let exe = lab.cc("small", LEVELS_C, &["-O0", "-g"]);
    let core = std::fs::read(lab.gdb_core(&exe, &[])).unwrap();
    (lab, to_notes_first(&core))
}

#[test]
fn missing_process_name_is_an_error() {
    let root = TestRoot::new();
    let run = probe(&root, &["-s", "11"], Input::Pipe(b""), None);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Missing required -p option. See --help output"),
        "{}",
        run.stderr
    );
}

/// Early failures (bad options, no -p, a broken configuration) still read a piped core to
/// its end: `probe` fails if the writer meets a closed pipe.
#[test]
fn early_failures_drain_the_piped_core() {
    let core = vec![0x5au8; 4 << 20];
    let root = TestRoot::new();
    let run = probe(&root, &["-s", "11"], Input::Pipe(&core), None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let run = probe(&root, &["--bogus"], Input::Pipe(&core), None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let bad = root.dir().join("bad.conf");
    std::fs::write(&bad, "[settings]\nrecord_expiry=soon\n").unwrap();
    let run = probe(
        &root,
        &["-p", "x", "-f", bad.to_str().unwrap()],
        Input::Pipe(&core),
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
}

#[test]
fn help_version_and_bad_options() {
    let root = TestRoot::new();
    let run = probe(&root, &["-h"], Input::Pipe(b""), None);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("--process-name"), "{}", run.stdout);
    let run = probe(&root, &["-V"], Input::Pipe(b""), None);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        format!("crashprobe {}\n", libtelemetry::VERSION)
    );
    let run = probe(&root, &["--bogus"], Input::Pipe(b""), None);
    assert_eq!(run.code, 1);
    // glibc getopt_long's diagnostics, then the usage.
    assert!(
        run.stderr
            .starts_with("crashprobe: unrecognized option '--bogus'\nUsage: crashprobe -p NAME"),
        "{}",
        run.stderr
    );
    let run = probe(&root, &["-p", "x", "-x"], Input::Pipe(b""), None);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("crashprobe: invalid option -- 'x'\n"),
        "{}",
        run.stderr
    );
    let run = probe(&root, &["--process"], Input::Pipe(b""), None);
    assert!(
        run.stderr.starts_with(
            "crashprobe: option '--process' is ambiguous; possibilities: '--process-name' '--process-path'\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn privacy_filters_send_short_records_and_drain_stdin() {
    let (_lab, core) = small_core();
    let root = TestRoot::new();
    let listener = Listener::start(&root);
    let check = |path: &str, class_want: &str, payload_want: &str| {
        let run = probe(
            &root,
            &["-p", "x", "-E", path, "-s", "11"],
            Input::Pipe(&core),
            None,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let f = listener.next();
        assert_eq!(class(&f), class_want);
        assert_eq!(severity(&f), "2");
        assert_eq!(payload(&f), payload_want);
    };
    check(
        "!tmp!x",
        "org.clearlinux/crash/unknown",
        "Crash from third party\n",
    );
    check(
        "/usr/local/bin/x",
        "org.clearlinux/crash/unknown",
        "Crash from third party\n",
    );
    check(
        "!builddir!build!BUILD!pkg!x",
        "org.clearlinux/crash/clr-build",
        "Crash from Clear package build\n",
    );
    // A /usr path is unwound; its backtrace is whatever the core holds.
    let run = probe(
        &root,
        &["-p", "x", "-E", "!usr!bin!x"],
        Input::Pipe(&core),
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let f = listener.next();
    assert_eq!(class(&f), "org.clearlinux/crash/clr");
    assert!(payload(&f).starts_with("Process: /usr/bin/x\nPID: "));
    assert!(!payload(&f).contains("Signal:"), "no -s, no Signal line");
}

#[test]
fn verbose_prints_the_sent_payload() {
    let (_lab, core) = small_core();
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let run = probe(
        &root,
        &["-p", "small", "-v", "-s", "11"],
        Input::Pipe(&core),
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let f = listener.next();
    assert_eq!(run.stdout, payload(&f));
    assert!(run.stdout.contains("#0 level3() - ["), "{}", run.stdout);
}

#[test]
fn not_opted_in_sends_nothing_but_drains() {
    let (_lab, core) = small_core();
    let root = unfiltered_root();
    root.opt_out();
    let listener = Listener::start(&root);
    let run = probe(&root, &["-p", "small"], Input::Pipe(&core), None);
    assert_eq!(run.code, 3);
    assert!(listener.none());
}

#[test]
fn config_file_option_selects_the_socket() {
    let (_lab, core) = small_core();
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    // The default config points elsewhere; -f names the right socket.
    let other = root.dir().join("other.conf");
    std::fs::write(
        &other,
        format!("[settings]\nsocket_path={}\n", root.socket_path().display()),
    )
    .unwrap();
    std::fs::write(
        root.config_path(),
        "[settings]\nsocket_path=/nonexistent/sock\n",
    )
    .unwrap();
    let run = probe(
        &root,
        &["-f", other.to_str().unwrap(), "-p", "small"],
        Input::Pipe(&core),
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let f = listener.next();
    assert_eq!(f.cfg_path.as_deref(), other.to_str());
}

#[test]
fn unknown_user_is_fatal_for_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // Privileges are only dropped when started by root.
    }
    let root = TestRoot::new();
    let run = probe(
        &root,
        &["-p", "x", "--user", "no-such-user-crashprobe"],
        Input::Pipe(b""),
        None,
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
}

#[test]
fn core_file_symlink_is_refused() {
    let (lab, core) = small_core();
    let file = lab.path("real.core");
    std::fs::write(&file, &core).unwrap();
    let link = lab.path("link.core");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let root = unfiltered_root();
    let run = probe(&root, &["-p", "small"], Input::File(&link), None);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot open core file"),
        "{}",
        run.stderr
    );
}

#[test]
fn closed_stderr_is_reopened_on_dev_null() {
    use std::os::unix::process::CommandExt;
    let root = TestRoot::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crashprobe"));
    root.apply_env(&mut cmd);
    cmd.env("CRASHPROBE_USER", "root")
        .arg("-s")
        .arg("11")
        .stdin(std::process::Stdio::null());
    // SAFETY: close is async-signal-safe and affects only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(2);
            Ok(())
        });
    }
    // The "Missing -p" message goes to /dev/null instead of failing or landing elsewhere.
    let status = cmd.status().expect("run crashprobe");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn frame_style_comes_from_the_configuration() {
    let lab = Lab::new();
    // level2 is inlined into level1 at -O2: a frame of its own only in the rich style.
    let src = r#"
int *volatile nullp;
__attribute__((noinline)) void level3(int *p) { *p = 42; }
static inline void level2(int *p) { level3(p); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void level1(int *p) { level2(p); __asm__ volatile("" ::: "memory"); }
int main(void) { level1(nullp); return 0; }
"#;
    let exe = lab.cc("styled", src, &["-O2", "-g"]);
    let core = to_notes_first(&std::fs::read(lab.gdb_core(&exe, &[])).unwrap());
    let run_with = |value: Option<&str>| {
        let mut root = compatible_root();
        if let Some(v) = value {
            root.set(crashprobe::cli::FRAMES_KEY, v);
        }
        let listener = Listener::start(&root);
        let run = probe(&root, &["-p", "styled"], Input::Pipe(&core), None);
        assert_eq!(run.code, 0, "{}", run.stderr);
        (payload(&listener.next()), run.stderr)
    };
    let src_file = lab.path("styled.c").display().to_string();
    let (default, _) = run_with(None);
    assert!(default.contains("\n#1 level1() - ["), "{default}");
    assert!(!default.contains("level2"), "{default}");
    // The file name as the line table records it (here an absolute one).
    assert!(default.contains(&format!("{src_file}:")), "{default}");
    let (compatible, _) = run_with(Some("compatible"));
    assert_eq!(compatible, default);
    let (rich, _) = run_with(Some("rich"));
    assert!(rich.contains("\n#1 level2() - ["), "{rich}");
    assert!(rich.contains("\n#2 level1() - ["), "{rich}");
    let (bogus, stderr) = run_with(Some("fancy"));
    assert_eq!(bogus, default);
    assert!(
        stderr.contains("invalid value \"fancy\" for crashprobe_frames"),
        "{stderr}"
    );
}
