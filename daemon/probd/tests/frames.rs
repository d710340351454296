//! What telemprobd does with the bytes it receives: staged bytes, reassembly, rejections.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use libtelemetry::client::{send_frame, Ack, Delivery, SendError, SEND_TIMEOUT};
use libtelemetry::record::Header;
use libtelemetry::{encode_frame, encode_staged, Headers, Record};
use telemetrics_tests::TestRoot;

use super::{event_id, exchange, new_record, send, staged, start};

const STATIC_ID: &str = "5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e";

/// A record with fixed values, so the staged bytes can be spelled out.
fn golden_record() -> Record {
    let values = [
        "4",
        "org.test/probd/golden",
        "2",
        "FFFFFFFF",
        "1700000000",
        "x86_64",
        "no_sv_file|no_pn_file|no_pvr_file",
        "42",
        "6.1.0-test",
        "1",
        "testos",
        "no_bn_file|no_bv_file",
        "Test CPU @ 1.00GHz",
        "no_bv_file",
        "0123456789abcdef0123456789abcdef",
    ];
    let mut h = Headers::default();
    for (i, v) in values.iter().enumerate() {
        h.0[i] = v.to_string();
    }
    Record {
        headers: h,
        payload: b"line1\nline2".to_vec(),
    }
}

const GOLDEN_STAGED: &str = "record_format_version: 4\n\
classification: org.test/probd/golden\n\
severity: 2\n\
machine_id: 5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e\n\
creation_timestamp: 1700000000\n\
arch: x86_64\n\
host_type: no_sv_file|no_pn_file|no_pvr_file\n\
build: 42\n\
kernel_version: 6.1.0-test\n\
payload_format_version: 1\n\
system_name: testos\n\
board_name: no_bn_file|no_bv_file\n\
cpu_model: Test CPU @ 1.00GHz\n\
bios_version: no_bv_file\n\
event_id: 0123456789abcdef0123456789abcdef\n\
line1\n\
line2\n";

#[test]
fn golden_staged_bytes_from_the_rust_library() {
    let root = TestRoot::new();
    std::fs::write(root.paths.static_machine_id_file(), STATIC_ID).unwrap();
    let _d = start(&root);
    let r = golden_record();
    assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged);
    let files = root.staged_files();
    assert_eq!(files.len(), 1, "one staged file");
    assert_eq!(
        String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap(),
        GOLDEN_STAGED
    );
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        libtelemetry::parse_staged_name(&name),
        Some(libtelemetry::StagedSender::Uid(
            nix::unistd::geteuid().as_raw()
        )),
        "mkstemp-style name with the sender's uid: {name}"
    );
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // With a CFG field, the staged file starts with the config path line.
    let cfg = root.config_path().to_str().unwrap().to_string();
    let before = root.staged_files();
    let d = libtelemetry::client::send_record(&root.paths, &root.socket_path(), &r, Some(&cfg));
    assert_eq!(d.unwrap(), Delivery::Acknowledged);
    let new: Vec<_> = root
        .staged_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(
        String::from_utf8(std::fs::read(&new[0]).unwrap()).unwrap(),
        format!("CFG:{cfg}\n{GOLDEN_STAGED}")
    );
}

#[test]
fn a_probe_record_is_staged_with_the_machine_id_replaced() {
    let root = TestRoot::new();
    let _d = start(&root);
    let r = new_record(&root, "hello world");
    assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged);
    let machine_id = std::fs::read_to_string(root.paths.machine_id_file()).unwrap();
    assert_eq!(machine_id.len(), 32);
    let mut expected = r.clone();
    expected.headers.set(Header::MachineId, machine_id.as_str());
    let files = root.staged_files();
    assert_eq!(files.len(), 1);
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        encode_staged(&expected, None)
    );
}

#[test]
fn frames_split_into_one_byte_writes_are_reassembled() {
    let root = TestRoot::new();
    let _d = start(&root);
    let r = new_record(&root, "split into single bytes");
    let frame = encode_frame(&r, None);
    let bytes: Vec<&[u8]> = frame.chunks(1).collect();
    let replies = exchange(&root.socket_path(), &bytes, Duration::from_micros(200));
    assert_eq!(replies, [Ack::Accepted.byte()]);
    let s = staged(&root);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].payload(), b"split into single bytes");
}

#[test]
fn several_frames_on_one_connection_are_handled_in_order() {
    let root = TestRoot::new();
    let _d = start(&root);
    let a = encode_frame(&new_record(&root, "first"), None);
    let mut bad = new_record(&root, "second");
    bad.headers.set(Header::Severity, "9");
    let b = encode_frame(&bad, None);
    let c = encode_frame(&new_record(&root, "third"), None);
    let mut all = a.clone();
    all.extend_from_slice(&b);
    all.extend_from_slice(&c);
    // All three in one write, then the same split at odd places.
    let replies = exchange(&root.socket_path(), &[&all], Duration::ZERO);
    assert_eq!(replies, b"AIA");
    let (x, y) = all.split_at(a.len() + 7);
    let replies = exchange(&root.socket_path(), &[x, y], Duration::from_millis(20));
    assert_eq!(replies, b"AIA");
    let mut payloads: Vec<Vec<u8>> = staged(&root).iter().map(|s| s.payload().to_vec()).collect();
    payloads.sort();
    assert_eq!(
        payloads,
        vec![
            b"first".to_vec(),
            b"first".to_vec(),
            b"third".to_vec(),
            b"third".to_vec()
        ]
    );
}

/// A good frame and a variant, for the rejection table.
fn frame_with(root: &TestRoot, edit: impl FnOnce(&mut Record)) -> Vec<u8> {
    let mut r = new_record(root, "payload");
    edit(&mut r);
    encode_frame(&r, None)
}

#[test]
fn bad_frames_get_a_reply_and_a_log_line_and_the_daemon_keeps_serving() {
    let root = TestRoot::new();
    let d = start(&root);
    let good = frame_with(&root, |_| {});
    let mut wrong_header_size = good.clone();
    wrong_header_size[4..8].copy_from_slice(&9000u32.to_ne_bytes());
    // header_size reaching 10 bytes into the payload (it would be staged cut).
    let mut long_header_size = good.clone();
    let hs = u32::from_ne_bytes(good[4..8].try_into().unwrap());
    long_header_size[4..8].copy_from_slice(&(hs + 10).to_ne_bytes());
    let mut renamed_header = good.clone();
    let pos = renamed_header
        .windows(8)
        .position(|w| w == b"severity")
        .unwrap();
    renamed_header[pos] = b'S';
    let mut no_terminator = good.clone();
    *no_terminator.last_mut().unwrap() = b'x';

    let check = |name: &str, chunks: &[&[u8]], expected_reply: &[u8], log: &str| {
        let replies = exchange(&root.socket_path(), chunks, Duration::ZERO);
        assert_eq!(replies, expected_reply, "{name}: reply");
        assert!(
            d.wait_for_log(log, Duration::from_secs(5)),
            "{name}: log line {log:?} missing:\n{}",
            d.log()
        );
        // The daemon still serves a normal probe.
        let r = new_record(&root, name);
        assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged, "{name}");
    };
    check(
        "oversized",
        &[&20000u32.to_ne_bytes(), &[b'a'; 64]],
        b"I",
        "record_size 20000",
    );
    check("undersized", &[&3u32.to_ne_bytes()], b"I", "record_size 3");
    check(
        "garbage",
        &[b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"],
        b"I",
        "rejected frame: record_size",
    );
    check(
        "truncated",
        &[&good[..good.len() - 10]],
        b"I",
        "connection closed after",
    );
    check(
        "truncated size",
        &[&good[..2]],
        b"I",
        "before the frame size was complete",
    );
    check(
        "header size",
        &[&wrong_header_size],
        b"I",
        "header_size 9000",
    );
    check(
        "header size 10 too large",
        &[&long_header_size],
        b"I",
        &format!("header_size {}", hs + 10),
    );
    check("header name", &[&renamed_header], b"I", "incorrect headers");
    check(
        "terminator",
        &[&no_terminator],
        b"I",
        "not terminated by NUL",
    );
    /// Makes one header value invalid.
    type Spoil = fn(&mut Record);
    let bad_values: [(&str, Spoil, &str); 4] = [
        (
            "severity 0",
            |r| r.headers.set(Header::Severity, "0"),
            "severity \"0\"",
        ),
        (
            "classification",
            |r| r.headers.set(Header::Classification, "no-slashes"),
            "invalid classification",
        ),
        (
            "event id",
            |r| r.headers.set(Header::EventId, "XYZ"),
            "invalid event id",
        ),
        (
            "timestamp",
            |r| r.headers.set(Header::CreationTimestamp, "yesterday"),
            "creation_timestamp",
        ),
    ];
    for (name, edit, log) in bad_values {
        let f = frame_with(&root, edit);
        check(name, &[&f], b"I", log);
    }
    // A config path with a newline would break the staged file's CFG line.
    let split_cfg = encode_frame(
        &new_record(&root, "payload"),
        Some("/etc/t.conf\nmachine_id: forged"),
    );
    check("CFG newline", &[&split_cfg], b"I", "control character");
    // Only the good probes' records were staged.
    let s = staged(&root);
    assert_eq!(s.len(), 14);
    assert!(s.iter().all(|r| r.payload() != b"payload"));
}

#[test]
fn payload_of_8192_bytes_is_accepted() {
    let root = TestRoot::new();
    let _d = start(&root);
    let payload = "p".repeat(8192);
    let r = new_record(&root, &payload);
    assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged);
    let s = staged(&root);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].payload(), payload.as_bytes());
    assert_eq!(s[0].body.len(), 8193, "payload plus the staged newline");
    assert_eq!(s[0].headers.get(Header::EventId), event_id(&r));
}

#[test]
fn not_opted_in_is_refused_and_nothing_is_staged() {
    let root = TestRoot::new();
    let d = start(&root);
    root.opt_out();
    let frame = encode_frame(&new_record(&root, "private"), None);
    match send_frame(&root.socket_path(), &frame, SEND_TIMEOUT) {
        Err(SendError::Rejected(Ack::NotOptedIn)) => {}
        other => panic!("expected NotOptedIn, got {other:?}"),
    }
    assert!(root.staged_files().is_empty());
    assert!(d.wait_for_log("not opted in", Duration::from_secs(5)));
    root.opt_in();
    assert_eq!(
        send_frame(&root.socket_path(), &frame, SEND_TIMEOUT).unwrap(),
        Delivery::Acknowledged
    );
    assert_eq!(root.staged_files().len(), 1);
}

/// A watcher of the spool (telempostd, or a C telempostd that reads whatever is closed
/// there) sees complete records arrive by rename, and never a temporary file.
#[test]
fn a_spool_watcher_sees_only_complete_records() {
    use inotify::{Inotify, WatchMask};
    let root = TestRoot::new();
    let _d = start(&root);
    // The first record creates the temporary directory.
    assert_eq!(
        send(&root, &new_record(&root, "first")).unwrap(),
        Delivery::Acknowledged
    );
    let mut inotify = Inotify::init().unwrap();
    inotify
        .watches()
        .add(root.spool_dir(), WatchMask::ALL_EVENTS)
        .unwrap();
    for i in 0..20 {
        let r = new_record(&root, &format!("watched {i}"));
        assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved_in = 0;
    let mut names = Vec::new();
    loop {
        let events = match inotify.read_events(&mut buf) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        };
        let mut any = false;
        for e in events {
            any = true;
            if let Some(name) = e.name {
                let name = name.to_string_lossy().into_owned();
                if e.mask.contains(inotify::EventMask::MOVED_TO) {
                    moved_in += 1;
                }
                names.push(name);
            }
        }
        if !any {
            break;
        }
    }
    assert_eq!(moved_in, 20, "{names:?}");
    for n in &names {
        assert!(
            libtelemetry::parse_staged_name(n).is_some(),
            "the watcher saw {n:?}"
        );
    }
}

/// `durability` takes strict, batched or none; anything else is refused at start.
#[test]
fn every_durability_mode_acknowledges_and_a_bad_one_is_refused() {
    for mode in ["strict", "batched", "none"] {
        let mut root = TestRoot::new();
        root.set("durability", mode);
        let d = start(&root);
        assert!(d.wait_for_log(&format!("durability={mode}"), Duration::from_secs(5)));
        let r = new_record(&root, mode);
        assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged);
        let mut crash = new_record(&root, "critical");
        crash.headers.set(Header::Severity, "4");
        assert_eq!(send(&root, &crash).unwrap(), Delivery::Acknowledged);
        assert_eq!(staged(&root).len(), 2);
    }
    let mut root = TestRoot::new();
    root.set("durability", "sometimes");
    let out = root
        .command("telemprobd")
        .args(["-f", root.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not strict, batched or none"));
}
