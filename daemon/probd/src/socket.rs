//! The listening socket: taken from systemd socket activation (`LISTEN_PID`/`LISTEN_FDS`,
//! fd 3) or bound at `socket_path` (stale socket replaced, mode 0666, backlog SOMAXCONN).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrLike, UnixAddr,
};

/// First fd passed by systemd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Longest path a `sockaddr_un` holds (108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "socket_path {path} is {len} bytes long; a Unix socket path holds at most \
         {MAX_SOCKET_PATH} bytes, so no client could connect to it"
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error("invalid LISTEN_FDS value {0:?}")]
    BadListenFds(String),
    #[error("passed fd {fd} is unusable: {reason}")]
    BadPassedFd { fd: RawFd, reason: String },
    #[error("cannot remove stale socket {path}: {source}")]
    Unlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the listening socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    Activated,
    Bound,
}

/// The activated socket if systemd passed one, else a freshly bound `socket_path`. The
/// returned listener is non-blocking.
pub fn open_listener(socket_path: &Path) -> Result<(UnixListener, SocketSource), SocketError> {
    check_socket_path(socket_path)?;
    let (listener, source) = match take_activated_fd()? {
        Some(fd) => {
            check_listening_unix_stream(&fd, socket_path)?;
            (UnixListener::from(fd), SocketSource::Activated)
        }
        None => (bind(socket_path)?, SocketSource::Bound),
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| SocketError::BadPassedFd {
            fd: listener.as_raw_fd(),
            reason: e.to_string(),
        })?;
    Ok((listener, source))
}

/// Clients connect to `socket_path` by name: one longer than a `sockaddr_un` holds could
/// be bound (through a shorter temporary name, then renamed) but never reached.
pub fn check_socket_path(socket_path: &Path) -> Result<(), SocketError> {
    let len = socket_path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong {
            path: socket_path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// `sd_listen_fds(1)`: fd 3 when `LISTEN_PID` is this process and `LISTEN_FDS` ≥ 1. The
/// variables are removed so they do not leak further. Only fd 3 is used; more passed fds
/// are left alone (and logged).
fn take_activated_fd() -> Result<Option<OwnedFd>, SocketError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // Called before any thread exists (the runtime is built afterwards).
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| SocketError::BadListenFds(fds.clone()))?;
    if n < 0 {
        return Err(SocketError::BadListenFds(fds));
    }
    if n == 0 {
        return Ok(None);
    }
    if n > 1 {
        tracing::warn!("{n} sockets passed; only fd {LISTEN_FDS_START} is used");
    }
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: fcntl on an fd number is harmless even if it is not open (EBADF).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(SocketError::BadPassedFd {
                fd,
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        // SAFETY: as above; sets close-on-exec on an open fd.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    }
    // SAFETY: systemd hands fd 3 to this process; it was just checked to be open, and
    // nothing else in this process owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }))
}

/// The passed fd must be a listening AF_UNIX stream socket (the C daemon accepted any
/// socket). A different bound path is only logged: the unit decides where it listens.
fn check_listening_unix_stream(fd: &OwnedFd, socket_path: &Path) -> Result<(), SocketError> {
    let bad = |reason: String| SocketError::BadPassedFd {
        fd: fd.as_raw_fd(),
        reason,
    };
    let ty = socket::getsockopt(fd, sockopt::SockType).map_err(|e| bad(e.to_string()))?;
    if ty != SockType::Stream {
        return Err(bad(format!("socket type {ty:?}, not a stream socket")));
    }
    let listening = socket::getsockopt(fd, sockopt::AcceptConn).map_err(|e| bad(e.to_string()))?;
    if !listening {
        return Err(bad("socket is not listening".into()));
    }
    let addr: socket::SockaddrStorage =
        socket::getsockname(fd.as_raw_fd()).map_err(|e| bad(e.to_string()))?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(bad(format!(
            "address family {:?}, not AF_UNIX",
            addr.family()
        )));
    }
    let bound = addr.as_unix_addr().and_then(|u| u.path());
    if bound != Some(socket_path) {
        tracing::info!(
            "activated socket is bound to {:?}, not the configured {}",
            bound,
            socket_path.display()
        );
    }
    Ok(())
}

/// Bind at `path` (mode 0666, the largest backlog), replacing a stale socket. The socket is
/// bound under a temporary name beside `path`, made world-writable and listening, and only
/// then renamed over `path`: a probe can never reach it with the umask's mode (and be
/// refused), and there is no moment without a socket at `path` once one existed.
fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let Some(temp) = temp_socket_path(path) else {
        return bind_in_place(path);
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| err(e.into()))?;
    // A leftover of an earlier process with this pid, if any.
    let _ = std::fs::remove_file(&temp);
    let prepared = UnixAddr::new(temp.as_path())
        .and_then(|addr| socket::bind(fd.as_raw_fd(), &addr))
        .map_err(std::io::Error::from)
        .and_then(|()| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o666)))
        .and_then(|()| socket::listen(&fd, Backlog::MAXCONN).map_err(std::io::Error::from))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&temp);
        return Err(err(e));
    }
    Ok(UnixListener::from(fd))
}

/// `.<pid>.sock` beside `path`, when that still fits in a `sockaddr_un`.
fn temp_socket_path(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let temp = dir.join(format!(".telem.{}.sock", std::process::id()));
    // sun_path holds 108 bytes including the terminating NUL.
    (temp.as_os_str().len() < 108).then_some(temp)
}

/// Where no temporary name fits: remove a stale socket, bind, `chmod 0666`, listen.
fn bind_in_place(path: &Path) -> Result<UnixListener, SocketError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Unlink {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let err = |source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    // std binds with a small backlog; probes connect in bursts.
    socket::listen(&listener, Backlog::MAXCONN).map_err(|e| err(e.into()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn bind_replaces_stale_socket_with_mode_0666() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("telem-0");
        drop(UnixListener::bind(&p).unwrap());
        let l = bind(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        check_listening_unix_stream(&OwnedFd::from(l), &p).unwrap();
        assert!(matches!(
            bind(&d.path().join("missing/dir/s")),
            Err(SocketError::Bind { .. })
        ));
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["telem-0"], "no temporary socket left behind");
    }

    #[test]
    fn a_path_too_long_for_a_temporary_name_is_bound_in_place() {
        let d = tempfile::tempdir().unwrap();
        // `<dir>/s` fits in sun_path, but `<dir>/.telem.<pid>.sock` does not.
        let dir = d.path().join("d".repeat(100 - d.path().as_os_str().len()));
        std::fs::create_dir(&dir).unwrap();
        let p = dir.join("s");
        assert!(temp_socket_path(&p).is_none());
        let _l = bind(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
    }

    #[test]
    fn passed_fd_must_be_a_listening_unix_stream() {
        let d = tempfile::tempdir().unwrap();
        let dgram = UnixDatagram::bind(d.path().join("dg")).unwrap();
        assert!(check_listening_unix_stream(&OwnedFd::from(dgram), Path::new("/x")).is_err());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(check_listening_unix_stream(&OwnedFd::from(a), Path::new("/x")).is_err());
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(check_listening_unix_stream(&OwnedFd::from(tcp), Path::new("/x")).is_err());
    }
}
