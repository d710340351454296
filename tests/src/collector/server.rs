//! The serving side of the collector: the state the handle and the connection threads
//! share, the acceptor, one thread per connection reading requests, applying the
//! [`Behavior`] (failure injection), routing to the validation, and recording every
//! request with its answer.
//!
//! Invariant: every request read in full is recorded exactly once (`finish`), answered or
//! reset, and waiters on the state are woken after each one.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::http::{error_response, read_request, reset, ReadError, Request, Response, MAX_BODY};
use super::validate::{ingest_v2, validate_otlp_logs, validate_v3};

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

#[derive(Default)]
pub(super) struct State {
    pub(super) attempts: Vec<Request>,
    pub(super) accepted: Vec<Request>,
    pub(super) accepted_count: usize,
    /// Records in accepted requests.
    pub(super) accepted_records: usize,
    pub(super) attempt_count: usize,
    pub(super) next_id: u64,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    pub(super) behavior: Mutex<Behavior>,
    /// False for a sink: count, do not keep requests.
    pub(super) record: bool,
    pub(super) connections: AtomicUsize,
    /// Requests read in full, counted before the behaviour (e.g. a slow answer) applies.
    pub(super) requests_read: AtomicUsize,
    pub(super) listening: AtomicBool,
    /// Open connections, so `refuse` can close them.
    pub(super) streams: Mutex<HashMap<usize, TcpStream>>,
    /// At most this many requests handled at once (`None`: one per connection), and how
    /// many are (a server with a fixed number of workers).
    pub(super) workers: Mutex<(Option<usize>, usize)>,
    pub(super) worker_free: Condvar,
    /// Requests read and not yet answered, now and at most.
    pub(super) concurrent: AtomicUsize,
    pub(super) max_concurrent: AtomicUsize,
    /// Total time requests spent read and not yet answered, in nanoseconds.
    pub(super) busy_nanos: std::sync::atomic::AtomicU64,
}

pub(super) fn spawn_acceptor(listener: TcpListener, shared: Arc<Shared>) {
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

/// A worker slot (see `Collector::set_workers`) and the count of requests in service,
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
