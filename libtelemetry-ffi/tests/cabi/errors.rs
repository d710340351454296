//! Bad input and bad peers: every function returns a negative errno, and the process
//! survives (no exit, abort, panic or SIGPIPE) and is never blocked for more than ~1 s.

use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use libtelemetry::client::Ack;
use telemetrics_tests::cabi::RecordListener;
use telemetrics_tests::TestRoot;

use super::{assert_tap_passed, elapsed_ms, program, run_in, send_results, stdout, Lang};

#[test]
fn null_and_invalid_arguments() {
    let root = TestRoot::new();
    let dir = root.dir().display().to_string();
    assert_tap_passed(&run_in(&root, &program("errors", Lang::C), &[&dir]));
}

/// Run the sample once in `root` and return its single send result.
fn send_once(root: &TestRoot, config: &str) -> (i32, String) {
    let out = run_in(root, &program("sample", Lang::C), &[config, "x", "1"]);
    assert!(
        out.status.success(),
        "sample died: {:?}\n{}",
        out.status,
        stdout(&out)
    );
    let rc = send_results(&out);
    assert_eq!(rc.len(), 1, "{}", stdout(&out));
    (rc[0], String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn send_failures_are_negative_errnos() {
    let root = TestRoot::new();
    // No socket file: the daemon is not installed.
    assert_eq!(send_once(&root, "-").0, -libc::ENOENT);
    // A stale socket nobody listens on.
    drop(UnixListener::bind(root.socket_path()).unwrap());
    assert_eq!(send_once(&root, "-").0, -libc::ECONNREFUSED);
    std::fs::remove_file(root.socket_path()).unwrap();
    // Not opted in: nothing is sent.
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    root.opt_out();
    assert_eq!(send_once(&root, "-").0, -libc::ECONNREFUSED);
    root.opt_in();
    assert_eq!(send_once(&root, "-").0, 0);
    // The listener acknowledges a record before handing its bytes over: wait for them.
    let first = listener
        .recv_bytes(Duration::from_secs(5))
        .expect("the opted-in record");
    assert!(libtelemetry::decode_frame(&first).is_ok());
    assert!(
        listener.recv_bytes(Duration::from_millis(200)).is_none(),
        "only the opted-in record arrived"
    );
}

#[test]
fn daemon_rejections_map_to_errnos() {
    for (reply, errno) in [
        (Ack::Invalid, -libc::EINVAL),
        (Ack::Overloaded, -libc::EAGAIN),
        (Ack::NotOptedIn, -libc::ECONNREFUSED),
        (Ack::StagingFailed, -libc::EIO),
    ] {
        let root = TestRoot::new();
        let _listener = RecordListener::bind(&root.socket_path(), Some(reply.byte()));
        assert_eq!(send_once(&root, "-").0, errno, "{reply:?}");
    }
}

#[test]
fn unparsable_config_file_is_an_error_not_an_exit() {
    let root = TestRoot::new();
    let bad = root.dir().join("bad.conf");
    std::fs::write(&bad, "[settings]\nthis line has no equals sign\n").unwrap();
    let (rc, stderr) = send_once(&root, &bad.display().to_string());
    assert_eq!(rc, -libc::EINVAL);
    assert!(
        stderr.contains("bad.conf:2"),
        "diagnostic names file and line: {stderr}"
    );
}

#[test]
fn peer_reset_raises_no_sigpipe() {
    let root = TestRoot::new();
    let listener = UnixListener::bind(root.socket_path()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    listener.set_nonblocking(true).unwrap();
    // Accept and close at once, without reading: the client's send or receive fails.
    let closer = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    let out = run_in(&root, &program("sample", Lang::C), &["-", "x", "40"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    closer.join().unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "killed by a signal: {:?}",
        out.status
    );
    assert!(out.status.success(), "{}", stdout(&out));
    let results = send_results(&out);
    assert_eq!(results.len(), 40);
    for rc in results {
        assert!(
            [0, -libc::EPIPE, -libc::ECONNRESET].contains(&rc),
            "unexpected rc {rc}"
        );
    }
}

#[test]
fn silent_daemon_returns_within_about_a_second() {
    // Accepts and holds the connection, never reads, never replies.
    let root = TestRoot::new();
    let listener = UnixListener::bind(root.socket_path()).unwrap();
    let holder = std::thread::spawn(move || {
        let conn = listener.accept().map(|(c, _)| c);
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let out = run_in(&root, &program("sample", Lang::C), &["-", "x", "1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    // The bytes were all written; the reply never came within the budget.
    assert_eq!(send_results(&out), [0]);
    // The budget is 1 s; the margin is for a loaded machine. Without a bound the send
    // would wait ~3 s, until the holder lets go.
    assert!(
        elapsed_ms(&out) < 2500,
        "send blocked {} ms",
        elapsed_ms(&out)
    );
    holder.join().unwrap();
}

#[test]
fn daemon_that_never_accepts_returns_within_about_a_second() {
    let root = TestRoot::new();
    let _listener = UnixListener::bind(root.socket_path()).unwrap();
    let out = run_in(&root, &program("sample", Lang::C), &["-", "x", "1"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(send_results(&out), [0]);
    // The budget is 1 s (margin for a loaded machine); unbounded, it would never return.
    assert!(
        elapsed_ms(&out) < 2500,
        "send blocked {} ms",
        elapsed_ms(&out)
    );
}
