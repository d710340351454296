//! What a sender is trusted with: its identity as the kernel reports it, and the `CFG:`
//! path it may name.

use libtelemetry::client::Ack;
use libtelemetry::{encode_frame, parse_staged_name, StagedSender};
use telemetrics_tests::TestRoot;

use super::{allow_other_users, is_root, new_record, send_as, start, SentAs};

/// The uid of `nobody`, used as an unprivileged second user.
const NOBODY: u32 = 65534;

fn senders(root: &TestRoot) -> Vec<StagedSender> {
    root.staged_files()
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            parse_staged_name(name).unwrap_or_else(|| panic!("not a staged name: {name}"))
        })
        .collect()
}

#[test]
fn staged_names_record_the_senders_uid() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to send as a second user");
        return;
    }
    let root = TestRoot::new();
    let _d = start(&root);
    allow_other_users(&root);
    let frame = encode_frame(&new_record(&root, "from nobody"), None);
    assert_eq!(
        send_as(NOBODY, NOBODY, &root.socket_path(), &frame),
        SentAs::Reply(Ack::Accepted.byte())
    );
    let frame = encode_frame(&new_record(&root, "from root"), None);
    assert_eq!(
        send_as(0, 0, &root.socket_path(), &frame),
        SentAs::Reply(Ack::Accepted.byte())
    );
    let mut got = senders(&root);
    got.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(got, vec![StagedSender::Uid(0), StagedSender::Uid(NOBODY)]);
}

/// A config file at `path` with `mode`, owned by `uid`.
fn cfg_file(path: &std::path::Path, mode: u32, uid: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "[settings]\nserver=http://127.0.0.1:9/elsewhere\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if uid != nix::unistd::geteuid().as_raw() {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    }
    path.to_str().unwrap().to_string()
}

/// F1/F2: a `CFG:` naming a FIFO or a device, or a symlink, is refused with `I` and a log
/// line before anything is staged, so telempostd never opens it.
#[test]
fn cfg_paths_that_are_not_regular_files_are_refused() {
    let root = TestRoot::new();
    let d = start(&root);
    let dir = root.dir().join("cfgs");
    std::fs::create_dir(&dir).unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let good = cfg_file(&dir.join("good.conf"), 0o644, me);
    let fifo = dir.join("fifo.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let link = dir.join("link.conf");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let send = |cfg: &str| {
        let frame = encode_frame(&new_record(&root, "cfg"), Some(cfg));
        super::exchange(&root.socket_path(), &[&frame], std::time::Duration::ZERO)
    };
    for (cfg, reason) in [
        (fifo.to_str().unwrap(), "FIFO"),
        ("/dev/zero", "character device"),
        (link.to_str().unwrap(), "symbolic link"),
        ("/nonexistent/t.conf", "cannot look at"),
    ] {
        assert_eq!(send(cfg), b"I", "{cfg}");
        assert!(
            d.wait_for_log(reason, std::time::Duration::from_secs(5)),
            "{cfg}: {reason:?} not logged:\n{}",
            d.log()
        );
    }
    assert!(root.staged_files().is_empty());
    assert_eq!(send(&good), b"A");
    assert_eq!(root.staged_files().len(), 1);
}

/// F7 (and the trust model): an unprivileged sender may only name a file it could read
/// itself, owned by root or by itself.
#[test]
fn cfg_files_the_sender_cannot_read_are_refused() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to send as a second user and to chown files");
        return;
    }
    let root = TestRoot::new();
    let _d = start(&root);
    allow_other_users(&root);
    let dir = root.dir().join("cfgs");
    std::fs::create_dir(&dir).unwrap();
    let private = root.dir().join("private");
    std::fs::create_dir(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cases = [
        (cfg_file(&dir.join("root-0600.conf"), 0o600, 0), b'I'),
        (cfg_file(&dir.join("root-0644.conf"), 0o644, 0), b'A'),
        (cfg_file(&dir.join("own-0600.conf"), 0o600, NOBODY), b'A'),
        (cfg_file(&dir.join("own-0200.conf"), 0o244, NOBODY), b'I'),
        (cfg_file(&dir.join("other-0644.conf"), 0o644, 1234), b'I'),
        (cfg_file(&private.join("root-0644.conf"), 0o644, 0), b'I'),
    ];
    let mut accepted = 0;
    for (cfg, expected) in &cases {
        let frame = encode_frame(&new_record(&root, "cfg"), Some(cfg));
        assert_eq!(
            send_as(NOBODY, NOBODY, &root.socket_path(), &frame),
            SentAs::Reply(*expected),
            "{cfg}"
        );
        accepted += usize::from(*expected == b'A');
    }
    assert_eq!(root.staged_files().len(), accepted);
    // Root may name a root-owned file only it can read.
    let frame = encode_frame(&new_record(&root, "cfg"), Some(&cases[0].0));
    assert_eq!(
        send_as(0, 0, &root.socket_path(), &frame),
        SentAs::Reply(b'A')
    );
}

/// F5: one unprivileged uid holding ~9,000 half-sent connections does not keep root's
/// probes waiting: each of root's records is acknowledged within the client's own budget.
#[test]
fn a_user_holding_thousands_of_connections_does_not_delay_root() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to attack as a second user");
        return;
    }
    super::raise_fd_limit();
    let root = TestRoot::new();
    let d = start(&root);
    allow_other_users(&root);
    let frame = encode_frame(&new_record(&root, "half"), None);
    let rss_before = super::rss_kib(d.pid());
    let (attacker, held) = super::hold_connections_as(
        NOBODY,
        NOBODY,
        &root.socket_path(),
        9000,
        &frame[..frame.len() / 2],
    );
    eprintln!("attacker opened {held} connections");
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..30 {
        let r = new_record(&root, &format!("root {i}"));
        let t0 = std::time::Instant::now();
        let sent = super::send(&root, &r);
        slowest = slowest.max(t0.elapsed());
        assert_eq!(
            sent.unwrap(),
            libtelemetry::client::Delivery::Acknowledged,
            "record {i}"
        );
    }
    let rss_attack = super::rss_kib(d.pid());
    // SAFETY: killing and reaping the child forked above.
    unsafe {
        libc::kill(attacker, libc::SIGKILL);
        libc::waitpid(attacker, std::ptr::null_mut(), 0);
    }
    // Figures for the record (memory is measured, not asserted, in tests).
    let t_end = std::time::Instant::now();
    let mut rss_after = rss_attack;
    while t_end.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        rss_after = super::rss_kib(d.pid());
    }
    eprintln!(
        "slowest root send {slowest:?}; daemon RSS KiB before {rss_before:?}, under attack \
         {rss_attack:?}, 10 s after {rss_after:?}"
    );
    assert!(d.log().contains("over the sender's share"), "{}", d.log());
    assert_eq!(root.staged_files().len(), 30);
}
