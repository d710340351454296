//! telemprobd integration tests: the real binary in a temp root, driven over its socket.

mod frames;
mod lifecycle;
mod load;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use libtelemetry::client::{send_record, Delivery, SendError};
use libtelemetry::record::Header;
use libtelemetry::{parse_staged, HostInfo, Record, StagedRecord};
use telemetrics_tests::{TestDaemon, TestRoot};

/// Generous bound for a daemon to start or stop on a loaded CI machine.
pub const STARTUP: Duration = Duration::from_secs(20);

/// telemprobd started with `-f <root config>`, listening.
pub fn start(root: &TestRoot) -> TestDaemon {
    let cfg = root.config_path();
    let mut d = TestDaemon::spawn(root, "telemprobd", &["-f", cfg.to_str().unwrap()]);
    d.wait_for_socket(&root.socket_path(), STARTUP);
    d
}

/// A record as a probe builds it in this root, with `payload`.
pub fn new_record(root: &TestRoot, payload: &str) -> Record {
    let host = HostInfo::collect(&root.paths);
    let mut r = Record::new(2, "org.test/probd/integration", 1, &host).unwrap();
    r.set_payload(payload.as_bytes()).unwrap();
    r
}

/// Send with the library, as a probe does.
pub fn send(root: &TestRoot, record: &Record) -> Result<Delivery, SendError> {
    send_record(&root.paths, &root.socket_path(), record, None)
}

/// Write `chunks` (pausing between them), close the write side, return every reply byte.
pub fn exchange(socket: &Path, chunks: &[&[u8]], pause: Duration) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    for c in chunks {
        s.write_all(c).unwrap();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut replies = Vec::new();
    let _ = s.read_to_end(&mut replies);
    replies
}

/// Every staged record in the spool, parsed.
pub fn staged(root: &TestRoot) -> Vec<StagedRecord> {
    root.staged_files()
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            parse_staged(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

pub fn event_id(r: &Record) -> String {
    r.headers.get(Header::EventId).to_string()
}

/// Raise this process's fd limit (tests holding many connections).
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}
