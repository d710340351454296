//! telempostd integration tests: the real binary in a temp root, delivering to the loopback
//! test collector (`telemetrics_tests::collector`).

mod delivery;
mod journal;
mod lifecycle;
mod otlp;
mod powerloss;
mod security;
mod spool;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use libtelemetry::journal::{read_journal, JournalEntry};
use libtelemetry::record::{Headers, Record};
use libtelemetry::status::{read_status, status_file, DaemonStatus};
use telemetrics_tests::collector::Collector;
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

/// Generous bound for anything the daemon should do "soon" (backoffs start at 5 s).
pub const SOON: Duration = Duration::from_secs(30);

/// A valid record (accepted by the v2 collector), distinguishable by `i`.
pub fn record(i: usize) -> Record {
    let values = [
        "4".to_string(),
        format!("org.test/postd/r{i}"),
        "2".into(),
        "5768134ac73df19cbf582da092628002".into(),
        "1795614028".into(),
        "x86_64".into(),
        "LENOVO|20KH|ThinkPad X1 Carbon".into(),
        "\"12\"".into(),
        "6.1.0-18-amd64".into(),
        "1".into(),
        "debian".into(),
        "no_bn_file|no_bv_file".into(),
        "Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz".into(),
        "".into(),
        format!("{:032x}", 0xe0e0_0000u64 + i as u64),
    ];
    Record {
        headers: Headers(values),
        payload: format!("record {i}\nline \"two\"\t/").into_bytes(),
    }
}

/// Stage `bytes` as telemprobd does (dotfile, then rename), with the file's mtime (and so its
/// creation time for telempostd) `age` in the past. Returns the final path.
pub fn stage_bytes(root: &TestRoot, name: &str, bytes: &[u8], age: Duration) -> PathBuf {
    let dir = root.spool_dir();
    let tmp = dir.join(format!("{}{name}", libtelemetry::fsutil::TEMP_PREFIX));
    std::fs::write(&tmp, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&tmp).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    drop(f);
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A staged name for a record sent by this process's uid (which owns the test's files, so
/// a `CFG:` file it wrote may be followed for it).
pub fn own_name(random: &str) -> String {
    // SAFETY: geteuid(2) has no side effects.
    let uid = unsafe { libc::geteuid() };
    libtelemetry::format_staged_name(random, libtelemetry::StagedSender::Uid(uid))
}

/// Stage record `i` under the name `r<i>`, `age` old.
pub fn stage(root: &TestRoot, i: usize, age: Duration) -> PathBuf {
    stage_bytes(
        root,
        &format!("rec{i:03}"),
        &libtelemetry::encode_staged(&record(i), None),
        age,
    )
}

/// A spool of `bad` as `r0`, the oldest, and 50 good records `r1`..`r50` after it.
pub fn stage_poisoned_spool(root: &TestRoot, bad: &Record) {
    stage_bytes(
        root,
        "rec000",
        &libtelemetry::encode_staged(bad, None),
        Duration::from_secs(600),
    );
    for i in 1..=50 {
        stage(root, i, Duration::from_secs(500 - i as u64));
    }
}

/// The record number of a request body or journal classification (`… r<i>`).
pub fn index_of(text: &str) -> usize {
    let start = text.find("record ").map(|p| p + 7).unwrap_or_else(|| {
        text.rfind("/r")
            .map(|p| p + 2)
            .unwrap_or_else(|| panic!("no index in {text:?}"))
    });
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A root whose config sends to `collector` at `path`.
pub fn root_for(collector: &Collector, path: &str) -> TestRoot {
    let mut root = TestRoot::new();
    root.set("server", &collector.url(path));
    root
}

/// Start telempostd in `root` with debug logs and a test idle time of `idle` seconds.
pub fn spawn_with_idle(root: &TestRoot, idle: &str) -> TestDaemon {
    let mut cmd = root.command("telempostd");
    cmd.env("TELEMETRICS_LOG", "debug,ureq=info,rustls=info")
        .env(postd::IDLE_EXIT_ENV, idle);
    TestDaemon::spawn_command(root, "telempostd", cmd)
}

pub fn spawn(root: &TestRoot) -> TestDaemon {
    spawn_with_idle(root, "300")
}

pub fn status(root: &TestRoot) -> DaemonStatus {
    read_status(&status_file(&root.paths, "telempostd"))
        .unwrap()
        .unwrap_or_default()
}

/// Wait until the status file shows `counter ≥ n`.
pub fn wait_counter(root: &TestRoot, counter: &str, n: u64) -> bool {
    wait_until(SOON, || status(root).counter(counter) >= n)
}

pub fn journal(root: &TestRoot) -> Vec<JournalEntry> {
    read_journal(&root.paths.journal_file()).unwrap_or_default()
}

/// Staged files left in the spool, as record names.
pub fn spool_names(root: &TestRoot) -> Vec<String> {
    root.staged_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The command line, from the getopt table both daemons share.
mod cli {
    use telemetrics_tests::daemon_cli;

    #[test]
    fn options_answer_as_glibc_getopt_long() {
        daemon_cli::options_answer_as_glibc_getopt_long("telempostd", postd::cli::usage);
    }

    #[test]
    fn an_abbreviated_config_option_takes_its_path() {
        daemon_cli::an_abbreviated_config_option_takes_its_path("telempostd");
    }

    #[test]
    fn unknown_config_keys_are_logged_with_a_suggestion() {
        daemon_cli::unknown_config_keys_are_logged_with_a_suggestion(
            "telempostd",
            ("record_expiry", "-1"),
        );
    }
}
