//! What answers on a probe socket in tests: stand-ins for telemprobd, and the real one.
//!
//! * [`RecordListener`]: one fixed reply (or none, as the C telemprobd) and every
//!   connection's raw bytes, in order (the C API tests);
//! * [`TestListener`]: on a [`TestRoot`]'s socket, scripted replies, an optional reply
//!   delay, and the decoded frames it accepted (the probes' tests);
//! * [`telemprobd`]: the built telemprobd on a [`TestRoot`]'s socket, when there is one.
//!
//! Both stand-ins read each connection to its end (the client shuts down its write side
//! after the frame) before answering, and stop when dropped.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use libtelemetry::frame::{decode_frame, Frame};

use crate::daemon::{wait_until, TestDaemon};
use crate::root::TestRoot;

/// The accept loop of both stand-ins: a non-blocking listener polled every 2 ms until
/// stopped; each connection is made blocking, read to its end within `read_timeout` and
/// handed to `serve` with the bytes read and how the read ended. `serve` returns false to
/// end the loop.
struct AcceptLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    fn spawn<F>(listener: UnixListener, read_timeout: Duration, mut serve: F) -> AcceptLoop
    where
        F: FnMut(&mut UnixStream, Vec<u8>, io::Result<usize>) -> bool + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(read_timeout));
                let mut buf = Vec::new();
                let read = conn.read_to_end(&mut buf);
                if !serve(&mut conn, buf, read) {
                    break;
                }
            }
        });
        AcceptLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// End the loop and wait for its thread (idempotent).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Unix socket standing in for telemprobd: every connection is read to its end,
/// answered with `reply` (if any) and its bytes passed on. Stops when dropped (the socket
/// file stays).
pub struct RecordListener {
    // First, so that the loop stops before the receiver goes.
    _accept: AcceptLoop,
    frames: Receiver<Vec<u8>>,
    path: PathBuf,
}

impl RecordListener {
    /// Listen on `path` and answer every record with `reply` (e.g. `Ack::Accepted.byte()`;
    /// `None` closes without replying, as the C telemprobd does).
    pub fn bind(path: &Path, reply: Option<u8>) -> RecordListener {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, frames) = mpsc::channel();
        let accept = AcceptLoop::spawn(listener, Duration::from_secs(5), move |conn, buf, _| {
            // Bytes first, answer second: a client that saw its acknowledgement can rely on
            // the record being visible to the test.
            let delivered = tx.send(buf).is_ok();
            if let Some(b) = reply {
                let _ = conn.write_all(&[b]);
            }
            delivered
        });
        RecordListener {
            _accept: accept,
            frames,
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of the next connection, waiting up to `timeout`.
    pub fn recv_bytes(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.frames.recv_timeout(timeout).ok()
    }

    /// The next frame, decoded; panics if none arrives within 5 s or it does not decode.
    pub fn recv_frame(&self) -> Frame {
        let bytes = self
            .recv_bytes(Duration::from_secs(5))
            .expect("no record arrived on the test socket");
        decode_frame(&bytes).unwrap_or_else(|e| panic!("bad frame ({e}): {bytes:?}"))
    }

    /// Every frame received so far (not waiting).
    pub fn drain(&self) -> Vec<Vec<u8>> {
        self.frames.try_iter().collect()
    }
}

/// A stand-in for telemprobd on a [`TestRoot`]'s `socket_path`: decodes each frame with
/// libtelemetry and answers with a scripted Ack byte (`A` by default). A connection whose
/// read fails is dropped unanswered. Stops and removes the socket when dropped.
pub struct TestListener {
    path: PathBuf,
    frames: Arc<Mutex<Vec<Frame>>>,
    replies: Arc<Mutex<VecDeque<u8>>>,
    delay_ms: Arc<AtomicU64>,
    accept: AcceptLoop,
}

impl TestListener {
    pub fn start(root: &TestRoot) -> TestListener {
        let path = root.socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind test socket");
        listener.set_nonblocking(true).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<Mutex<VecDeque<u8>>> = Arc::new(Mutex::new(VecDeque::new()));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (f, r, dl) = (frames.clone(), replies.clone(), delay_ms.clone());
        let accept = AcceptLoop::spawn(listener, Duration::from_secs(2), move |conn, buf, read| {
            if read.is_err() {
                return true;
            }
            let reply = r.lock().unwrap().pop_front().unwrap_or(b'A');
            let delay = dl.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            if let Ok(frame) = decode_frame(&buf) {
                if reply == b'A' {
                    f.lock().unwrap().push(frame);
                }
            }
            let _ = conn.write_all(&[reply]);
            true
        });
        TestListener {
            path,
            frames,
            replies,
            delay_ms,
            accept,
        }
    }

    /// Answer the next connections with these bytes instead of `A` (frames answered with
    /// anything but `A` are not recorded).
    pub fn script(&self, replies: &[u8]) {
        self.replies.lock().unwrap().extend(replies.iter().copied());
    }

    /// Wait this long between reading a frame and answering (widens the window in which
    /// a client can die with its record staged but unacknowledged).
    pub fn set_reply_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }

    /// Wait until at least `n` frames arrived (panics after `timeout`).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Frame> {
        let ok = wait_until(timeout, || self.frames.lock().unwrap().len() >= n);
        let got = self.frames();
        assert!(ok, "expected {n} frames, got {}: {got:#?}", got.len());
        got
    }
}

impl Drop for TestListener {
    fn drop(&mut self) {
        self.accept.stop();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The built telemprobd listening on `root`'s socket (with `-f` the root's config), or
/// `None` when it was not built: `cargo test --workspace` builds it, `-p <crate>` alone
/// does not.
pub fn telemprobd(root: &TestRoot) -> Option<TestDaemon> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("telemprobd");
    if !bin.exists() {
        eprintln!("skipped: telemprobd is built by `cargo test --workspace`");
        return None;
    }
    let cfg = root.config_path().display().to_string();
    let mut d = TestDaemon::spawn(root, "telemprobd", &["-f", &cfg]);
    d.wait_for_socket(&root.socket_path(), Duration::from_secs(10));
    Some(d)
}
