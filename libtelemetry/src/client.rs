//! Sending one record to telemprobd, and the one-byte acknowledgement protocol.
//!
//! The client connects to `socket_path` (non-blocking), hands the whole frame to one
//! `send(MSG_NOSIGNAL)` (the C daemon cannot reassemble frames), shuts down its write side
//! and waits (poll) for one [`Ack`] byte, which this suite's telemprobd sends after the record is durably staged or
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

/// `tm_is_opted_in`: the opt-in file exists (any file type). Like the C library's `stat`
/// and the units' `ConditionPathExists=`, a symlink counts only when its target exists.
pub fn is_opted_in(paths: &Paths) -> bool {
    std::fs::metadata(paths.opt_in_file()).is_ok()
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
    let fd = connect(socket_path, deadline)?;
    // The socket never blocks: a frame fits in the socket buffer unless the daemon stopped
    // reading, so the common case is one send; waits go through poll(2) with the time
    // left (poll also sleeps only for the readiness it asks for).
    let mut sent = 0;
    while sent < frame.len() {
        // SAFETY: valid fd and buffer; MSG_NOSIGNAL keeps SIGPIPE from the host process.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                frame[sent..].as_ptr().cast(),
                frame.len() - sent,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            sent += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                if !wait_for(&fd, libc::POLLOUT, deadline).map_err(SendError::Send)? {
                    return Err(SendError::Timeout);
                }
            }
            _ => return Err(SendError::Send(e)),
        }
    }
    // SAFETY: valid fd. Tells the daemon no further frame follows on this connection.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
    let mut byte = 0u8;
    loop {
        if !wait_for(&fd, libc::POLLIN, deadline).map_err(SendError::Send)? {
            return Ok(Delivery::ReplyTimedOut);
        }
        // SAFETY: valid fd, one-byte buffer.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_DONTWAIT,
            )
        };
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
            Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            // The C daemon may reset the connection after reading everything.
            Some(libc::ECONNRESET) => return Ok(Delivery::ClosedWithoutReply),
            _ => return Err(SendError::Send(e)),
        }
    }
}

/// Wait until `fd` is ready for `events` or `deadline` passes; false on timeout.
fn wait_for(fd: &OwnedFd, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Whole milliseconds, rounded up: never a busy loop, at most 1 ms late.
        let ms = left
            .as_micros()
            .div_ceil(1000)
            .min(libc::c_int::MAX as u128) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            // Readiness, hang-up or an error: the next send/recv tells which.
            return Ok(true);
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

fn connect(path: &Path, deadline: Instant) -> Result<OwnedFd, SendError> {
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
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(conn_err(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    let connect_once = || {
        // SAFETY: addr is initialised and len within its size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // A non-blocking AF_UNIX connect completes at once, or fails with EAGAIN when the
    // daemon's backlog is full. Only then wait for room: a blocking connect bounded by
    // SO_SNDTIMEO (poll cannot wait for backlog room).
    let mut blocking = false;
    loop {
        let e = match connect_once() {
            Ok(()) => return Ok(fd),
            Err(e) => e,
        };
        match (e.raw_os_error(), blocking) {
            (Some(libc::EINTR), false) => {}
            // The backlog is full: wait for room with the time left (again after a signal).
            (Some(libc::EAGAIN), false) | (Some(libc::EINTR), true) => {
                let left = remaining(deadline)?;
                if !blocking {
                    set_nonblocking(&fd, false).map_err(conn_err)?;
                    blocking = true;
                }
                set_timeout(&fd, libc::SO_SNDTIMEO, left).map_err(conn_err)?;
            }
            (Some(libc::EAGAIN) | Some(libc::EINPROGRESS), true) => return Err(SendError::Timeout),
            _ => return Err(conn_err(e)),
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

fn set_nonblocking(fd: &OwnedFd, on: bool) -> io::Result<()> {
    let mut value = libc::c_int::from(on);
    // SAFETY: valid fd; FIONBIO takes a pointer to an int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut value) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
        // Margin for a loaded machine; unbounded, it would wait forever.
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn full_backlog_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        // SAFETY: valid listening fd; a small backlog is quick to fill.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 1) }, 0);
        // Fill the backlog with non-blocking connections that are never accepted.
        let mut fillers = Vec::new();
        loop {
            let s = nonblocking_socket();
            // SAFETY: a zeroed sockaddr_un is a valid initial value.
            let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, b) in addr.sun_path.iter_mut().zip(sock.as_os_str().as_bytes()) {
                *d = *b as libc::c_char;
            }
            // SAFETY: valid fd and address.
            let rc = unsafe {
                libc::connect(
                    s.as_raw_fd(),
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                assert_eq!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::EAGAIN)
                );
                break;
            }
            fillers.push(s);
            assert!(fillers.len() < 100, "backlog never filled");
        }
        let start = Instant::now();
        let e = send_frame(&sock, &frame(), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, SendError::Timeout), "{e:?}");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
    }

    fn nonblocking_socket() -> OwnedFd {
        // SAFETY: plain socket creation.
        let raw = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(raw >= 0);
        // SAFETY: fresh fd owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    #[test]
    fn opt_in_checked_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), "/");
        let r = crate::frame::tests::golden_record(b"");
        let e = send_record(&paths, Path::new("/nonexistent"), &r, None).unwrap_err();
        assert!(matches!(e, SendError::NotOptedIn));
        assert_eq!(e.errno(), libc::ECONNREFUSED);
        // Opt-in follows symlinks, as stat(2) in C and ConditionPathExists= do.
        std::fs::create_dir_all(paths.etc_dir()).unwrap();
        std::os::unix::fs::symlink("missing-target", paths.opt_in_file()).unwrap();
        assert!(!is_opted_in(&paths), "dangling symlink");
        std::fs::write(paths.etc_dir().join("missing-target"), "").unwrap();
        assert!(is_opted_in(&paths), "symlink to a file");
        assert!(Ack::from_byte(b'A') == Some(Ack::Accepted) && Ack::from_byte(0).is_none());
    }
}
