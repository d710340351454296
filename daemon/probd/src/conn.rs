//! A client connection and its one-byte replies, shared by the listener (which serves the
//! frames complete at accept), the handlers (which wait for the rest) and the stager
//! (which answers the connections handed to it).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use libtelemetry::client::Ack;
use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::connections::ConnPermit;
use super::counters::Counters;

/// A client connection, registered with the reactor only once it has to wait: most probes
/// have sent their whole frame before the daemon accepts, so the common path costs no
/// epoll registration.
pub struct Conn {
    plain: Option<UnixStream>,
    registered: Option<AsyncFd<UnixStream>>,
}

impl Conn {
    /// `stream` must be non-blocking.
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            plain: Some(stream),
            registered: None,
        }
    }

    fn stream(&self) -> &UnixStream {
        match (&self.plain, &self.registered) {
            (Some(s), _) => s,
            (None, Some(a)) => a.get_ref(),
            (None, None) => unreachable!("a Conn always holds its stream"),
        }
    }

    /// Read without waiting.
    pub(super) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(self.stream(), buf)
    }

    /// Wait until data (or end of stream) can be read, without consuming it (cancel-safe).
    pub(super) async fn readable(&mut self) -> io::Result<()> {
        if let Some(stream) = self.plain.take() {
            // SAFETY: the UnixStream owns its fd, always reports that same fd, and is
            // dropped only together with the AsyncFd.
            let afd = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE) };
            self.registered = Some(afd.map_err(io::Error::from)?);
        }
        let afd = self.registered.as_ref().expect("registered above");
        loop {
            let mut guard = afd.readable().await?;
            let mut probe = [0u8; 1];
            match guard.try_io(|inner| {
                nix::sys::socket::recv(
                    inner.get_ref().as_raw_fd(),
                    &mut probe,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)
            }) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Data, end of stream, or an error the next read reports.
                Ok(_) => return Ok(()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Send the one-byte reply; never blocks, never raises SIGPIPE.
    pub fn reply(&self, ack: Ack) -> io::Result<()> {
        send_ack(self.stream(), ack)
    }
}

/// A connection that carried one complete frame and then its end of stream.
pub struct FinalConn {
    pub stream: UnixStream,
    /// Returned to the listener's semaphore when the connection is closed.
    pub permit: ConnPermit,
}

impl FinalConn {
    /// Count and send `ack`; the connection closes when `self` is dropped.
    pub(super) fn answer(&self, counters: &Counters, ack: Ack) {
        counters.count(ack);
        if let Err(e) = send_ack(&self.stream, ack) {
            tracing::debug!("client left before the reply ({ack:?}): {e}");
        }
    }
}

/// Send the one-byte reply on `stream`; never blocks, never raises SIGPIPE.
pub fn send_ack(stream: &UnixStream, ack: Ack) -> io::Result<()> {
    nix::sys::socket::send(
        stream.as_raw_fd(),
        &[ack.byte()],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// `recv` without waiting, retried on EINTR.
pub fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::recv(stream.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
