//! Sending one record to telemprobd, and the one-byte acknowledgement protocol.
//!
//! The client connects to `socket_path`, hands the whole frame to one `send(MSG_NOSIGNAL)`
//! (the C daemon cannot reassemble frames), shuts down its write side and waits for one
//! [`Ack`] byte, which this suite's telemprobd sends after the record is durably staged or
//! rejected. The C telemprobd never replies: it closes the connection, which the client takes
//! as acceptance, so the library still works with it.
//!
//! The whole exchange is bounded by [`SEND_TIMEOUT`]; no signal (SIGPIPE) is ever raised.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::frame::encode_frame;
use crate::paths::Paths;
use crate::record::Record;

/// Upper bound on the time one send may block its caller.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(1000);

/// The daemon's one-byte reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ack {
    /// Staged durably (fsynced and renamed into the spool).
    Accepted = b'A',
    /// Frame or header values invalid; the record is not staged.
    Invalid = b'I',
    /// The daemon is shedding load; retry later.
    Overloaded = b'O',
    /// The host is not opted in; the record is not staged.
    NotOptedIn = b'N',
    /// Staging failed on the daemon's side (disk full, spool dir missing).
    StagingFailed = b'F',
}

impl Ack {
    pub fn from_byte(b: u8) -> Option<Ack> {
        [
            Ack::Accepted,
            Ack::Invalid,
            Ack::Overloaded,
            Ack::NotOptedIn,
            Ack::StagingFailed,
        ]
        .into_iter()
        .find(|a| *a as u8 == b)
    }

    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// How a successful send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// telemprobd replied [`Ack::Accepted`].
    Acknowledged,
    /// The peer closed without replying (the C telemprobd): the bytes were all written.
    ClosedWithoutReply,
    /// All bytes were written but no reply came within the time budget.
    ReplyTimedOut,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("not opted in to telemetry")]
    NotOptedIn,
    #[error("socket path {0:?} is longer than 107 bytes")]
    PathTooLong(std::path::PathBuf),
    #[error("cannot connect to {path:?}: {source}")]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot send record: {0}")]
    Send(#[source] io::Error),
    #[error("timed out sending record")]
    Timeout,
    #[error("daemon rejected the record: {0:?}")]
    Rejected(Ack),
    #[error("daemon sent an unknown reply byte {0:#04x}")]
    BadReply(u8),
}

impl SendError {
    /// The positive errno the C API negates.
    pub fn errno(&self) -> i32 {
        match self {
            SendError::NotOptedIn => libc::ECONNREFUSED,
            SendError::PathTooLong(_) => libc::ENAMETOOLONG,
            SendError::Connect { source, .. } | SendError::Send(source) => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            SendError::Timeout => libc::ETIMEDOUT,
            SendError::Rejected(Ack::Invalid) => libc::EINVAL,
            SendError::Rejected(Ack::Overloaded) => libc::EAGAIN,
            SendError::Rejected(Ack::NotOptedIn) => libc::ECONNREFUSED,
            SendError::Rejected(_) | SendError::BadReply(_) => libc::EIO,
        }
    }
}

/// `tm_is_opted_in`: the opt-in file exists (any file type).
pub fn is_opted_in(paths: &Paths) -> bool {
    std::fs::symlink_metadata(paths.opt_in_file()).is_ok()
}

/// Check opt-in, encode and send `record` to `socket_path`.
pub fn send_record(
    paths: &Paths,
    socket_path: &Path,
    record: &Record,
    cfg_path: Option<&str>,
) -> Result<Delivery, SendError> {
    if !is_opted_in(paths) {
        return Err(SendError::NotOptedIn);
    }
    send_frame(socket_path, &encode_frame(record, cfg_path), SEND_TIMEOUT)
}

/// Send an encoded frame and wait for the reply, all within `timeout`.
pub fn send_frame(
    socket_path: &Path,
    frame: &[u8],
    timeout: Duration,
) -> Result<Delivery, SendError> {
    let deadline = Instant::now() + timeout;
    let fd = connect(socket_path, timeout)?;
    let mut sent = 0;
    // The first attempt does not block: a frame fits in the socket buffer unless the daemon
    // stopped reading, and skipping the timeout setup saves a syscall per record. After
    // EAGAIN or a partial send, block with the remaining time as the bound.
    let mut blocking = false;
    while sent < frame.len() {
        let mut flags = libc::MSG_NOSIGNAL;
        if blocking {
            set_timeout(&fd, libc::SO_SNDTIMEO, remaining(deadline)?).map_err(SendError::Send)?;
        } else {
            flags |= libc::MSG_DONTWAIT;
        }
        // SAFETY: valid fd and buffer; MSG_NOSIGNAL keeps SIGPIPE from the host process.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                frame[sent..].as_ptr().cast(),
                frame.len() - sent,
                flags,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if !blocking => {
                    blocking = true;
                    continue;
                }
                Some(libc::EAGAIN) => return Err(SendError::Timeout),
                _ => return Err(SendError::Send(e)),
            }
        }
        sent += n as usize;
        blocking = true;
    }
    // SAFETY: valid fd. Tells the daemon no further frame follows on this connection.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
    let mut byte = 0u8;
    loop {
        let Ok(left) = remaining(deadline) else {
            return Ok(Delivery::ReplyTimedOut);
        };
        set_timeout(&fd, libc::SO_RCVTIMEO, left).map_err(SendError::Send)?;
        // SAFETY: valid fd, one-byte buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, 0) };
        if n == 1 {
            return match Ack::from_byte(byte) {
                Some(Ack::Accepted) => Ok(Delivery::Acknowledged),
                Some(other) => Err(SendError::Rejected(other)),
                None => Err(SendError::BadReply(byte)),
            };
        }
        if n == 0 {
            return Ok(Delivery::ClosedWithoutReply);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Delivery::ReplyTimedOut),
            // The C daemon may reset the connection after reading everything.
            Some(libc::ECONNRESET) => return Ok(Delivery::ClosedWithoutReply),
            _ => return Err(SendError::Send(e)),
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, SendError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(SendError::Timeout)
    } else {
        Ok(left)
    }
}

fn connect(path: &Path, timeout: Duration) -> Result<OwnedFd, SendError> {
    let conn_err = |source| SendError::Connect {
        path: path.to_path_buf(),
        source,
    };
    // SAFETY: zeroed sockaddr_un is a valid initial value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(SendError::PathTooLong(path.to_path_buf()));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket creation; the fd is owned immediately.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(conn_err(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A blocking AF_UNIX connect waits for backlog space bounded by SO_SNDTIMEO.
    set_timeout(&fd, libc::SO_SNDTIMEO, timeout).map_err(conn_err)?;
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    loop {
        // SAFETY: addr is initialised and len within its size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(fd);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => return Err(SendError::Timeout),
            _ => return Err(conn_err(e)),
        }
    }
}

fn set_timeout(fd: &OwnedFd, opt: libc::c_int, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        // Never zero: a zero timeval means "block forever".
        tv_usec: (d.subsec_micros().max(1)) as libc::suseconds_t,
    };
    // SAFETY: valid fd and a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    fn frame() -> Vec<u8> {
        encode_frame(&crate::frame::tests::golden_record(b"hi"), None)
    }

    fn serve(
        reply: Option<u8>,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<Vec<u8>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).unwrap();
            if let Some(b) = reply {
                let _ = c.write_all(&[b]);
            }
            buf
        });
        (dir, sock, h)
    }

    #[test]
    fn ack_and_exact_bytes() {
        let (_d, sock, h) = serve(Some(b'A'));
        assert_eq!(
            send_frame(&sock, &frame(), SEND_TIMEOUT).unwrap(),
            Delivery::Acknowledged
        );
        assert_eq!(h.join().unwrap(), frame());
    }

    #[test]
    fn close_without_reply_is_accepted() {
        let (_d, sock, h) = serve(None);
        assert_eq!(
            send_frame(&sock, &frame(), SEND_TIMEOUT).unwrap(),
            Delivery::ClosedWithoutReply
        );
        h.join().unwrap();
    }

    #[test]
    fn rejection_maps_to_errno() {
        let (_d, sock, h) = serve(Some(b'I'));
        let e = send_frame(&sock, &frame(), SEND_TIMEOUT).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        h.join().unwrap();
    }

    #[test]
    fn missing_socket_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = send_frame(&dir.path().join("none"), &frame(), SEND_TIMEOUT).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        let stale = dir.path().join("stale");
        drop(UnixListener::bind(&stale).unwrap());
        let e = send_frame(&stale, &frame(), SEND_TIMEOUT).unwrap_err();
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        let long = dir.path().join("x".repeat(120));
        assert_eq!(
            send_frame(&long, &frame(), SEND_TIMEOUT)
                .unwrap_err()
                .errno(),
            libc::ENAMETOOLONG
        );
    }

    #[test]
    fn silent_daemon_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let _listener = UnixListener::bind(&sock).unwrap();
        let start = Instant::now();
        // Accepted by the kernel backlog, never read, never answered.
        let r = send_frame(&sock, &frame(), Duration::from_millis(200)).unwrap();
        assert_eq!(r, Delivery::ReplyTimedOut);
        assert!(start.elapsed() < Duration::from_millis(600));
    }

    #[test]
    fn opt_in_checked_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), "/");
        let r = crate::frame::tests::golden_record(b"");
        let e = send_record(&paths, Path::new("/nonexistent"), &r, None).unwrap_err();
        assert!(matches!(e, SendError::NotOptedIn));
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        assert!(Ack::from_byte(b'A') == Some(Ack::Accepted) && Ack::from_byte(0).is_none());
    }
}
