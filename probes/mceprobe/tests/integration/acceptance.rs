//! The mceprobe binary pointed at fixture trees, delivering to a test listener (and to the
//! real telemprobd when it is built).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use libtelemetry::frame::Frame;
use libtelemetry::record::Header;
use telemetrics_tests::listener::TestListener;
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

use crate::fixtures::{
    append_pages, backend_status_capture, blob, cases, event_data, page, short_case, tracefs_tree,
    Case, LAYOUT_4X, LAYOUT_6X,
};

const WAIT: Duration = Duration::from_secs(10);

fn probe(root: &TestRoot, args: &[&str]) -> Output {
    let cfg = root.config_path();
    root.command("mceprobe")
        .arg("-f")
        .arg(&cfg)
        .args(args)
        .output()
        .expect("run mceprobe")
}

fn spawn(root: &TestRoot, args: &[&str]) -> TestDaemon {
    let cfg = root.config_path().display().to_string();
    let mut all = vec!["-f", cfg.as_str(), "--poll-interval", "50ms"];
    all.extend_from_slice(args);
    TestDaemon::spawn(root, "mceprobe", &all)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A received frame is the record of `case`, batch index `index`, minus `drop_lines`.
fn check_frame(root: &TestRoot, f: &Frame, case: &Case, index: usize, drop_lines: &[&str]) {
    let h = &f.record.headers;
    assert_eq!(
        h.get(Header::Classification),
        format!("org.clearlinux/mce/{}", case.class),
        "{}",
        case.name
    );
    assert_eq!(h.get(Header::Severity), case.severity.to_string());
    assert_eq!(h.get(Header::PayloadFormatVersion), "1");
    assert!(h.validate().is_ok(), "{h:?}");
    assert_eq!(
        f.cfg_path.as_deref(),
        Some(root.config_path().to_str().unwrap())
    );
    let mut golden = case.golden.replace(
        &format!(
            "\nMCE {}\n",
            cases().iter().position(|c| c.name == case.name).unwrap()
        ),
        &format!("\nMCE {index}\n"),
    );
    for l in drop_lines {
        golden = golden.replace(l, "");
    }
    let payload = String::from_utf8(f.record.payload.clone()).unwrap();
    assert_eq!(payload, golden);
    assert_eq!(
        backend_status_capture(&payload),
        Some(format!("{:08x}", case.mce.status & 0xffff_ffff))
    );
}

#[test]
fn once_reads_the_device_and_sends_every_class() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    root.write_host_file("dev/placeholder", "");
    std::fs::write(root.paths.dev_dir().join("mcelog"), blob()).unwrap();
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let frames = l.wait_for(cases().len(), WAIT);
    assert_eq!(frames.len(), cases().len());
    for (i, (f, c)) in frames.iter().zip(cases()).enumerate() {
        check_frame(&root, f, &c, i, &[]);
    }
}

#[test]
fn replay_of_shorter_records() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let (bytes, golden) = short_case();
    let file = root.dir().join("saved.mce");
    // Two records and the start of a third (a truncated save).
    std::fs::write(&file, [bytes.clone(), bytes, vec![0; 40]].concat()).unwrap();
    let o = probe(
        &root,
        &["--from-file", file.to_str().unwrap(), "--record-len", "88"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ignored 40 trailing bytes"),
        "{}",
        stderr(&o)
    );
    let frames = l.wait_for(2, WAIT);
    assert_eq!(String::from_utf8_lossy(&frames[0].record.payload), golden);
    assert_eq!(
        String::from_utf8_lossy(&frames[1].record.payload),
        golden.replace("\nMCE 0\n", "\nMCE 1\n")
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn tracepoint_is_used_when_there_is_no_device() {
    for (layout, drop_lines) in [
        (LAYOUT_6X, &[][..]),
        (
            LAYOUT_4X,
            &["PPIN 1234567890abcdef\n", "MICROCODE 2006e05\n"][..],
        ),
    ] {
        let root = TestRoot::new();
        let l = TestListener::start(&root);
        let inst = tracefs_tree(root.paths.host_root(), 112, layout, 2);
        let ev = |c: &Case| event_data(112, layout, &c.mce);
        let all = cases();
        append_pages(
            &inst,
            0,
            &[page(&all[..3].iter().map(ev).collect::<Vec<_>>(), false)],
        );
        append_pages(
            &inst,
            1,
            &[page(&all[3..].iter().map(ev).collect::<Vec<_>>(), true)],
        );
        let o = probe(&root, &["--once"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let frames = l.wait_for(all.len(), WAIT);
        for (i, (f, c)) in frames.iter().zip(&all).enumerate() {
            check_frame(&root, f, c, i, drop_lines);
        }
        let err = stderr(&o);
        assert!(err.contains("trace buffer overran"), "{err}");
        // Only the private instance was written, and it was switched off again.
        let tracefs = root.paths.host_root().join("sys/kernel/tracing");
        assert_eq!(read(&inst.join("events/mce/mce_record/enable")), "0");
        assert_eq!(read(&inst.join("buffer_percent")), "0");
        assert_eq!(read(&tracefs.join("events/mce/mce_record/enable")), "0\n");
        assert_eq!(read(&tracefs.join("tracing_on")), "1\n");
        // A real tracefs removes the instance on rmdir; the fixture dir is not empty.
        assert!(err.contains("cannot remove tracefs instance"), "{err}");
    }
}

#[test]
fn tracefs_instance_is_created_when_absent_and_removed_on_exit() {
    let root = TestRoot::new();
    let tracefs = root.paths.host_root().join("sys/kernel/tracing");
    std::fs::create_dir_all(tracefs.join("instances")).unwrap();
    // mkdir succeeds but a plain directory has no format file: the probe must fail
    // cleanly and remove the (empty) instance it created.
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("format"), "{}", stderr(&o));
    assert!(!tracefs.join("instances/mceprobe").exists());
}

#[test]
fn follow_mode_reads_records_as_they_arrive() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    root.write_host_file("dev/placeholder", "");
    let dev = root.paths.dev_dir().join("mcelog");
    let all = blob();
    std::fs::write(&dev, &all[..256]).unwrap();
    let mut d = spawn(&root, &[]);
    l.wait_for(2, WAIT);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&dev).unwrap();
        // Half a record first: nothing may be sent until the rest arrives.
        f.write_all(&all[256..320]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(l.frames().len(), 2);
        f.write_all(&all[320..]).unwrap();
    }
    let frames = l.wait_for(cases().len(), WAIT);
    let classes: Vec<&str> = frames
        .iter()
        .map(|f| f.record.headers.get(Header::Classification))
        .collect();
    assert_eq!(
        classes,
        cases()
            .iter()
            .map(|c| format!("org.clearlinux/mce/{}", c.class))
            .collect::<Vec<_>>()
    );
    d.signal(libc::SIGTERM);
    let st = d.wait_timeout(WAIT).expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert_eq!(l.frames().len(), cases().len(), "no duplicates");
}

#[test]
fn follow_mode_on_the_tracepoint_cleans_up_on_sigterm() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    let inst = tracefs_tree(root.paths.host_root(), 112, LAYOUT_6X, 2);
    let enable = inst.join("events/mce/mce_record/enable");
    let mut d = spawn(&root, &[]);
    assert!(wait_until(WAIT, || read(&enable) == "1"), "event enabled");
    let c = &cases()[2];
    append_pages(
        &inst,
        1,
        &[page(&[event_data(112, LAYOUT_6X, &c.mce)], false)],
    );
    let frames = l.wait_for(1, WAIT);
    assert_eq!(
        frames[0].record.headers.get(Header::Classification),
        "org.clearlinux/mce/SRAO"
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_timeout(WAIT).and_then(|s| s.code()), Some(0));
    assert_eq!(read(&enable), "0");
}

#[test]
fn transient_rejections_are_retried_without_duplicates() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    // Overloaded, then staging failed: both are retried.
    l.script(b"OF");
    root.write_host_file("dev/placeholder", "");
    std::fs::write(root.paths.dev_dir().join("mcelog"), &blob()[..384]).unwrap();
    let mut d = spawn(&root, &[]);
    let frames = l.wait_for(3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(l.frames().len(), 3);
    let classes: Vec<&str> = frames
        .iter()
        .map(|f| f.record.headers.get(Header::Classification))
        .collect();
    assert_eq!(
        classes,
        [
            "org.clearlinux/mce/corrected",
            "org.clearlinux/mce/UCNA",
            "org.clearlinux/mce/SRAO"
        ]
    );
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_timeout(WAIT).and_then(|s| s.code()), Some(0));
}

#[test]
fn opted_out_hosts_send_nothing() {
    let root = TestRoot::new();
    let l = TestListener::start(&root);
    root.opt_out();
    root.write_host_file("dev/placeholder", "");
    std::fs::write(root.paths.dev_dir().join("mcelog"), blob()).unwrap();
    let o = probe(&root, &["--once"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(100));
    assert!(l.frames().is_empty());
}

#[test]
fn exit_codes() {
    let root = TestRoot::new();
    let check = |args: &[&str], want: i32, text: &str| {
        let o = probe(&root, args);
        assert_eq!(code(&o), want, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(text), "{args:?}: {}", stderr(&o));
    };
    // No /dev/mcelog, no tracefs.
    check(&["--once"], 5, "no machine-check source");
    check(&["--bogus"], 2, "--bogus");
    let saved = root.dir().join("x.mce");
    std::fs::write(&saved, blob()).unwrap();
    check(
        &["--from-file", saved.to_str().unwrap(), "--record-len", "10"],
        1,
        "record length 10",
    );
    // Records read but nobody listening: undelivered.
    check(
        &["--from-file", saved.to_str().unwrap()],
        4,
        "could not be delivered",
    );
    let o = root
        .command("mceprobe")
        .args(["-f", "/nonexistent/telemetrics.conf", "--once"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let o = root.command("mceprobe").arg("--version").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains(libtelemetry::VERSION));
}

#[test]
fn dry_run_prints_records() {
    let root = TestRoot::new();
    let saved = root.dir().join("x.mce");
    std::fs::write(&saved, &blob()[..128]).unwrap();
    let o = probe(
        &root,
        &["--dry-run", "--from-file", saved.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("classification: org.clearlinux/mce/corrected\nseverity: 2\n\n"));
    assert!(out.contains(&cases()[0].golden), "{out}");
}
