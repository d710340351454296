//! A task for each connection that is not served at accept (see [`super::listener`]):
//! reassemble frames, validate, stage, reply one [`Ack`] byte per frame.
//!
//! * Frames may arrive in any number of pieces (the C daemon dropped split frames). Each
//!   frame, and the wait for it, must complete within the frame deadline; a connection that
//!   is silent or too slow is closed when it expires.
//! * Memory per connection is bounded: the buffer grows only to the declared frame size,
//!   which [`frame_len`] bounds by [`MAX_FRAME_SIZE`], and is released between frames.
//! * A frame whose size field is out of bounds, that ends early or that does not decode is
//!   answered [`Ack::Invalid`] with a log line. A well-delimited frame with bad content
//!   leaves the stream in sync, so later frames on the connection are still served.
//! * Several frames on one connection are handled in order, one reply each.
//! * The reply is sent with `MSG_DONTWAIT | MSG_NOSIGNAL`: a client that went away never
//!   blocks or disturbs the daemon.

use std::io;
use std::time::Duration;

use libtelemetry::client::Ack;
use libtelemetry::frame::{decode_frame, frame_len, Frame, FrameError, MAX_FRAME_SIZE};
use tokio::sync::watch;

use super::connections::ConnPermit;
use tokio::time::Instant;

use super::conn::Conn;
use super::counters::Counters;
use super::peer::Peer;
use super::refusals::RefusalLog;
use super::stager::StagerHandle;
use super::trust::check_cfg_path;

/// Bytes read at once while the frame size is still unknown.
const FIRST_READ: usize = 2048;

/// Why a connection ended without a complete frame.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("connection closed after {received} of {expected} bytes of a frame")]
    Truncated { received: usize, expected: usize },
    #[error("connection closed after {0} bytes, before the frame size was complete")]
    TruncatedSize(usize),
    #[error("frame not complete within {deadline:?} ({received} bytes received)")]
    Deadline { deadline: Duration, received: usize },
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

/// Decode a complete frame from `peer`, validate its headers and check that its `CFG:`
/// path is one the sender may name ([`super::trust`]); a rejection is logged.
pub fn decode_valid(frame: &[u8], peer: &Peer, log: &RefusalLog) -> Result<Frame, Ack> {
    let decoded = match decode_frame(frame) {
        Ok(f) => f,
        Err(e) => {
            log.refused("bad frame", format_args!("rejected frame: {e}"));
            return Err(Ack::Invalid);
        }
    };
    if let Err(e) = decoded.record.headers.validate() {
        log.refused("bad header value", format_args!("rejected record: {e}"));
        return Err(Ack::Invalid);
    }
    // The staged file holds the path on a line of its own: a control character (a newline
    // above all) would turn the file into one no reader can parse, after the probe was told
    // the record was accepted.
    if let Some(p) = &decoded.cfg_path {
        if p.chars().any(char::is_control) {
            log.refused(
                "CFG path refused",
                format_args!("rejected record: CFG path {p:?} contains a control character"),
            );
            return Err(Ack::Invalid);
        }
        if let Err(e) = check_cfg_path(p, peer) {
            log.refused(
                "CFG path refused",
                format_args!(
                    "rejected record from uid {} (pid {}): CFG path {p:?} refused: {e}",
                    peer.uid, peer.pid
                ),
            );
            return Err(Ack::Invalid);
        }
    }
    Ok(decoded)
}

/// State of one connection.
pub struct Handler {
    pub conn: Conn,
    /// The sender's credentials, read at accept.
    pub peer: Peer,
    buf: Vec<u8>,
    pub stager: StagerHandle,
    pub counters: std::sync::Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
    pub deadline: Duration,
    /// Returned to the listener's semaphore when the handler ends.
    pub _permit: ConnPermit,
}

impl Handler {
    /// `received`: bytes already read from the connection (the start of a frame, or
    /// several frames).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: Conn,
        peer: Peer,
        received: &[u8],
        stager: StagerHandle,
        counters: std::sync::Arc<Counters>,
        shutdown: watch::Receiver<bool>,
        deadline: Duration,
        permit: ConnPermit,
    ) -> Handler {
        Handler {
            conn,
            peer,
            buf: received.to_vec(),
            stager,
            counters,
            shutdown,
            deadline,
            _permit: permit,
        }
    }

    /// Serve frames until the client closes, an error, the deadline or shutdown.
    pub async fn run(mut self) {
        loop {
            let frame = match self.read_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(ReadError::Deadline { received: 0, .. }) => {
                    tracing::debug!("closing a connection that sent nothing in time");
                    return;
                }
                Err(ReadError::Io(e)) => {
                    tracing::debug!("connection error: {e}");
                    return;
                }
                Err(e) => {
                    self.counters
                        .refusals
                        .refused("incomplete frame", format_args!("rejected frame: {e}"));
                    self.answer(Ack::Invalid);
                    return;
                }
            };
            let ack = self.process(&frame).await;
            if !self.answer(ack) {
                return;
            }
        }
    }

    /// Decode, validate and stage one complete frame.
    async fn process(&self, frame: &[u8]) -> Ack {
        match decode_valid(frame, &self.peer, &self.counters.refusals) {
            Ok(decoded) => {
                self.stager
                    .stage(decoded.record, decoded.cfg_path, self.peer)
                    .await
            }
            Err(ack) => ack,
        }
    }

    /// Count and send the reply; false when the connection is gone.
    fn answer(&self, ack: Ack) -> bool {
        self.counters.count(ack);
        match self.conn.reply(ack) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("client left before the reply ({ack:?}): {e}");
                false
            }
        }
    }

    /// The next complete frame, or `None` when the client closed (or shutdown began)
    /// between frames.
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let deadline = Instant::now() + self.deadline;
        // Once shutdown begins, a connection with nothing pending is closed; a frame that
        // has started still gets its deadline to complete.
        let mut draining = *self.shutdown.borrow();
        loop {
            let want = match frame_len(&self.buf)? {
                Some(len) if self.buf.len() >= len => {
                    let rest = self.buf.split_off(len);
                    return Ok(Some(std::mem::replace(&mut self.buf, rest)));
                }
                Some(len) => len - self.buf.len(),
                None => FIRST_READ - self.buf.len(),
            };
            let have = self.buf.len();
            debug_assert!(have + want <= MAX_FRAME_SIZE.max(FIRST_READ));
            self.buf.resize(have + want, 0);
            match self.conn.try_read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    return match std::mem::take(&mut self.buf) {
                        b if b.is_empty() => Ok(None),
                        b => Err(match frame_len(&b) {
                            Ok(Some(expected)) => ReadError::Truncated {
                                received: b.len(),
                                expected,
                            },
                            _ => ReadError::TruncatedSize(b.len()),
                        }),
                    };
                }
                Ok(n) => self.buf.truncate(have + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf.truncate(have);
                    if have == 0 {
                        if draining {
                            return Ok(None);
                        }
                        // Hold no buffer while waiting for a frame to start.
                        self.buf = Vec::new();
                    }
                    let wait = tokio::time::timeout_at(deadline, self.conn.readable());
                    let outcome = if have == 0 {
                        tokio::select! {
                            r = wait => Some(r),
                            _ = self.shutdown.changed() => None,
                        }
                    } else {
                        Some(wait.await)
                    };
                    match outcome {
                        None => draining = true,
                        Some(Ok(Ok(()))) => {}
                        Some(Ok(Err(e))) => return Err(e.into()),
                        Some(Err(_elapsed)) => {
                            self.buf = Vec::new();
                            return Err(ReadError::Deadline {
                                deadline: self.deadline,
                                received: have,
                            });
                        }
                    }
                }
                Err(e) => {
                    self.buf = Vec::new();
                    return Err(e.into());
                }
            }
        }
    }
}
