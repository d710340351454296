//! The accept loop.
//!
//! * A semaphore caps the connections being served; the loop takes a permit before it
//!   accepts, so past the cap new clients wait in the kernel backlog rather than costing
//!   memory, and each handler's deadline guarantees permits come back.
//! * Accepting never waits on a client: each connection gets its own task at once.
//! * SIGHUP (a message on `reload`) re-reads the configuration: `spool_dir` and the static
//!   machine id take effect for the next records; `socket_path` needs a restart.
//! * With `daemon_recycling_enabled`, the daemon exits after [`super::IDLE_EXIT`] without
//!   clients (socket activation starts it again on demand).
//! * On shutdown: stop accepting, take what is already queued in the backlog (those probes
//!   have sent their frames), let every handler finish its frame, then return.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use libtelemetry::{Config, Paths};
use nix::errno::Errno;
use nix::sys::socket::SockFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::handler::{Conn, Handler};
use super::stager::{Counters, StagerHandle};
use super::{ExitReason, Settings};
use crate::notify::notify;

/// Pause after an accept error caused by resource exhaustion (EMFILE and the like).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub struct Listener {
    listener: AsyncFd<UnixListener>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    stager: StagerHandle,
    counters: Arc<Counters>,
    shutdown_tx: watch::Sender<bool>,
    frame_deadline: Duration,
    idle_exit: Option<Duration>,
    last_activity: Instant,
    paths: Paths,
    config_file: Option<PathBuf>,
    socket_path: PathBuf,
}

impl Listener {
    /// `listener` must be non-blocking. Must be called inside the runtime.
    pub fn new(
        listener: UnixListener,
        settings: &Settings,
        stager: StagerHandle,
        counters: Arc<Counters>,
    ) -> io::Result<Listener> {
        let max = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        // SAFETY: the UnixListener owns its fd, always reports that same fd, and lives as
        // long as the AsyncFd.
        let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Listener {
            listener,
            limit: Arc::new(Semaphore::new(max)),
            max_connections: max,
            stager,
            counters,
            shutdown_tx: watch::channel(false).0,
            frame_deadline: settings.frame_deadline,
            idle_exit: settings.idle_exit,
            last_activity: Instant::now(),
            paths: settings.paths.clone(),
            config_file: settings.config_file.clone(),
            socket_path: settings.config.socket_path.clone(),
        })
    }

    /// Accept and serve until `shutdown` completes or the idle time runs out.
    pub async fn run(
        &mut self,
        mut reload: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()>,
    ) -> ExitReason {
        tokio::pin!(shutdown);
        loop {
            let idle_exit = self.idle_exit;
            let idle_deadline = self.last_activity + idle_exit.unwrap_or(Duration::ZERO);
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => return ExitReason::Shutdown,
                Some(()) = reload.recv() => {
                    self.reload();
                    continue;
                }
                r = accept(&self.listener, &self.limit) => r,
                _ = tokio::time::sleep_until(idle_deadline), if idle_exit.is_some() => {
                    if self.limit.available_permits() == self.max_connections {
                        tracing::info!("Daemon exiting for recycling");
                        return ExitReason::Idle;
                    }
                    // Clients are still connected: not idle.
                    self.last_activity = Instant::now();
                    continue;
                }
            };
            match accepted {
                Ok((stream, permit)) => {
                    self.last_activity = Instant::now();
                    self.spawn_handler(stream, permit);
                }
                Err(e) => self.accept_error(e).await,
            }
        }
    }

    /// Stop: serve what is already in the backlog, wait for every handler, release the
    /// stager (which then commits what is queued and ends).
    pub async fn finish(self) {
        let _ = self.shutdown_tx.send(true);
        let mut drained = 0usize;
        while let Ok(permit) = self.limit.clone().try_acquire_owned() {
            match accept_now(self.listener.get_ref()) {
                Ok(stream) => {
                    drained += 1;
                    self.spawn_handler(stream, permit);
                }
                Err(_) => break,
            }
        }
        if drained > 0 {
            tracing::info!("serving {drained} connection(s) queued at shutdown");
        }
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = self.limit.acquire_many(all).await;
    }

    fn spawn_handler(&self, stream: UnixStream, permit: OwnedSemaphorePermit) {
        let handler = Handler::new(
            Conn::new(stream),
            self.stager.clone(),
            self.counters.clone(),
            self.shutdown_tx.subscribe(),
            self.frame_deadline,
            permit,
        );
        tokio::spawn(handler.run());
    }

    async fn accept_error(&self, e: io::Error) {
        match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            Errno::ECONNABORTED | Errno::EINTR | Errno::EPROTO => {}
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => {
                tracing::error!("accept: {e}; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
            _ => {
                tracing::error!("accept: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }

    fn reload(&mut self) {
        notify("RELOADING=1");
        match Config::load(&self.paths, self.config_file.as_deref()) {
            Ok((config, source)) => {
                self.stager.set_spool_dir(config.spool_dir.clone());
                self.stager.reload_static_machine_id();
                if config.socket_path != self.socket_path {
                    tracing::warn!(
                        "socket_path {} takes effect at the next start",
                        config.socket_path.display()
                    );
                }
                tracing::info!("configuration reloaded ({})", super::describe(&source));
            }
            Err(e) => tracing::error!("cannot reload configuration, keeping the current one: {e}"),
        }
        notify("READY=1");
    }
}

/// Take a permit, then the next connection (cancel-safe: an unused permit is returned).
async fn accept(
    listener: &AsyncFd<UnixListener>,
    limit: &Arc<Semaphore>,
) -> io::Result<(UnixStream, OwnedSemaphorePermit)> {
    let permit = limit
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection semaphore closed"))?;
    loop {
        let mut guard = listener.readable().await?;
        match guard.try_io(|l| accept_now(l.get_ref())) {
            Ok(result) => return result.map(|s| (s, permit)),
            Err(_would_block) => continue,
        }
    }
}

/// `accept4` with the new connection non-blocking and close-on-exec.
fn accept_now(listener: &UnixListener) -> io::Result<UnixStream> {
    let fd = nix::sys::socket::accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    // SAFETY: accept4 returned a new fd that nothing else owns.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}
