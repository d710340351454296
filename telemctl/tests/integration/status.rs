//! `telemctl status`: text and JSON from the files the daemons keep.

use std::process::{Child, Command};

use libtelemetry::journal::JournalEntry;
use libtelemetry::status::{status_file, write_status, DaemonStatus, LastDelivery};
use telemetrics_tests::TestRoot;

use crate::common::{run, telemctl};

/// A process whose command name is `name` (a copy of `sleep`), killed on drop.
struct NamedProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl NamedProcess {
    fn spawn(name: &str) -> NamedProcess {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join(name);
        let sleep = ["/bin/sleep", "/usr/bin/sleep"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("sleep");
        std::fs::copy(sleep, &exe).unwrap();
        let child = Command::new(&exe).arg("60").spawn().unwrap();
        NamedProcess { child, _dir: dir }
    }
}

impl Drop for NamedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_json(root: &TestRoot) -> serde_json::Value {
    let mut c = telemctl(root);
    c.args(["status", "--json"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn status_reports_daemons_spool_journal_and_counters() {
    let mut root = TestRoot::new();
    root.set("record_retention_enabled", "true");
    let p = root.paths.clone();
    let postd = NamedProcess::spawn("telempostd");

    let mut probd_status = DaemonStatus::new("telemprobd");
    probd_status.pid = 999_999_999; // not a live pid
    probd_status.add("staged", 7);
    probd_status.add("rejected", 2);
    write_status(&status_file(&p, "telemprobd"), &probd_status).unwrap();
    let mut postd_status = DaemonStatus::new("telempostd");
    postd_status.pid = postd.child.id();
    postd_status.add("delivered", 5);
    postd_status.add("spooled", 3);
    postd_status.add("expired", 1);
    postd_status.last_delivery = Some(LastDelivery {
        time: postd_status.started,
        ok: true,
        // A server's text may carry terminal escapes: JSON keeps them, text shows '?'.
        detail: "HTTP 201 \u{1b}[2J".into(),
    });
    write_status(&status_file(&p, "telempostd"), &postd_status).unwrap();

    std::fs::write(p.default_spool_dir().join("r1"), vec![b'x'; 100]).unwrap();
    std::fs::write(p.default_spool_dir().join("r2"), vec![b'x'; 23]).unwrap();
    std::fs::write(p.default_spool_dir().join(".tmp-staging"), "ignored").unwrap();
    std::fs::create_dir_all(p.default_spool_dir().join(".quarantine")).unwrap();
    std::fs::write(p.default_spool_dir().join(".quarantine/bad"), "x").unwrap();
    std::fs::create_dir_all(p.log_dir()).unwrap();
    let e = JournalEntry::new(
        "57b918ce6644c4b2ab11a25310871fb8".into(),
        1522691281,
        "org.clearlinux/hello/world",
        "5de9de8d5f3c6a7d445d75ba01cc3322",
        "23156fd8-5386-4bfa-ae58-eb2136e72a04",
    )
    .unwrap();
    std::fs::write(p.journal_file(), e.to_line().repeat(3)).unwrap();

    let j = status_json(&root);
    assert_eq!(j["version"], libtelemetry::VERSION);
    assert_eq!(j["opted_in"], true);
    assert_eq!(j["boot_id"], "23156fd8-5386-4bfa-ae58-eb2136e72a04");
    assert_eq!(j["config"]["source"], "etc");
    assert_eq!(
        j["config"]["file"],
        root.config_path().display().to_string()
    );
    assert_eq!(j["config"]["server"], "http://127.0.0.1:9/v2/collector");
    assert_eq!(j["config"]["effective_delivery_mode"], "v2");
    assert_eq!(j["config"]["record_retention_enabled"], true);
    let daemons = j["daemons"].as_array().unwrap();
    assert_eq!(daemons[0]["name"], "telemprobd");
    assert_eq!(daemons[0]["running"], false);
    assert_eq!(daemons[1]["name"], "telempostd");
    assert_eq!(daemons[1]["running"], true);
    assert_eq!(daemons[1]["pid"], postd.child.id());
    assert_eq!(j["spool"]["records"], 2);
    assert_eq!(j["spool"]["bytes"], 123);
    assert!(j["spool"]["oldest_age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(j["spool"]["quarantined"], 1);
    assert_eq!(j["journal"]["entries"], 3);
    assert_eq!(j["journal"]["bytes"], e.to_line().len() as u64 * 3);
    assert_eq!(j["last_delivery"]["ok"], true);
    assert_eq!(j["last_delivery"]["detail"], "HTTP 201 \u{1b}[2J");
    for (counter, n) in [
        ("delivered", 5),
        ("spooled", 3),
        ("expired", 1),
        ("evicted", 0),
        ("rejected", 2),
        ("staged", 7),
    ] {
        assert_eq!(j["counters"][counter], n, "{counter}");
    }

    let mut c = telemctl(&root);
    c.arg("status");
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for want in [
        "Opt-in:         yes",
        &format!("Config:         {} (etc)", root.config_path().display()),
        "server:       http://127.0.0.1:9/v2/collector (delivery auto → v2)",
        "telemprobd:   not running (last pid 999999999)",
        &format!("telempostd:   running (pid {})", postd.child.id()),
        "Spool:          2 records, 123 bytes, oldest ",
        "Quarantined:    1",
        "Journal:        3 entries, ",
        "Last delivery:  ok, HTTP 201 ?[2J, ",
        "Counters:       delivered 5, spooled 3, expired 1, evicted 0, rejected 2, dropped 0, quarantined 0, staged 7",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }
}

#[test]
fn status_survives_a_broken_config_and_missing_files() {
    let root = TestRoot::new();
    std::fs::write(root.config_path(), "[settings]\nrecord_expiry=soon\n").unwrap();
    root.opt_out();
    std::fs::write(status_file(&root.paths, "telempostd"), "{not json").unwrap();
    let j = status_json(&root);
    assert_eq!(j["opted_in"], false);
    assert!(j["config"]["error"]
        .as_str()
        .unwrap()
        .contains("record_expiry"));
    assert_eq!(j["daemons"][0]["running"], false);
    assert!(j["daemons"][1]["status_error"].is_string());
    assert_eq!(j["journal"]["entries"], 0);
    assert!(j["last_delivery"].is_null());
    let mut c = telemctl(&root);
    c.arg("status");
    let r = run(c);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Opt-in:         no"));
    assert!(r.stdout.contains("Last delivery:  none"));
}

/// As installed, the daemons' status files are 0600 and the spool and log directories
/// 0750, all owned by the telemetry user: a normal user's `telemctl status` must say what
/// it cannot read, never report a daemon "not running" or a last delivery of "none" from a
/// file it may not open. Run as uid 65534 (setuid in the forked child) when the test runs as
/// root; skipped otherwise.
#[test]
fn status_as_a_normal_user_says_what_needs_root() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: cannot run telemctl as another user; skipped");
        return;
    }
    let root = TestRoot::new();
    let p = root.paths.clone();
    let probd = NamedProcess::spawn("telemprobd");
    let mut probd_status = DaemonStatus::new("telemprobd");
    probd_status.pid = probd.child.id();
    probd_status.add("staged", 4);
    write_status(&status_file(&p, "telemprobd"), &probd_status).unwrap();
    let mut postd_status = DaemonStatus::new("telempostd");
    postd_status.pid = 999_999_999;
    postd_status.last_delivery = Some(LastDelivery {
        time: postd_status.started,
        ok: true,
        detail: "HTTP 201".into(),
    });
    write_status(&status_file(&p, "telempostd"), &postd_status).unwrap();
    std::fs::write(p.default_spool_dir().join("r1"), "x").unwrap();
    std::fs::create_dir_all(p.log_dir()).unwrap();
    std::fs::write(p.journal_file(), "").unwrap();

    let mode = |path: &std::path::Path, m: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // The temp dirs on the way are traversable; the suite's files as the package makes them.
    mode(root.dir(), 0o755);
    for dir in [p.root().to_path_buf(), p.root().join("var"), p.etc_dir()] {
        mode(&dir, 0o755);
    }
    mode(&root.config_path(), 0o644);
    for daemon in ["telemprobd", "telempostd"] {
        mode(&status_file(&p, daemon), 0o600);
    }
    mode(&p.default_spool_dir(), 0o750);
    mode(&p.log_dir(), 0o750);
    mode(&p.journal_file(), 0o600);

    let mut c = telemctl(&root);
    c.args(["status"]).uid(65534).gid(65534);
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for wrong in [
        "not running",
        "Last delivery:  none",
        "delivered 0",
        "0 records",
    ] {
        assert!(
            !r.stdout.contains(wrong),
            "a normal user's status claims {wrong:?}:\n{}",
            r.stdout
        );
    }
    for want in [
        "telemprobd:   unknown: needs root to read ",
        "telempostd:   unknown: needs root to read ",
        "Spool:          needs root to read ",
        "Journal:        needs root to read ",
        "Last delivery:  needs root",
        "Counters:       needs root",
        "Needs root:     ",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }

    let mut c = telemctl(&root);
    c.args(["status", "--json"]).uid(65534).gid(65534);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["daemons"][0]["status_needs_root"], true);
    assert_eq!(j["spool"]["needs_root"], true);
    assert_eq!(j["journal"]["needs_root"], true);
    assert_eq!(j["needs_root"].as_array().unwrap().len(), 4);

    // Root reads it all.
    let mut c = telemctl(&root);
    c.arg("status");
    let r = run(c);
    assert!(r
        .stdout
        .contains(&format!("telemprobd:   running (pid {})", probd.child.id())));
    assert!(!r.stdout.contains("needs root"), "{}", r.stdout);
}
