//! telemprobd with real probes: a C program linked against `libtelemetry.so.4`, and
//! `telem-record-gen`. Each record must appear as one staged file holding exactly the
//! bytes of the staged-file format (15 header lines, machine id replaced, payload, `\n`).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libtelemetry::record::Header;
use libtelemetry::{parse_staged, HostInfo};
use telemetrics_tests::cabi::compile_c;
use telemetrics_tests::{TestDaemon, TestRoot};

const MACHINE_ID: &str = "e2ee2ee2ee2ee2ee2ee2ee2ee2ee2ee2";
const EVENT_ID: &str = "c0ffeec0ffeec0ffeec0ffeec0ffee00";

/// telemprobd in `root`, with a static machine id so the staged bytes are predictable.
fn start_probd(root: &TestRoot) -> TestDaemon {
    std::fs::write(root.paths.static_machine_id_file(), MACHINE_ID).unwrap();
    let cfg = root.config_path();
    let mut d = TestDaemon::spawn(root, "telemprobd", &["-f", cfg.to_str().unwrap()]);
    d.wait_for_socket(&root.socket_path(), Duration::from_secs(20));
    d
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The one staged file, checked against the format with the host facts of `root`.
fn check_single_staged_file(
    root: &TestRoot,
    cfg_line: Option<&str>,
    classification: &str,
    severity: u32,
    payload: &str,
    sent_between: (u64, u64),
) {
    let files = root.staged_files();
    assert_eq!(files.len(), 1, "exactly one staged file: {files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let parsed = parse_staged(&bytes).expect("a valid staged file");
    let timestamp = parsed.headers.get(Header::CreationTimestamp).to_string();
    let t: u64 = timestamp.parse().expect("numeric creation_timestamp");
    assert!(
        (sent_between.0..=sent_between.1).contains(&t),
        "timestamp {t} outside {sent_between:?}"
    );
    let host = HostInfo::collect(&root.paths);
    let mut expected = String::new();
    if let Some(cfg) = cfg_line {
        expected.push_str(&format!("CFG:{cfg}\n"));
    }
    expected.push_str(&format!(
        "record_format_version: 4\n\
classification: {classification}\n\
severity: {severity}\n\
machine_id: {MACHINE_ID}\n\
creation_timestamp: {timestamp}\n\
arch: {arch}\n\
host_type: no_sv_file|no_pn_file|no_pvr_file\n\
build: 42\n\
kernel_version: {kernel}\n\
payload_format_version: 1\n\
system_name: testos\n\
board_name: no_bn_file|no_bv_file\n\
cpu_model: Test CPU @ 1.00GHz\n\
bios_version: no_bv_file\n\
event_id: {EVENT_ID}\n\
{payload}\n",
        arch = host.arch,
        kernel = host.kernel_version,
    ));
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
}

/// `probe.c` compiled against the built library, once per test process.
fn c_probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/probe.c");
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let out = dir.join("e2e-probd-probe");
            let tmp = dir.join(format!(".e2e-probd-probe.{}", std::process::id()));
            compile_c(&src, &tmp, &[]);
            std::fs::rename(&tmp, &out).unwrap();
            out
        })
        .clone()
}

#[test]
fn a_c_probe_record_is_staged_byte_for_byte() {
    let root = TestRoot::new();
    let _d = start_probd(&root);
    let mut cmd = std::process::Command::new(c_probe());
    root.apply_env(&mut cmd);
    let t0 = now();
    let out = cmd.args([EVENT_ID, "line1\nline2"]).output().unwrap();
    let t1 = now();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "rc=0\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    check_single_staged_file(
        &root,
        None,
        "org.test/e2e/c-probe",
        3,
        "line1\nline2",
        (t0, t1),
    );
}

#[test]
fn a_c_probe_is_told_when_the_host_is_not_opted_in() {
    let root = TestRoot::new();
    let _d = start_probd(&root);
    root.opt_out();
    let mut cmd = std::process::Command::new(c_probe());
    root.apply_env(&mut cmd);
    let out = cmd.args([EVENT_ID, "private"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("rc=-{}\n", libc::ECONNREFUSED)
    );
    assert!(root.staged_files().is_empty());
}

#[test]
fn a_telem_record_gen_record_is_staged_byte_for_byte() {
    let root = TestRoot::new();
    let _d = start_probd(&root);
    let t0 = now();
    let out = root
        .command("telem-record-gen")
        .args(["-c", "org.test/probe/one", "-s", "3", "-e", EVENT_ID])
        .args(["-p", "line1\nline2"])
        .output()
        .unwrap();
    let t1 = now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_single_staged_file(
        &root,
        None,
        "org.test/probe/one",
        3,
        "line1\nline2",
        (t0, t1),
    );
}

#[test]
fn a_config_file_named_by_the_probe_is_kept_in_the_staged_file() {
    let root = TestRoot::new();
    let _d = start_probd(&root);
    let cfg = root.config_path();
    let t0 = now();
    let out = root
        .command("telem-record-gen")
        .args(["-c", "org.test/probe/cfg", "-s", "2", "-e", EVENT_ID])
        .args(["-p", "with config", "--config-file", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let t1 = now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_single_staged_file(
        &root,
        Some(cfg.to_str().unwrap()),
        "org.test/probe/cfg",
        2,
        "with config",
        (t0, t1),
    );
}
