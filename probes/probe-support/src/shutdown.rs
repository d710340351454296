//! Cooperative shutdown: SIGTERM/SIGINT through a `signalfd` in the binaries, or a pipe the
//! tests write to. Either way the probe's loops poll one more fd and never sleep through a
//! request to stop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

enum Source {
    Signals(SignalFd),
    Pipe(OwnedFd),
}

/// A request to stop, observable as a readable fd.
pub struct Shutdown {
    source: Source,
    requested: AtomicBool,
}

/// The write side of [`Shutdown::pipe`].
pub struct ShutdownHandle(OwnedFd);

impl ShutdownHandle {
    pub fn trigger(&self) {
        // SAFETY: one byte from a valid buffer to a valid fd; a full pipe already wakes.
        unsafe { libc::write(self.0.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    }
}

impl Shutdown {
    /// Block SIGTERM, SIGINT and SIGHUP in this thread (call before starting threads) and
    /// receive them through a signalfd.
    pub fn from_signals() -> io::Result<Shutdown> {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Shutdown {
            source: Source::Signals(fd),
            requested: AtomicBool::new(false),
        })
    }

    /// A shutdown triggered by [`ShutdownHandle::trigger`] (tests, embedding).
    pub fn pipe() -> io::Result<(Shutdown, ShutdownHandle)> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok((
            Shutdown {
                source: Source::Pipe(r),
                requested: AtomicBool::new(false),
            },
            ShutdownHandle(w),
        ))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::Signals(s) => s.as_fd(),
            Source::Pipe(p) => p.as_fd(),
        }
    }

    /// True once a stop was requested (drains the fd without blocking).
    pub fn requested(&self) -> bool {
        if self.requested.load(Ordering::Relaxed) {
            return true;
        }
        let hit = match &self.source {
            Source::Signals(s) => loop {
                match s.read_signal() {
                    Ok(Some(info)) if info.ssi_signo == Signal::SIGHUP as u32 => {
                        tracing::info!("SIGHUP ignored");
                        continue;
                    }
                    Ok(Some(_)) => break true,
                    _ => break false,
                }
            },
            Source::Pipe(p) => {
                let mut b = [0u8; 16];
                // SAFETY: valid fd and buffer; the pipe is non-blocking.
                unsafe { libc::read(p.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) > 0 }
            }
        };
        if hit {
            self.requested.store(true, Ordering::Relaxed);
        }
        hit
    }

    /// Sleep up to `timeout`, waking early on a stop request; returns [`Self::requested`].
    pub fn wait(&self, timeout: Duration) -> bool {
        if self.requested() {
            return true;
        }
        let _ = poll_readable(&[self.fd()], Some(timeout));
        self.requested()
    }
}

/// `poll(2)` for readability; `None` waits forever. Returns which fds are readable (or
/// hung up / in error, which a read will report).
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}
