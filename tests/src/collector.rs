//! An in-process HTTP collector on loopback that validates requests like the public
//! telemetrics-backend collector (`backend-collector.md` §2).
//!
//! * HTTP/1.1 on `127.0.0.1:<ephemeral>`, one thread per connection, keep-alive,
//!   `Content-Length` and chunked bodies, a 4 KiB request-header limit (beyond it the
//!   connection is reset with no response, as uWSGI does).
//! * `POST /v2/collector` and `POST /`: the v2 header checks of §2.2, in order, first failure
//!   wins → 400 `{"message": …}` (or 500 where the real collector crashes); success → 201
//!   with the stored record as JSON (§2.4). A form Content-Type or a chunked body stores an
//!   empty payload, as uWSGI/Flask do.
//! * `POST /v3/collector`: the JSON object of the v3 client (15 header keys then `payload`,
//!   all strings) → 201. `POST /v1/logs`: any JSON object → 200 `{}`.
//! * Failure injection: [`Behavior`] (status, per-record status, slow answers, connection
//!   resets) and [`Collector::refuse`] / [`Collector::resume`] (stop/start listening on the
//!   same port, closing kept-alive connections).
//! * Every request is recorded ([`Collector::attempts`]; the accepted ones in
//!   [`Collector::requests`]) with its method, path, headers in wire order, body, connection
//!   number and answer. [`Collector::sink`] only counts (for benchmarks).
//!
//! The parts, each using only those listed before it: `http` (reading requests, writing
//! responses), `validate` (what the public collector accepts), `server` (shared state,
//! connection threads, failure injection, routing) and this module's [`Collector`], the
//! handle tests hold; `silent` ([`SilentServer`]) stands alone.

mod http;
mod server;
mod silent;
mod validate;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use http::{Request, Response, MAX_BODY, MAX_HEADER_BLOCK};
pub use server::Behavior;
pub use silent::SilentServer;
pub use validate::{
    otlp_log_records, utc_text, validate_otlp_logs, validate_v2, validate_v3, Rejection,
    TELEMETRY_ID, V3_KEYS,
};

use server::{spawn_acceptor, Shared, State};

/// The running collector. Dropping it stops listening and closes its connections.
pub struct Collector {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Collector {
    /// A validating, recording collector on an ephemeral loopback port.
    pub fn start() -> Collector {
        Collector::start_with(true)
    }

    /// A counting-only collector (nothing kept in memory), for benchmarks.
    pub fn sink() -> Collector {
        Collector::start_with(false)
    }

    fn start_with(record: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            behavior: Mutex::new(Behavior::Normal),
            record,
            connections: AtomicUsize::new(0),
            requests_read: AtomicUsize::new(0),
            listening: AtomicBool::new(true),
            streams: Mutex::new(HashMap::new()),
            workers: Mutex::new((None, 0)),
            worker_free: Condvar::new(),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
            busy_nanos: std::sync::atomic::AtomicU64::new(0),
        });
        spawn_acceptor(listener, Arc::clone(&shared));
        Collector { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn v2_url(&self) -> String {
        self.url("/v2/collector")
    }

    pub fn v3_url(&self) -> String {
        self.url("/v3/collector")
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self.shared.behavior.lock().unwrap() = b;
    }

    /// Handle at most `n` requests at once (others wait for a worker), like a server with
    /// `n` worker processes; `None`: no limit.
    pub fn set_workers(&self, n: Option<usize>) {
        self.shared.workers.lock().unwrap().0 = n.map(|n| n.max(1));
        self.shared.worker_free.notify_all();
    }

    /// The most requests read and not yet answered at one time (waiting for a worker
    /// included): the concurrency clients reached.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_concurrent.load(Ordering::SeqCst)
    }

    /// Total seconds requests spent read and not yet answered: over a span of time, the
    /// mean number of requests in flight is this divided by the span (Little's law).
    pub fn busy_seconds(&self) -> f64 {
        self.shared.busy_nanos.load(Ordering::SeqCst) as f64 / 1e9
    }

    /// Stop listening (connections are refused) and close every open connection.
    pub fn refuse(&self) {
        if self.shared.listening.swap(false, Ordering::SeqCst) {
            // Wake the blocking accept so the acceptor drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
        for (_, s) in self.shared.streams.lock().unwrap().drain() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Wait until the port really refuses.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                Err(_) => return,
                Ok(s) => {
                    drop(s);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Listen again on the same port.
    pub fn resume(&self) {
        if self.shared.listening.load(Ordering::SeqCst) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.shared.listening.store(true, Ordering::SeqCst);
        spawn_acceptor(listener, Arc::clone(&self.shared));
    }

    /// Accepted requests (2xx), in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().unwrap().accepted.clone()
    }

    /// Every request, accepted or not, in arrival order.
    pub fn attempts(&self) -> Vec<Request> {
        self.shared.state.lock().unwrap().attempts.clone()
    }

    pub fn accepted_count(&self) -> usize {
        self.shared.state.lock().unwrap().accepted_count
    }

    /// Records in accepted requests (an OTLP export counts its log records).
    pub fn accepted_records(&self) -> usize {
        self.shared.state.lock().unwrap().accepted_records
    }

    /// Wait until accepted requests carried at least `n` records; false on timeout.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.accepted_records >= n)
    }

    pub fn attempt_count(&self) -> usize {
        self.shared.state.lock().unwrap().attempt_count
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` requests were read in full, before they are answered (so a
    /// test can act while a slow answer is pending); false on timeout.
    pub fn wait_for_requests_read(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.shared.requests_read.load(Ordering::SeqCst) < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Wait until at least `n` requests were accepted; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.accepted_count >= n)
    }

    /// Wait until at least `n` requests arrived (whatever the answer); false on timeout.
    pub fn wait_for_attempts(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.attempt_count >= n)
    }

    fn wait_until(&self, timeout: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if cond(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.shared.listening.swap(false, Ordering::SeqCst) {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
        if let Ok(mut streams) = self.shared.streams.lock() {
            for (_, s) in streams.drain() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests;
