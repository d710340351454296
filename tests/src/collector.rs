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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The TID the public collector accepts (`TELEMETRY_ID`, hard-coded there).
pub const TELEMETRY_ID: &str = "6907c830-eed9-4ce9-81ae-76daf8d88f0f";
/// uWSGI's default `buffer-size`: larger request-header blocks get no response.
pub const MAX_HEADER_BLOCK: usize = 4096;
/// Largest body accepted (the real one has no app limit; this bounds test memory).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// How the collector answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Validate and answer as the real collector.
    Normal,
    /// Answer every request with this status (400 with a JSON message, 5xx with HTML).
    Status(u16),
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// Read the request, then reset the connection (RST, no response).
    Reset,
    /// Answer every request with exactly this (e.g. 429 with `Retry-After`, or an OTLP
    /// 200 with a `partialSuccess` body).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Answer `status` to requests whose body contains `marker` (one poisoned record), and
    /// the others as [`Behavior::Normal`].
    StatusIfBodyContains { marker: String, status: u16 },
    /// Answer as [`Behavior::Normal`] without `Connection: close`, then close the
    /// connection this long after the answer, unread data and all (as uWSGI's
    /// `http-socket` does): a client that reuses it in that time gets a reset.
    CloseAfterAnswer(Duration),
    /// Answer as [`Behavior::Normal`] and close a connection idle this long (a short
    /// keep-alive timeout).
    KeepAliveTimeout(Duration),
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// In wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, decompressed when it came with `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    pub chunked: bool,
    /// The body came gzip-compressed.
    pub gzip: bool,
    /// Records the request carried: 1 for v2/v3, the log records of an OTLP export.
    pub records: usize,
    /// Connection number (1-based, in accept order).
    pub connection: usize,
    /// Status answered; 0 = reset without an answer.
    pub status: u16,
    /// When the request had been read in full.
    pub received: Instant,
}

/// `a` and `b` name the same header, as uWSGI/WSGI see it: case-insensitive, `_` ≡ `-`
/// (compared without allocating: the sink must stay cheap).
fn same_name(a: &str, b: &str) -> bool {
    let canon = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| canon(x) == canon(y))
}

impl Request {
    /// First header named `name` (case-insensitive, `_` ≡ `-`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    attempts: Vec<Request>,
    accepted: Vec<Request>,
    accepted_count: usize,
    /// Records in accepted requests.
    accepted_records: usize,
    attempt_count: usize,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    behavior: Mutex<Behavior>,
    /// False for a sink: count, do not keep requests.
    record: bool,
    connections: AtomicUsize,
    /// Requests read in full, counted before the behaviour (e.g. a slow answer) applies.
    requests_read: AtomicUsize,
    listening: AtomicBool,
    /// Open connections, so `refuse` can close them.
    streams: Mutex<HashMap<usize, TcpStream>>,
    /// At most this many requests handled at once (`None`: one per connection), and how
    /// many are (a server with a fixed number of workers).
    workers: Mutex<(Option<usize>, usize)>,
    worker_free: Condvar,
    /// Requests read and not yet answered, now and at most.
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
    /// Total time requests spent read and not yet answered, in nanoseconds.
    busy_nanos: std::sync::atomic::AtomicU64,
}

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

fn spawn_acceptor(listener: TcpListener, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if !shared.listening.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
            if let Ok(clone) = stream.try_clone() {
                shared.streams.lock().unwrap().insert(id, clone);
            }
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                serve(stream, id, &shared);
                shared.streams.lock().unwrap().remove(&id);
            });
        }
    });
}

#[derive(Debug)]
enum ReadError {
    /// Clean EOF between requests.
    Closed,
    /// Header block over [`MAX_HEADER_BLOCK`]: reset.
    TooLarge,
    Malformed,
    Io,
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|_| ReadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(ReadError::TooLarge);
    }
    *budget -= n;
    if !line.ends_with(b"\n") {
        return Err(ReadError::Malformed);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    // Header bytes are latin-1 to WSGI.
    Ok(Some(line.iter().map(|&b| char::from(b)).collect()))
}

fn read_request(r: &mut BufReader<TcpStream>, connection: usize) -> Result<Request, ReadError> {
    let mut budget = MAX_HEADER_BLOCK;
    let start = match read_line(r, &mut budget)? {
        Some(l) => l,
        None => return Err(ReadError::Closed),
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut budget)?.ok_or(ReadError::Malformed)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(ReadError::Malformed)?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: Vec::new(),
        chunked: false,
        gzip: false,
        records: 0,
        connection,
        status: 0,
        received: Instant::now(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        req.chunked = true;
        loop {
            let mut b = 256;
            let size_line = read_line(r, &mut b)?.ok_or(ReadError::Malformed)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Malformed)?;
            if req.body.len() + size > MAX_BODY {
                return Err(ReadError::TooLarge);
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).map_err(|_| ReadError::Io)?;
            req.body.extend_from_slice(&chunk);
            let mut b = 256;
            read_line(r, &mut b)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| ReadError::Malformed)?;
        if len > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        req.body = vec![0; len];
        r.read_exact(&mut req.body).map_err(|_| ReadError::Io)?;
    }
    req.received = Instant::now();
    Ok(req)
}

fn serve(stream: TcpStream, connection: usize, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        if let Behavior::KeepAliveTimeout(d) = &*shared.behavior.lock().unwrap() {
            let _ = reader.get_ref().set_read_timeout(Some(*d));
        }
        let mut req = match read_request(&mut reader, connection) {
            Ok(r) => r,
            Err(ReadError::TooLarge) => {
                reset(&writer);
                return;
            }
            Err(_) => return,
        };
        if req
            .header("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        {
            let mut out = Vec::new();
            let decoded = flate2::read::GzDecoder::new(&req.body[..])
                .take(MAX_BODY as u64)
                .read_to_end(&mut out);
            if decoded.is_err() {
                req.status = 400;
                let bytes = error_response(400, "bad gzip body").to_bytes(true);
                finish(shared, req);
                let _ = writer.write_all(&bytes);
                return;
            }
            req.body = out;
            req.gzip = true;
        }
        shared.requests_read.fetch_add(1, Ordering::SeqCst);
        let now_concurrent = shared.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .max_concurrent
            .fetch_max(now_concurrent, Ordering::SeqCst);
        let _worker = Worker::acquire(shared);
        let behavior = shared.behavior.lock().unwrap().clone();
        let response = match behavior {
            Behavior::Reset => {
                finish(shared, req);
                reset(&writer);
                return;
            }
            Behavior::Status(code) => error_response(code, "injected failure"),
            Behavior::Respond {
                status,
                headers,
                body,
            } => Response {
                status,
                content_type: "application/json",
                body: body.into_bytes(),
                headers,
            },
            Behavior::Slow(d) => {
                std::thread::sleep(d);
                route(&mut req, shared)
            }
            Behavior::StatusIfBodyContains { marker, status }
                if req
                    .body
                    .windows(marker.len().max(1))
                    .any(|w| w == marker.as_bytes()) =>
            {
                error_response(status, "injected failure")
            }
            Behavior::StatusIfBodyContains { .. }
            | Behavior::Normal
            | Behavior::KeepAliveTimeout(_) => route(&mut req, shared),
            Behavior::CloseAfterAnswer(d) => {
                let response = route(&mut req, shared);
                req.status = response.status;
                let bytes = response.to_bytes(false);
                finish(shared, req);
                let _ = writer.write_all(&bytes);
                std::thread::sleep(d);
                return;
            }
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        req.status = response.status;
        let bytes = response.to_bytes(close);
        finish(shared, req);
        if writer.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

/// A worker slot (see [`Collector::set_workers`]) and the count of requests in service,
/// released when the answer is written or the connection given up.
struct Worker<'a> {
    shared: &'a Shared,
    slot: bool,
    since: Instant,
}

impl<'a> Worker<'a> {
    fn acquire(shared: &'a Shared) -> Worker<'a> {
        // In service from now: waiting for a worker counts.
        let since = Instant::now();
        let mut w = shared.workers.lock().unwrap();
        let slot = w.0.is_some();
        while let Some(n) = w.0 {
            if w.1 < n {
                w.1 += 1;
                break;
            }
            w = shared.worker_free.wait(w).unwrap();
        }
        Worker {
            shared,
            slot,
            since,
        }
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        self.shared.concurrent.fetch_sub(1, Ordering::SeqCst);
        let nanos = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.shared.busy_nanos.fetch_add(nanos, Ordering::SeqCst);
        if self.slot {
            let mut w = self.shared.workers.lock().unwrap();
            w.1 = w.1.saturating_sub(1);
            drop(w);
            self.shared.worker_free.notify_one();
        }
    }
}

fn finish(shared: &Shared, req: Request) {
    let mut st = shared.state.lock().unwrap();
    st.attempt_count += 1;
    if (200..300).contains(&req.status) {
        st.accepted_count += 1;
        st.accepted_records += req.records;
        if shared.record {
            st.accepted.push(req.clone());
        }
    }
    if shared.record {
        st.attempts.push(req);
    }
    drop(st);
    shared.changed.notify_all();
}

/// Close with RST (SO_LINGER 0) and no response.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (e.g. `Location`, `Retry-After`).
    pub headers: Vec<(String, String)>,
}

impl Response {
    fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    fn to_bytes(&self, close: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            201 => "CREATED",
            302 => "FOUND",
            400 => "BAD REQUEST",
            404 => "NOT FOUND",
            405 => "METHOD NOT ALLOWED",
            429 => "TOO MANY REQUESTS",
            500 => "INTERNAL SERVER ERROR",
            503 => "SERVICE UNAVAILABLE",
            _ => "STATUS",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn error_response(status: u16, message: &str) -> Response {
    if status == 400 {
        Response::json(400, &serde_json::json!({ "message": message }))
    } else {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body: format!("<!doctype html><title>{status}</title><p>{message}</p>").into_bytes(),
            headers: Vec::new(),
        }
    }
}

fn route(req: &mut Request, shared: &Shared) -> Response {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("POST", "/" | "/v2/collector") => {
            let id = {
                let mut st = shared.state.lock().unwrap();
                st.next_id += 1;
                st.next_id
            };
            match ingest_v2(req, id) {
                Ok(record) => {
                    req.records = 1;
                    Response::json(201, &record)
                }
                Err(e) => error_response(e.status, &e.message),
            }
        }
        ("GET", "/" | "/v2/collector") => Response {
            status: 302,
            content_type: "text/html; charset=utf-8",
            body: Vec::new(),
            headers: vec![("Location".into(), "/telemetryui".into())],
        },
        (_, "/" | "/v2/collector") => error_response(405, "method not allowed"),
        ("POST", "/v3/collector") => match validate_v3(req) {
            Ok(()) => {
                req.records = 1;
                Response::json(201, &serde_json::json!({ "result": "created" }))
            }
            Err(e) => error_response(e.status, &e.message),
        },
        ("POST", "/v1/logs") => match validate_otlp_logs(req) {
            Ok(n) => {
                req.records = n;
                Response::json(200, &serde_json::json!({}))
            }
            Err(e) => error_response(e.status, &e.message),
        },
        _ => error_response(404, "not found"),
    }
}

/// A refused request: the status and the collector's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection {
        status: 400,
        message: message.into(),
    }
}

const ARCHES: [&str; 10] = [
    "armv7l", "armv6l", "aarch64", "amd64", "sparc64", "ppc64", "i686", "i386", "x86_64", "ppc",
];

/// Python's `string.printable`.
fn printable(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() || matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// Python's `str.isdigit()` for the ASCII range (and false on empty).
fn isdigit(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Python's `int(s)`: surrounding whitespace, an optional sign, digits (and `_` between).
fn py_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if !clean.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i128 = clean.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// The v2 header checks of §2.2, in the collector's order; the first failure wins.
pub fn validate_v2(headers: &[(String, String)]) -> Result<(), Rejection> {
    let get = |name: &str| -> Option<&str> {
        headers
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, v)| v.as_str())
    };
    if get("X-Telemetry-TID") != Some(TELEMETRY_ID) {
        return Err(bad("Telemetry ID mismatch"));
    }
    let version = match get("record_format_version") {
        Some(v) if isdigit(v) => v.parse::<u32>().ok().filter(|v| (1..=4).contains(v)),
        _ => None,
    }
    .ok_or_else(|| bad("Record-Format-Version is invalid"))?;
    let mut required = vec![
        "Arch",
        "Build",
        "Creation-Timestamp",
        "Classification",
        "Host-Type",
        "Kernel-Version",
        "Machine-Id",
        "Severity",
        "Record-Format-Version",
    ];
    if version >= 2 {
        required.extend(["Payload-Format-Version", "System-Name", "X-Telemetry-Tid"]);
    }
    if version >= 3 {
        required.extend(["Board-Name", "Bios-Version", "Cpu-Model"]);
    }
    if version >= 4 {
        required.push("Event-Id");
    }
    for name in required {
        if get(name).is_none() {
            return Err(bad(format!(
                "Record-Format-Version headers are invalid, {name} missing"
            )));
        }
    }
    let h = |name: &str| get(name).unwrap_or("");
    let severity = h("severity");
    if !(isdigit(severity) && matches!(severity.parse::<u32>(), Ok(1..=4))) {
        return Err(bad("severity value is out of range"));
    }
    if h("classification").split('/').count() != 3 {
        return Err(bad("Classification value is invalid"));
    }
    if h("machine_id").chars().count() > 32 {
        return Err(bad("Machine id value is invalid"));
    }
    if !isdigit(h("creation_timestamp")) {
        return Err(bad("timestamp is invalid"));
    }
    if !ARCHES.contains(&h("arch")) {
        return Err(bad("architecture is invalid"));
    }
    if h("host_type").chars().count() >= 250 {
        return Err(bad("host type is invalid"));
    }
    let kv: Vec<&str> = h("kernel_version").splitn(3, '.').collect();
    if kv.len() != 3 || !isdigit(kv[0]) || !isdigit(kv[1]) {
        return Err(bad("kernel version is invalid"));
    }
    if version >= 3 {
        for (name, message) in [
            ("board_name", "board name is invalid"),
            ("cpu_model", "cpu model is invalid"),
            ("bios_version", "BIOS version is invalid"),
        ] {
            let v = h(name);
            if v.chars().count() >= 200 || !printable(v) {
                return Err(bad(message));
            }
        }
    }
    if version >= 4 {
        let e = h("event_id");
        if e.len() != 32
            || !e
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("Event id is invalid"));
        }
    }
    let Some(system_name) = get("system_name") else {
        return Err(Rejection {
            status: 500,
            message: "AttributeError: system_name".into(),
        });
    };
    let strip = |s: &str| s.replace(['"', '\''], "");
    let system_name = strip(system_name);
    let build = strip(h("build"));
    if system_name == "clear-linux-os" {
        if !isdigit(&build) {
            return Err(bad("Clear Linux OS build version has invalid characters"));
        }
    } else if build.is_empty()
        || !build
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad("Build version has invalid characters"));
    }
    let pfv = h("payload_format_version");
    match py_int(pfv) {
        None => {
            return Err(bad(format!(
            "Error parsing payload_format_version, invalid literal for int() with base 10: '{pfv}'"
        )))
        }
        Some(v) if v >= 2147483647 => {
            return Err(bad("Payload format version outside of range supported"))
        }
        Some(_) => {}
    }
    Ok(())
}

/// The stored record of a valid v2 request, as `Record.to_dict()` returns it (§2.4).
fn ingest_v2(req: &Request, id: u64) -> Result<serde_json::Value, Rejection> {
    validate_v2(&req.headers)?;
    let form = req.header("content-type").is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/x-www-form-urlencoded") || ct.starts_with("multipart/form-data")
    });
    let payload = if form || req.chunked {
        String::new()
    } else if req.body.contains(&0) {
        return Err(Rejection {
            status: 500,
            message: "A string literal cannot contain NUL (0x00) characters.".into(),
        });
    } else {
        match std::str::from_utf8(&req.body) {
            Ok(s) => s.to_string(),
            Err(_) => req.body.iter().map(|&b| char::from(b)).collect(),
        }
    };
    let h = |name: &str| req.header(name).unwrap_or("").to_string();
    let version: i64 = h("record_format_version").parse().unwrap_or(0);
    let v3 = |name: &str| {
        if version >= 3 {
            h(name)
        } else {
            "N/A".into()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(serde_json::json!({
        "arch": h("arch"),
        "bios_version": v3("bios_version"),
        "board_name": v3("board_name"),
        "build": h("build").replace(['"', '\''], ""),
        "classification": h("classification"),
        "cpu_model": v3("cpu_model"),
        "event_id": if version >= 4 { h("event_id") } else { "N/A".into() },
        "external": h("X-CLR-External") == "true",
        "id": id,
        "kernel_version": h("kernel_version"),
        "machine_id": h("machine_id"),
        "machine_type": h("host_type"),
        "payload": payload,
        "record_version": version,
        "severity": h("severity").parse::<i64>().unwrap_or(0),
        "ts_capture": utc_text(h("creation_timestamp").parse().unwrap_or(0)),
        "ts_reception": utc_text(now),
    }))
}

/// `%Y-%m-%d %H:%M:%S UTC`, computed without the C library (also the journal tests' oracle).
pub fn utc_text(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil from days (H. Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An OTLP/HTTP JSON logs export: `Content-Type: application/json` and the shape of
/// `ExportLogsServiceRequest` (`resourceLogs[].scopeLogs[].logRecords[]`, resource and
/// record attributes as key/value lists). Exact conformance to the protobuf schema is checked
/// separately with the official definitions.
/// Returns the number of log records.
pub fn validate_otlp_logs(req: &Request) -> Result<usize, Rejection> {
    if !req
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(Rejection {
            status: 415,
            message: "Content-Type must be application/json".into(),
        });
    }
    let v: serde_json::Value =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let attrs_ok = |a: Option<&serde_json::Value>| {
        a.is_none_or(|a| {
            a.as_array().is_some_and(|l| {
                l.iter()
                    .all(|kv| kv["key"].is_string() && kv["value"].is_object())
            })
        })
    };
    let resource_logs = v["resourceLogs"]
        .as_array()
        .ok_or_else(|| bad("resourceLogs missing"))?;
    let mut n = 0;
    for rl in resource_logs {
        if !attrs_ok(rl.get("resource").and_then(|r| r.get("attributes"))) {
            return Err(bad("bad resource attributes"));
        }
        let scopes = rl["scopeLogs"]
            .as_array()
            .ok_or_else(|| bad("scopeLogs missing"))?;
        for sl in scopes {
            let records = sl["logRecords"]
                .as_array()
                .ok_or_else(|| bad("logRecords missing"))?;
            for r in records {
                if !r.is_object() || !attrs_ok(r.get("attributes")) {
                    return Err(bad("bad log record"));
                }
            }
            n += records.len();
        }
    }
    Ok(n)
}

/// Log records of an OTLP request body, in order.
pub fn otlp_log_records(body: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut out = Vec::new();
    for rl in v["resourceLogs"].as_array().into_iter().flatten() {
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            out.extend(sl["logRecords"].as_array().into_iter().flatten().cloned());
        }
    }
    out
}

/// Names of the v3 JSON keys, in order.
pub const V3_KEYS: [&str; 16] = [
    "record_format_version",
    "classification",
    "severity",
    "machine_id",
    "creation_timestamp",
    "arch",
    "host_type",
    "build",
    "kernel_version",
    "payload_format_version",
    "system_name",
    "board_name",
    "cpu_model",
    "bios_version",
    "event_id",
    "payload",
];

/// A v3 request: the TID header, a JSON Content-Type, and an object with exactly the 16 keys
/// of [`V3_KEYS`], every value a string.
pub fn validate_v3(req: &Request) -> Result<(), Rejection> {
    if req.header("X-Telemetry-TID") != Some(TELEMETRY_ID) {
        return Err(bad("Telemetry ID mismatch"));
    }
    if !req
        .header("content-type")
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err(bad("Content-Type must be application/json"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&req.body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body is not a JSON object"))?;
    for key in V3_KEYS {
        match obj.get(key) {
            Some(serde_json::Value::String(_)) => {}
            Some(_) => return Err(bad(format!("{key} is not a string"))),
            None => return Err(bad(format!("{key} missing"))),
        }
    }
    if obj.len() != V3_KEYS.len() {
        return Err(bad("unexpected keys"));
    }
    Ok(())
}

/// A server on loopback that accepts connections, reads what comes and never answers
/// (a backend that hangs), until dropped.
pub struct SilentServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop2, streams2) = (Arc::clone(&stop), Arc::clone(&streams));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let Ok(mut reader) = stream.try_clone() else {
                    continue;
                };
                streams2.lock().unwrap().push(stream);
                // Drain what the client sends so it never blocks on a full buffer.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        SilentServer {
            addr,
            stop,
            streams,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.streams.lock().unwrap().len()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_headers() -> Vec<(String, String)> {
        [
            ("record_format_version", "4"),
            ("classification", "org.clearlinux/hello/world"),
            ("severity", "1"),
            ("machine_id", "0123456789abcdef0123456789abcdef"),
            ("creation_timestamp", "1795614028"),
            ("arch", "x86_64"),
            ("host_type", "blank|blank|blank"),
            ("build", "\"12\""),
            ("kernel_version", "6.1.0-18-amd64"),
            ("payload_format_version", "1"),
            ("system_name", "debian"),
            ("board_name", "D54250WYK|Intel Corporation"),
            ("cpu_model", "Intel(R) Core(TM) i5-4250U CPU @ 1.30GHz"),
            ("bios_version", "WYLPT10H.86A.0041.2015.0720.1108"),
            ("event_id", "39cc109a1079df96376693ebc7a0f632"),
            ("X-Telemetry-TID", TELEMETRY_ID),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    /// Data-driven: replace (or with `None` remove) one header, expect this message.
    fn check(name: &str, value: Option<&str>, expected: Result<(), &str>) {
        let mut h = v4_headers();
        h.retain(|(n, _)| !same_name(n, name));
        if let Some(v) = value {
            h.push((name.to_string(), v.to_string()));
        }
        let got = validate_v2(&h).map_err(|e| e.message);
        assert_eq!(got, expected.map_err(str::to_string), "{name}={value:?}");
    }

    #[test]
    fn v2_rules_of_the_public_collector() {
        check("arch", Some("x86_64"), Ok(()));
        check(
            "X-Telemetry-TID",
            Some("nope"),
            Err("Telemetry ID mismatch"),
        );
        check("X-Telemetry-TID", None, Err("Telemetry ID mismatch"));
        check(
            "Record-Format-Version",
            Some("5"),
            Err("Record-Format-Version is invalid"),
        );
        check(
            "record_format_version",
            Some("x"),
            Err("Record-Format-Version is invalid"),
        );
        check(
            "machine_id",
            None,
            Err("Record-Format-Version headers are invalid, Machine-Id missing"),
        );
        check(
            "event_id",
            None,
            Err("Record-Format-Version headers are invalid, Event-Id missing"),
        );
        check("severity", Some("0"), Err("severity value is out of range"));
        check(
            "classification",
            Some("a/b"),
            Err("Classification value is invalid"),
        );
        check("classification", Some("a//"), Ok(()));
        check(
            "machine_id",
            Some(&"a".repeat(33)),
            Err("Machine id value is invalid"),
        );
        check("machine_id", Some(""), Ok(()));
        check(
            "creation_timestamp",
            Some("-1"),
            Err("timestamp is invalid"),
        );
        check("arch", Some("riscv64"), Err("architecture is invalid"));
        check(
            "host_type",
            Some(&"h".repeat(250)),
            Err("host type is invalid"),
        );
        check(
            "kernel_version",
            Some("6.1"),
            Err("kernel version is invalid"),
        );
        check("kernel_version", Some("3.16.generic"), Ok(()));
        check(
            "kernel_version",
            Some("v6.1.0"),
            Err("kernel version is invalid"),
        );
        check(
            "cpu_model",
            Some("Intel\u{ae}"),
            Err("cpu model is invalid"),
        );
        check("bios_version", Some(""), Ok(()));
        check(
            "event_id",
            Some("39CC109A1079DF96376693EBC7A0F632"),
            Err("Event id is invalid"),
        );
        check(
            "build",
            Some("1 2"),
            Err("Build version has invalid characters"),
        );
        check(
            "build",
            Some(""),
            Err("Build version has invalid characters"),
        );
        check(
            "payload_format_version",
            Some("x"),
            Err(
                "Error parsing payload_format_version, invalid literal for int() with base 10: 'x'",
            ),
        );
        check(
            "payload_format_version",
            Some("2147483647"),
            Err("Payload format version outside of range supported"),
        );
        check("payload_format_version", Some("-3"), Ok(()));
        // Only a v1 record can lack system_name, and the collector crashes on it.
        let mut h = v4_headers();
        h.retain(|(n, _)| n != "system_name");
        assert_eq!(validate_v2(&h).unwrap_err().status, 400);
        for (n, v) in h.iter_mut() {
            if n == "record_format_version" {
                *v = "1".into();
            }
        }
        assert_eq!(validate_v2(&h).unwrap_err().status, 500);
        let mut h = v4_headers();
        for (n, v) in h.iter_mut() {
            if n == "system_name" {
                *v = "clear-linux-os".into();
            }
            if n == "build" {
                *v = "12a".into();
            }
        }
        assert_eq!(
            validate_v2(&h).unwrap_err().message,
            "Clear Linux OS build version has invalid characters"
        );
        // Names: case-insensitive, '_' ≡ '-'.
        let h: Vec<_> = v4_headers()
            .into_iter()
            .map(|(n, v)| (n.to_uppercase().replace('_', "-"), v))
            .collect();
        assert_eq!(validate_v2(&h), Ok(()));
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1522691281), "2018-04-02 17:48:01 UTC");
    }

    fn raw_request(addr: SocketAddr, text: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(text).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_validates_records_and_refuses() {
        let c = Collector::start();
        let mut req = String::from("POST /v2/collector HTTP/1.1\r\nHost: x\r\n");
        for (n, v) in v4_headers() {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("Content-Type: application/text\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n");
        let answer = raw_request(c.addr(), req.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        assert!(answer.contains("\"payload\":\"hello\\n\""), "{answer}");
        let got = c.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"hello\n");
        assert_eq!(
            got[0].header("Machine-Id"),
            Some("0123456789abcdef0123456789abcdef")
        );
        let answer = raw_request(
            c.addr(),
            b"POST /v2/collector HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.ends_with("{\"message\":\"Telemetry ID mismatch\"}"),
            "{answer}"
        );
        let answer = raw_request(c.addr(), b"GET /v3/x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
        assert_eq!(
            raw_request(c.addr(), big.as_bytes()),
            "",
            "reset, no answer"
        );
        c.set_behavior(Behavior::Status(500));
        let answer = raw_request(c.addr(), req.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert_eq!(c.accepted_count(), 1);
        assert_eq!(c.attempt_count(), 4);
        c.refuse();
        assert!(TcpStream::connect(c.addr()).is_err());
        c.resume();
        c.set_behavior(Behavior::Normal);
        let answer = raw_request(c.addr(), req.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        assert!(c.connections() >= 5);
    }
}
