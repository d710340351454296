//! The accept loop.
//!
//! * Accepting never waits: the backlog is drained as fast as clients connect, and each
//!   connection is admitted or closed at once by its sender's uid ([`super::connections`]:
//!   a share per unprivileged uid, a cap for all, a reserve for root), so a user holding
//!   connections open never keeps another user's probe waiting in the backlog. Each
//!   handler's deadline guarantees admitted connections end.
//! * Accepting never waits on a client. Most probes have sent their whole frame (and shut
//!   down their side) before the daemon accepts: such a connection is read once at accept
//!   and served without a task or an epoll registration. A record that arrives alone (its
//!   connection had to be waited for, or none is queued behind it: a connection accepted
//!   without waiting looks one ahead) is committed right here when the stager is idle and
//!   its medium quick ([`StagerHandle::stage_now`]), and answered; only then does the
//!   listener look for the end of stream (which closes the connection) and close the
//!   record's file, so the client waits for neither. Otherwise (records arriving together,
//!   a busy stager, a slow medium) the record is queued for the stager, which commits the
//!   queued records as one batch, answers and closes the connections (once the end of
//!   stream has come). Any other connection (frame incomplete, more than one frame, no end
//!   of stream yet for a queued record) gets its own handler task at once, with the bytes
//!   already read.
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

use libtelemetry::client::Ack;
use libtelemetry::frame::{frame_len, MAX_FRAME_SIZE};
use libtelemetry::{Config, Paths};
use nix::errno::Errno;
use nix::sys::socket::SockFlag;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::conn::{recv_now, send_ack, Conn, FinalConn};
use super::connections::{ConnPermit, Connections, Refusal};
use super::counters::Counters;
use super::handler::{decode_valid, Handler};
use super::peer::Peer;
use super::stager::{Deferred, StagerHandle, MAX_BATCH};
use super::{ExitReason, Settings};
use daemon_common::notify::notify;

/// How long the accept loop polls for a sequential client's next connection after
/// answering one on its own thread, before it sleeps in `epoll_wait`. Waking a sleeping
/// daemon costs a round trip more than the record's own work (an inter-processor wake-up,
/// the return from `epoll_wait`); a probe sending records one after another connects again
/// within tens of µs. At most this much CPU per lone record, none while idle.
const SPIN_FOR_NEXT: Duration = Duration::from_micros(50);

/// Most connections served in a row that way (a few ms of one client's records) before the
/// runtime's other tasks get the thread.
const SPIN_ROUNDS: usize = 32;

/// Pause after an accept error caused by resource exhaustion (EMFILE and the like).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub struct Listener {
    listener: AsyncFd<UnixListener>,
    connections: Arc<Connections>,
    stager: StagerHandle,
    counters: Arc<Counters>,
    shutdown_tx: watch::Sender<bool>,
    frame_deadline: Duration,
    idle_exit: Option<Duration>,
    last_activity: Instant,
    paths: Paths,
    config_file: Option<PathBuf>,
    socket_path: PathBuf,
    /// Read buffer for connections at accept: one frame of the largest size, and one more
    /// byte to tell a lone frame from a longer stream.
    buf: Box<[u8]>,
    /// Whether the last connection served was answered on this thread (so its client is
    /// not waiting for any other task of the daemon).
    answered_here: bool,
}

/// What was on a connection at accept.
enum AtAccept {
    /// One complete frame of this many bytes (and nothing after it yet).
    Frame(usize),
    /// The client closed without sending anything.
    Closed,
    /// This many bytes, and the client may send more: a handler takes over.
    More(usize),
}

impl Listener {
    /// `listener` must be non-blocking. Must be called inside the runtime.
    pub fn new(
        listener: UnixListener,
        settings: &Settings,
        stager: StagerHandle,
        counters: Arc<Counters>,
    ) -> io::Result<Listener> {
        // SAFETY: the UnixListener owns its fd, always reports that same fd, and lives as
        // long as the AsyncFd.
        let listener = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Listener {
            listener,
            connections: Connections::new(
                settings.max_connections,
                settings.connections_per_uid,
                settings.root_reserve,
            ),
            stager,
            counters,
            shutdown_tx: watch::channel(false).0,
            frame_deadline: settings.frame_deadline,
            idle_exit: settings.idle_exit,
            last_activity: Instant::now(),
            paths: settings.paths.clone(),
            config_file: settings.config_file.clone(),
            socket_path: settings.config.socket_path.clone(),
            buf: vec![0; MAX_FRAME_SIZE + 1].into_boxed_slice(),
            answered_here: false,
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
                r = accept(&self.listener) => r,
                _ = tokio::time::sleep_until(idle_deadline), if idle_exit.is_some() => {
                    if self.connections.open() == 0 {
                        tracing::info!("Daemon exiting for recycling");
                        return ExitReason::Idle;
                    }
                    // Clients are still connected: not idle.
                    self.last_activity = Instant::now();
                    continue;
                }
            };
            match accepted {
                Ok((stream, waited)) => {
                    self.last_activity = Instant::now();
                    self.serve_burst(stream, waited);
                    // A client answered here is often about to send again (a probe's
                    // records one after another): look for its next connection a moment
                    // before sleeping. At most SPIN_ROUNDS in a row, so the other tasks,
                    // reload and shutdown get their turn.
                    let mut rounds = 0;
                    while self.answered_here && rounds < SPIN_ROUNDS {
                        let Some((stream, waited)) = self.accept_spinning() else {
                            break;
                        };
                        rounds += 1;
                        self.serve_burst(stream, waited);
                    }
                }
                Err(e) => self.accept_error(e).await,
            }
        }
    }

    /// Serve `stream` and, when it was accepted without waiting (others may be queued behind
    /// it), the connections queued in the backlog behind it, looking one ahead each time.
    /// A record that arrives alone (after a wait, or with nothing behind it) may be committed
    /// in place, as a sequential client's are; records that arrive together are queued for
    /// the stager, which commits them as one batch (one opt-in check, answers in a row).
    /// At most [`MAX_BATCH`] connections per call, so the other tasks get their turn.
    fn serve_burst(&mut self, stream: UnixStream, waited: bool) {
        let mut next = Some(stream);
        let mut served = 0;
        while let Some(stream) = next.take() {
            served += 1;
            if !waited && served < MAX_BATCH {
                // Through the reactor: an empty backlog clears the listener's readiness, so
                // the accept loop waits for the next connection without another `accept4`.
                match self.listener.try_io(Interest::READABLE, accept_now) {
                    Ok(behind) => next = Some(behind),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The accept loop meets (and reports) it again.
                    Err(_) => {}
                }
            }
            let alone = (waited && served == 1) || (next.is_none() && served < MAX_BATCH);
            self.answered_here = false;
            self.serve_connection(stream, alone);
        }
    }

    /// The next connection if one comes within [`SPIN_FOR_NEXT`], polling the backlog
    /// (yielding the CPU between polls, so a client on this CPU runs), and whether it had to
    /// be waited for. An error is left for the accept loop to meet and report.
    fn accept_spinning(&self) -> Option<(UnixStream, bool)> {
        let until = std::time::Instant::now() + SPIN_FOR_NEXT;
        let mut waited = false;
        loop {
            match accept_now(self.listener.get_ref()) {
                Ok(stream) => return Some((stream, waited)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            waited = true;
            std::thread::yield_now();
        }
    }

    /// Stop: serve what is already in the backlog, wait for every handler, release the
    /// stager (which then commits what is queued and ends).
    pub async fn finish(mut self) {
        let _ = self.shutdown_tx.send(true);
        let mut drained = 0usize;
        while let Ok(stream) = accept_now(self.listener.get_ref()) {
            drained += 1;
            self.serve_connection(stream, false);
        }
        if drained > 0 {
            tracing::info!("serving {drained} connection(s) queued at shutdown");
        }
        self.connections.all_closed().await;
    }

    /// Serve a new connection: a lone frame goes straight to the stager (committed here
    /// when `alone` and the stager is idle), anything else to a handler task.
    fn serve_connection(&mut self, stream: UnixStream, alone: bool) {
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                // Never on a connected Unix socket; without a sender nothing is staged.
                tracing::warn!("closing a connection whose sender is unknown: {e}");
                return;
            }
        };
        let permit = match self.connections.admit(peer.uid) {
            Ok(permit) => permit,
            Err(refusal) => {
                // Answered `O` and closed without reading: the cheapest way out that still
                // tells a probe its record was not taken (a close without a byte would
                // read as the C daemon's silent success).
                self.counters.count(Ack::Overloaded);
                let _ = send_ack(&stream, Ack::Overloaded);
                let (kind, why) = match refusal {
                    Refusal::OverShare { held, share } => (
                        "connections over the sender's share",
                        format!("it holds {held} connections, its whole share of {share}"),
                    ),
                    Refusal::Full { cap } => (
                        "connections over the cap",
                        format!("all {cap} connections are in use"),
                    ),
                };
                self.counters.refusals.refused(
                    kind,
                    format_args!(
                        "closed a new connection of uid {} (pid {}): {why}",
                        peer.uid, peer.pid
                    ),
                );
                return;
            }
        };
        match read_at_accept(&stream, &mut self.buf) {
            Ok(AtAccept::Frame(len)) => self.serve_frame(stream, peer, permit, len, alone),
            Ok(AtAccept::Closed) => {}
            Ok(AtAccept::More(received)) => {
                let received = &self.buf[..received];
                self.spawn_handler(stream, peer, permit, received)
            }
            Err(e) => tracing::debug!("connection error: {e}"),
        }
    }

    /// Serve the one whole frame of `len` bytes read at accept (in `self.buf`). When its
    /// answer is known at once (a rejection, or a commit on this thread), the client gets
    /// it before the daemon looks for what follows the frame; the end of stream closes the
    /// connection, anything else goes to a handler. A record queued for the stager is
    /// answered by the stager, which closes the connection: only once the end of stream
    /// has come, else a handler takes the connection over.
    fn serve_frame(
        &mut self,
        stream: UnixStream,
        peer: Peer,
        permit: ConnPermit,
        len: usize,
        alone: bool,
    ) {
        let (ack, committed) = match decode_valid(&self.buf[..len], &peer, &self.counters.refusals)
        {
            Err(ack) => (ack, None),
            Ok(frame) => match if alone {
                self.stager.stage_now(frame.record, frame.cfg_path, peer)
            } else {
                Err(Deferred::new(frame.record, frame.cfg_path, peer))
            } {
                Ok((ack, committed)) => (ack, Some(committed)),
                Err(deferred) => {
                    match recv_now(&stream, &mut self.buf[len..len + 1]) {
                        Ok(0) => {
                            let conn = FinalConn { stream, permit };
                            self.stager.answer_later(deferred, conn)
                        }
                        // More bytes, no end of stream yet or an error: the handler decodes
                        // the frame again (valid, so nothing is logged twice) and answers.
                        Ok(more) => {
                            let received = &self.buf[..len + more];
                            self.spawn_handler(stream, peer, permit, received)
                        }
                        Err(_) => self.spawn_handler(stream, peer, permit, &self.buf[..len]),
                    }
                    return;
                }
            },
        };
        self.counters.count(ack);
        let sent = send_ack(&stream, ack);
        self.answered_here = sent.is_ok();
        // The record's file is closed only now, after the answer the client waits for.
        drop(committed);
        if let Err(e) = sent {
            tracing::debug!("client left before the reply ({ack:?}): {e}");
            return;
        }
        match recv_now(&stream, &mut self.buf) {
            Ok(0) => {}
            Ok(n) => self.spawn_handler(stream, peer, permit, &self.buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.spawn_handler(stream, peer, permit, &[])
            }
            Err(e) => tracing::debug!("connection error after the reply: {e}"),
        }
    }

    fn spawn_handler(&self, stream: UnixStream, peer: Peer, permit: ConnPermit, received: &[u8]) {
        let handler = Handler::new(
            Conn::new(stream),
            peer,
            received,
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
                if let Err(e) = super::spooldir::check_spool_dir(&config.spool_dir) {
                    tracing::error!(
                        "spool_dir {} is not usable ({e}); keeping the current configuration",
                        config.spool_dir.display()
                    );
                    notify("READY=1");
                    return;
                }
                self.stager.set_spool_dir(config.spool_dir.clone());
                match super::durability::durability_of(&config) {
                    Ok(d) => self.stager.set_durability(d),
                    Err(e) => tracing::error!("{e}; keeping the current durability"),
                }
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

/// The next connection, and whether it had to be waited for (cancel-safe).
async fn accept(listener: &AsyncFd<UnixListener>) -> io::Result<(UnixStream, bool)> {
    let mut waited = false;
    loop {
        let mut guard = std::future::poll_fn(|cx| {
            let ready = listener.poll_read_ready(cx);
            waited |= ready.is_pending();
            ready
        })
        .await?;
        match guard.try_io(|l| accept_now(l.get_ref())) {
            Ok(result) => return result.map(|stream| (stream, waited)),
            Err(_would_block) => waited = true,
        }
    }
}

/// Read what a new connection holds without waiting: one whole frame, nothing, or
/// anything else (part of a frame, several frames, a bad size the handler reports).
fn read_at_accept(stream: &UnixStream, buf: &mut [u8]) -> io::Result<AtAccept> {
    debug_assert!(buf.len() > MAX_FRAME_SIZE);
    let n = match recv_now(stream, buf) {
        Ok(0) => return Ok(AtAccept::Closed),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(AtAccept::More(0)),
        Err(e) => return Err(e),
    };
    match frame_len(&buf[..n]) {
        Ok(Some(len)) if len == n => Ok(AtAccept::Frame(n)),
        _ => Ok(AtAccept::More(n)),
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
