//! A stand-in for telemprobd: a Unix listener on the root's `socket_path` that decodes each
//! frame with libtelemetry and answers with a scripted Ack byte (`A` by default).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use libtelemetry::frame::{decode_frame, Frame};
use telemetrics_tests::{wait_until, TestRoot};

pub struct TestListener {
    path: PathBuf,
    frames: Arc<Mutex<Vec<Frame>>>,
    replies: Arc<Mutex<VecDeque<u8>>>,
    stop: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TestListener {
    pub fn start(root: &TestRoot) -> TestListener {
        let path = root.socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind test socket");
        listener.set_nonblocking(true).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let replies: Arc<Mutex<VecDeque<u8>>> = Arc::new(Mutex::new(VecDeque::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (f, r, s, dl) = (
            frames.clone(),
            replies.clone(),
            stop.clone(),
            delay_ms.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = Vec::new();
                if conn.read_to_end(&mut buf).is_err() {
                    continue;
                }
                let delay = dl.load(Ordering::Relaxed);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                let reply = r.lock().unwrap().pop_front().unwrap_or(b'A');
                if let Ok(frame) = decode_frame(&buf) {
                    if reply == b'A' {
                        f.lock().unwrap().push(frame);
                    }
                }
                let _ = conn.write_all(&[reply]);
            }
        });
        TestListener {
            path,
            frames,
            replies,
            stop,
            delay_ms,
            thread: Some(thread),
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
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
