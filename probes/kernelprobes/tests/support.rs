//! A stand-in for telemprobd: a Unix listener in a [`TestRoot`] that acknowledges every
//! frame with `A` and keeps the decoded frames and the sender's uid.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libtelemetry::frame::{decode_frame, Frame, MAX_FRAME_SIZE};
use libtelemetry::record::Header;
use telemetrics_tests::TestRoot;

/// One frame as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub frame: Frame,
    pub peer_uid: u32,
}

impl Received {
    pub fn classification(&self) -> &str {
        self.frame.record.headers.get(Header::Classification)
    }
    pub fn severity(&self) -> &str {
        self.frame.record.headers.get(Header::Severity)
    }
    pub fn payload_version(&self) -> &str {
        self.frame.record.headers.get(Header::PayloadFormatVersion)
    }
    pub fn payload(&self) -> String {
        String::from_utf8(self.frame.record.payload.clone()).expect("payload is UTF-8")
    }
}

pub struct FakeDaemon {
    stop: Arc<AtomicBool>,
    /// Times the accept loop found no pending connection.
    idle_polls: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Received>>>,
    pub socket: PathBuf,
}

impl FakeDaemon {
    /// Listen on the root's socket path.
    pub fn start(root: &TestRoot) -> FakeDaemon {
        FakeDaemon::start_at(&root.socket_path())
    }

    pub fn start_at(socket: &Path) -> FakeDaemon {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).expect("bind test socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let idle_polls = Arc::new(AtomicU64::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let idle_polls = idle_polls.clone();
            let received = received.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_secs(5)))
                                .unwrap();
                            let peer_uid = nix::sys::socket::getsockopt(
                                &stream,
                                nix::sys::socket::sockopt::PeerCredentials,
                            )
                            .map(|c| c.uid())
                            .unwrap_or(u32::MAX);
                            let mut buf = Vec::new();
                            (&mut stream)
                                .take(MAX_FRAME_SIZE as u64 + 1)
                                .read_to_end(&mut buf)
                                .expect("read frame");
                            let frame = decode_frame(&buf).expect("valid frame");
                            let _ = stream.write_all(b"A");
                            received.lock().unwrap().push(Received { frame, peer_uid });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            idle_polls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        FakeDaemon {
            stop,
            idle_polls,
            thread: Some(thread),
            received,
            socket: socket.to_path_buf(),
        }
    }

    /// Every frame received so far, in arrival order. Connections already waiting in the
    /// backlog (a probe that exited after writing its frame) are served first.
    pub fn received(&self) -> Vec<Received> {
        let seen = self.idle_polls.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.idle_polls.load(Ordering::SeqCst) < seen + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A command for one of this crate's binaries with both roots of `root` set.
pub fn probe(root: &TestRoot, bin: &str) -> Command {
    let path = match bin {
        "klogscanner" => env!("CARGO_BIN_EXE_klogscanner"),
        "pstoreprobe" => env!("CARGO_BIN_EXE_pstoreprobe"),
        "pstoreclean" => env!("CARGO_BIN_EXE_pstoreclean"),
        "journalprobe" => env!("CARGO_BIN_EXE_journalprobe"),
        other => panic!("unknown binary {other}"),
    };
    let mut c = Command::new(path);
    root.apply_env(&mut c);
    c.env("TELEMETRICS_LOG", "debug");
    c
}

/// Run `c`, killing it after `limit`; panics on a timeout.
pub fn run_with_timeout(c: &mut Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "timed out after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Run with a generous bound and show stderr when `code` is not the exit code.
pub fn run_expect(c: &mut Command, code: i32) -> Output {
    let out = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// This crate's fixture directory.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Copy every file of fixture dir `rel` into `dest`.
pub fn copy_fixture_dir(rel: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(fixture(rel)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
}

/// The records `klogscanner --parse-file` prints for a fixture, split into
/// (header line, payload).
pub fn parse_file_records(path: &Path) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_klogscanner"))
        .arg("--parse-file")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    split_records(&String::from_utf8(out.stdout).unwrap())
}

pub fn split_records(text: &str) -> Vec<(String, String)> {
    let mut records: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(head) = line.strip_prefix("# ") {
            records.push((head.trim_end().to_string(), String::new()));
        } else if let Some(last) = records.last_mut() {
            last.1.push_str(line);
        }
    }
    records
}
