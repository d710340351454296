//! The swupdprobe binary on fixture drop directories, delivering to a test listener.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use libtelemetry::frame::Frame;
use libtelemetry::record::Header;
use telemetrics_tests::listener::{RecordListener, TestListener};
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

use crate::fixtures::{backend_update_versions, every_class, publish};

const WAIT: Duration = Duration::from_secs(10);

pub fn drop_dir(root: &TestRoot) -> PathBuf {
    let d = root.paths.swupd_dir();
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn quarantine_dir(root: &TestRoot) -> PathBuf {
    root.paths
        .swupd_dir()
        .join(libtelemetry::paths::QUARANTINE_DIR)
}

fn tries_file(root: &TestRoot) -> PathBuf {
    root.paths.swupd_dir().join(".swupdprobe-tries")
}

/// Entries systemd's `DirectoryNotEmpty=` counts (not hidden).
pub fn visible(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn probe(root: &TestRoot, args: &[&str]) -> Output {
    root.run_with_config("swupdprobe", args)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn by_payload(frames: &[Frame]) -> BTreeMap<String, Frame> {
    frames
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.record.payload).into_owned(),
                f.clone(),
            )
        })
        .collect()
}

#[test]
fn drain_delivers_every_class_and_empties_the_directory() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let dir = drop_dir(&root);
    let files = every_class();
    for f in &files {
        publish(&dir, f.name, f.content.as_bytes());
    }
    let o = probe(&root, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let frames = l.wait_for(files.len(), WAIT);
    assert_eq!(frames.len(), files.len());
    let got = by_payload(&frames);
    for f in &files {
        let fr = got
            .get(&f.content)
            .unwrap_or_else(|| panic!("{} not delivered", f.name));
        let h = &fr.record.headers;
        assert_eq!(
            h.get(Header::Classification),
            f.classification,
            "{}",
            f.name
        );
        assert_eq!(
            h.get(Header::Severity),
            f.severity.to_string(),
            "{}",
            f.name
        );
        assert_eq!(h.get(Header::PayloadFormatVersion), f.version.to_string());
        assert!(h.validate().is_ok());
        assert_eq!(fr.cfg_path.as_deref(), root.config_path().to_str());
    }
    // Line order is kept: the backend's update matrix reads lines 3 and 4.
    assert_eq!(
        backend_update_versions(&files[0].content),
        Some((39000, 39010))
    );
    let update = got.get(&files[0].content).unwrap();
    assert_eq!(
        backend_update_versions(&String::from_utf8_lossy(&update.record.payload)),
        Some((39000, 39010))
    );
    assert!(visible(&dir).is_empty(), "{:?}", visible(&dir));
    assert!(names_in(&quarantine_dir(&root)).is_empty());
    assert!(!tries_file(&root).exists());
    // Nothing left: a second run sends nothing.
    assert_eq!(code(&probe(&root, &[])), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(l.frames().len(), files.len());
}

#[test]
fn malformed_names_and_contents_are_quarantined_and_temporaries_ignored() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let dir = drop_dir(&root);
    let body = b"PACKAGE_NAME=swupd-client\nPACKAGE_VERSION=5.1.0\nfile=x.c\nline=1\n";
    let bad_names = [
        "2.update.1",
        "2.update.1.abc.def",
        "x.update.1.abc",
        "2..1.abc",
        "2.update.5.abc",
        "2.update.0.abc",
        "garbage",
        "2.up date.1.abc",
    ];
    for n in bad_names {
        std::fs::write(dir.join(n), body).unwrap();
    }
    let mut big = body.to_vec();
    big.resize(8193, b'x');
    let bad_contents: [(&str, &[u8]); 4] = [
        ("2.update.1.Binary", b"PACKAGE_NAME=swupd\x01\x02\n"),
        (
            "2.update.1.Nul001",
            b"current_version=1\0server_version=2\n",
        ),
        ("2.update.1.Latin1", b"bundles=caf\xe9\n"),
        ("2.update.1.Big001", &big),
    ];
    for (n, c) in bad_contents {
        std::fs::write(dir.join(n), c).unwrap();
    }
    // A symlink to a file outside: refused, moved (not followed), target untouched.
    let secret = root.dir().join("secret");
    std::fs::write(&secret, "PACKAGE_NAME=secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("2.update.1.Link01")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("2.update.1.Fifo01"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    // Ignored: dotfiles, temporaries, a directory.
    let ignored = [
        ".2.update.1.abc.part",
        ".tmp-x",
        "2.update.1.abc~",
        "notes.swp",
        "2.update.1.abc.rpmnew",
        "2.update.1.abc.dpkg-old",
    ];
    for n in ignored {
        std::fs::write(dir.join(n), body).unwrap();
    }
    std::fs::create_dir(dir.join("subdir")).unwrap();
    // And one good file among them, exactly 8192 bytes.
    let mut max = body.to_vec();
    max.resize(8192, b'y');
    publish(&dir, "2.unexpected-condition.4.Good01", &max);

    let o = probe(&root, &["--settle", "100ms"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let frames = l.wait_for(1, WAIT);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].record.payload, max);
    let mut want_q: Vec<String> = bad_names
        .iter()
        .chain(bad_contents.iter().map(|(n, _)| n))
        .map(|s| s.to_string())
        .chain(["2.update.1.Link01", "2.update.1.Fifo01", "subdir"].map(String::from))
        .collect();
    want_q.sort();
    assert_eq!(names_in(&quarantine_dir(&root)), want_q);
    let q_link = quarantine_dir(&root).join("2.update.1.Link01");
    assert!(std::fs::symlink_metadata(&q_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "PACKAGE_NAME=secret\n"
    );
    let mut left: Vec<String> = ignored.iter().map(|s| s.to_string()).collect();
    left.push(".quarantine".into());
    left.sort();
    assert_eq!(names_in(&dir), left);
    assert!(stderr(&o).contains("quarantined 2.update.1.Link01: symbolic links are refused"));
}

#[test]
fn a_failing_file_is_quarantined_after_max_tries_across_runs() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let dir = drop_dir(&root);
    let f = &every_class()[0];
    publish(&dir, f.name, f.content.as_bytes());
    l.script(b"FFF");
    let args = ["--max-tries", "3", "--retry-for", "100ms"];
    for n in 1..=2 {
        let o = probe(&root, &args);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(tries_file(&root)).unwrap(),
            format!("{n} {}\n", f.name)
        );
        assert_eq!(visible(&dir), [f.name]);
    }
    let o = probe(&root, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(visible(&dir).is_empty());
    assert_eq!(names_in(&quarantine_dir(&root)), [f.name]);
    assert!(!tries_file(&root).exists());
    assert!(l.frames().is_empty());
}

/// telemprobd killed after reading a record and before staging it closes the connection
/// without an answer: the file must stay (a try is counted) and go on the next run.
#[test]
fn a_daemon_closing_without_an_answer_does_not_get_the_file_deleted() {
    let root = TestRoot::new();
    let dir = drop_dir(&root);
    let f = &every_class()[0];
    publish(&dir, f.name, f.content.as_bytes());
    {
        let silent = RecordListener::bind(&root.socket_path(), None);
        let o = probe(&root, &["--retry-for", "100ms"]);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        assert!(silent.recv_bytes(WAIT).is_some(), "the record was sent");
        assert_eq!(visible(&dir), [f.name]);
        assert_eq!(
            std::fs::read_to_string(tries_file(&root)).unwrap(),
            format!("1 {}\n", f.name)
        );
    }
    let l = TestListener::start(&root);
    // The tries file is the probe's own: it is no temporary file worth the settle wait.
    let started = std::time::Instant::now();
    let o = probe(&root, &["--settle", "10min"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(300));
    assert_eq!(l.wait_for(1, WAIT).len(), 1);
    assert!(visible(&dir).is_empty());
    assert!(!tries_file(&root).exists());
}

#[test]
fn an_invalid_verdict_quarantines_at_once() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let dir = drop_dir(&root);
    let f = &every_class()[1];
    publish(&dir, f.name, f.content.as_bytes());
    l.script(b"I");
    let o = probe(&root, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(names_in(&quarantine_dir(&root)), [f.name]);
}

#[test]
fn an_unreachable_daemon_costs_no_tries_and_loses_nothing() {
    let root = TestRoot::new();
    let dir = drop_dir(&root);
    let files = every_class();
    for f in &files[..3] {
        publish(&dir, f.name, f.content.as_bytes());
    }
    let o = probe(
        &root,
        &["--retry-for", "700ms", "--retry-interval", "100ms"],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("telemprobd unavailable"),
        "{}",
        stderr(&o)
    );
    assert_eq!(visible(&dir).len(), 3);
    assert!(
        !tries_file(&root).exists(),
        "unreachable daemon is not the file's fault"
    );
    // The daemon comes back: everything goes.
    let l = TestListener::start(&root);
    assert_eq!(code(&probe(&root, &[])), 0);
    assert_eq!(l.wait_for(3, WAIT).len(), 3);
    assert!(visible(&dir).is_empty());
}

#[test]
fn opted_out_hosts_keep_their_files() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    root.opt_out();
    let dir = drop_dir(&root);
    let f = &every_class()[0];
    publish(&dir, f.name, f.content.as_bytes());
    let o = probe(&root, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(visible(&dir), [f.name]);
    assert!(l.frames().is_empty());
}

#[test]
fn watch_mode_delivers_files_as_they_arrive() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let dir = drop_dir(&root);
    let files = every_class();
    // Present before the start: the initial pass takes it.
    publish(&dir, files[0].name, files[0].content.as_bytes());
    let cfg = root.config_path().display().to_string();
    let mut d = TestDaemon::spawn(
        &root,
        "swupdprobe",
        &["-f", &cfg, "--watch", "--retry-interval", "200ms"],
    );
    l.wait_for(1, WAIT);
    // Renamed into place (IN_MOVED_TO).
    publish(&dir, files[1].name, files[1].content.as_bytes());
    l.wait_for(2, WAIT);
    // Written in place, slowly (IN_CLOSE_WRITE, only once complete).
    {
        use std::io::Write;
        let mut w = std::fs::File::create(dir.join(files[2].name)).unwrap();
        let (a, b) = files[2].content.as_bytes().split_at(20);
        w.write_all(a).unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        w.write_all(b).unwrap();
    }
    let frames = l.wait_for(3, WAIT);
    assert_eq!(frames[2].record.payload, files[2].content.as_bytes());
    // A staging failure is retried on the next periodic pass.
    l.script(b"F");
    publish(&dir, files[3].name, files[3].content.as_bytes());
    l.wait_for(4, WAIT);
    // Temporaries are left alone.
    std::fs::write(dir.join(".swupd-tmp"), "x").unwrap();
    assert!(wait_until(WAIT, || names_in(&dir) == [".swupd-tmp"]));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_timeout(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(l.frames().len(), 4, "no duplicates");
}

#[test]
fn exit_codes_and_dry_run() {
    let root = TestRoot::new();
    let check = |args: &[&str], want: i32, text: &str| {
        let o = probe(&root, args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{args:?}: {}", stderr(&o));
    };
    check(&["--bogus"], 2, "--bogus");
    check(&["--max-tries", "0"], 2, "max-tries");
    // No drop directory: nothing to drain; watching it is an error.
    check(&[], 0, "");
    check(&["--watch"], 1, "swupd/telemetry");
    let dir = drop_dir(&root);
    let f = &every_class()[0];
    publish(&dir, f.name, f.content.as_bytes());
    let o = probe(&root, &["--dry-run"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with(&format!(
        "{}\nclassification: org.clearlinux/swupd-client/update\nseverity: 1\npayload_format_version: 2\n\n{}",
        f.name, f.content
    )), "{out}");
    assert_eq!(visible(&dir), [f.name], "dry run deletes nothing");
    let o = root
        .command("swupdprobe")
        .args(["-f", "/nonexistent.conf"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}
