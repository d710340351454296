//! The HTTP/1.1 wire of the collector, as uWSGI presents it to the app: reading one
//! [`Request`] (header block bounded by [`MAX_HEADER_BLOCK`], `Content-Length` or chunked
//! body bounded by [`MAX_BODY`], header bytes as latin-1), writing a [`Response`], and
//! closing a connection with a reset.
//!
//! Invariant: reading never allocates beyond those bounds, whatever a client sends; a header
//! block over the limit is reported as [`ReadError::TooLarge`] so the server can reset.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::Instant;

/// uWSGI's default `buffer-size`: larger request-header blocks get no response.
pub const MAX_HEADER_BLOCK: usize = 4096;
/// Largest body accepted (the real one has no app limit; this bounds test memory).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

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
pub(super) fn same_name(a: &str, b: &str) -> bool {
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

#[derive(Debug)]
pub(super) enum ReadError {
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

pub(super) fn read_request(
    r: &mut BufReader<TcpStream>,
    connection: usize,
) -> Result<Request, ReadError> {
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

/// Close with RST (SO_LINGER 0) and no response.
pub(super) fn reset(stream: &TcpStream) {
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
    pub(super) fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    pub(super) fn to_bytes(&self, close: bool) -> Vec<u8> {
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

pub(super) fn error_response(status: u16, message: &str) -> Response {
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
