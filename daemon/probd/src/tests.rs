//! In-process tests of the daemon loop, on tokio's paused clock: deadlines, idle exit and
//! shutdown happen in virtual time.

use std::path::PathBuf;

use libtelemetry::{encode_frame, HostInfo, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Paths,
    socket: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("root"), dir.path().join("host"));
        for d in [
            paths.default_spool_dir(),
            paths.state_dir(),
            paths.etc_dir(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(paths.opt_in_file(), "").unwrap();
        let socket = dir.path().join("sock");
        Fixture {
            _dir: dir,
            paths,
            socket,
        }
    }

    fn settings(&self, recycling: bool) -> Settings {
        let mut config = Config::defaults(&self.paths);
        config.socket_path = self.socket.clone();
        config.daemon_recycling_enabled = recycling;
        Settings::new(self.paths.clone(), None, config)
    }

    fn listener(&self) -> UnixListener {
        let l = UnixListener::bind(&self.socket).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    /// The daemon as a task, with the sender that shuts it down.
    fn spawn(
        &self,
        recycling: bool,
    ) -> (
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<ExitReason>>,
    ) {
        let (stop, stopped) = oneshot::channel::<()>();
        let (_reload_tx, reload_rx) = mpsc::channel(1);
        let task = tokio::spawn(serve(
            self.listener(),
            self.settings(recycling),
            reload_rx,
            async move {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    }

    fn frame(&self) -> Vec<u8> {
        let host = HostInfo::fixed_for_tests();
        let mut r = Record::new(1, "org.test/probd/unit", 1, &host).unwrap();
        r.set_payload(b"unit").unwrap();
        encode_frame(&r, None)
    }

    fn staged_count(&self) -> usize {
        std::fs::read_dir(self.paths.default_spool_dir())
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    }
}

async fn reply_of(c: &mut UnixStream) -> Vec<u8> {
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    buf
}

/// The reply, or nothing when the daemon closed the connection without one (a close with
/// unread data resets the connection).
async fn reply_or_closed(c: &mut UnixStream) -> Vec<u8> {
    let mut buf = Vec::new();
    match c.read_to_end(&mut buf).await {
        Ok(_) => buf,
        // What was read before the reset (the reply, if any) is in `buf`.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => buf,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn idle_exit_after_300_seconds_without_clients() {
    let f = Fixture::new();
    let (_stop, task) = f.spawn(true);
    let t0 = Instant::now();
    // A client at 200 s postpones the exit.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let mut c = UnixStream::connect(&f.socket).await.unwrap();
    c.write_all(&f.frame()).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut c).await, b"A");
    let reason = task.await.unwrap().unwrap();
    assert_eq!(reason, ExitReason::Idle);
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(500) && elapsed < Duration::from_secs(510),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_idle_exit_without_recycling() {
    let f = Fixture::new();
    let (stop, task) = f.spawn(false);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!task.is_finished());
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), ExitReason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn deadlines_close_silent_and_slow_clients() {
    let f = Fixture::new();
    let (stop, task) = f.spawn(false);
    let t0 = Instant::now();
    let mut silent = UnixStream::connect(&f.socket).await.unwrap();
    let mut slow = UnixStream::connect(&f.socket).await.unwrap();
    let frame = f.frame();
    slow.write_all(&frame[..10]).await.unwrap();
    assert_eq!(
        reply_of(&mut slow).await,
        b"I",
        "partial frame at the deadline"
    );
    assert_eq!(reply_of(&mut silent).await, b"", "silent client: closed");
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= FRAME_DEADLINE && elapsed < FRAME_DEADLINE + Duration::from_secs(1),
        "{elapsed:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.staged_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_started_frames_and_drops_idle_connections() {
    let f = Fixture::new();
    let (stop, task) = f.spawn(false);
    let frame = f.frame();
    let mut idle = UnixStream::connect(&f.socket).await.unwrap();
    let mut started = UnixStream::connect(&f.socket).await.unwrap();
    started.write_all(&frame[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The idle connection is closed at once; the started frame may still complete.
    assert_eq!(reply_of(&mut idle).await, b"");
    started.write_all(&frame[20..]).await.unwrap();
    started.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut started).await, b"A");
    assert_eq!(task.await.unwrap().unwrap(), ExitReason::Shutdown);
    assert!(t0.elapsed() < FRAME_DEADLINE);
    assert_eq!(f.staged_count(), 1);
    let status =
        libtelemetry::status::read_status(&libtelemetry::status::status_file(&f.paths, DAEMON))
            .unwrap()
            .unwrap();
    assert_eq!(status.counter(libtelemetry::status::COUNTER_STAGED), 1);
}

#[tokio::test(start_paused = true)]
async fn lone_frames_and_open_streams_are_both_answered_and_counted() {
    let f = Fixture::new();
    let (stop, task) = f.spawn(false);
    let frame = f.frame();
    // Frame and end of stream before the daemon looks: answered by the stager directly.
    let mut lone = UnixStream::connect(&f.socket).await.unwrap();
    lone.write_all(&frame).await.unwrap();
    lone.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut lone).await, b"A");
    // A client that waits for the answer before it ends its stream, then sends another
    // frame on the same connection.
    let mut open = UnixStream::connect(&f.socket).await.unwrap();
    open.write_all(&frame).await.unwrap();
    let mut byte = [0u8; 1];
    open.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"A");
    open.write_all(&frame).await.unwrap();
    open.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"A");
    open.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut open).await, b"");
    // A lone frame that is invalid is answered at once.
    let mut bad = UnixStream::connect(&f.socket).await.unwrap();
    let mut garbled = frame.clone();
    garbled[10] = b'#';
    bad.write_all(&garbled).await.unwrap();
    bad.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut bad).await, b"I");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.staged_count(), 3);
    let status =
        libtelemetry::status::read_status(&libtelemetry::status::status_file(&f.paths, DAEMON))
            .unwrap()
            .unwrap();
    assert_eq!(status.counter(libtelemetry::status::COUNTER_STAGED), 3);
    assert_eq!(status.counter(libtelemetry::status::COUNTER_REJECTED), 1);
}

/// F5: past its share a sender's new connections are answered `O` and closed at once, never
/// left waiting in the backlog; once it holds fewer, it is served again.
#[tokio::test(start_paused = true)]
async fn connections_past_the_share_are_closed_at_once() {
    let f = Fixture::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let mut settings = f.settings(false);
    settings.max_connections = 2;
    settings.connections_per_uid = 2;
    settings.root_reserve = 0;
    let task = tokio::spawn(serve(f.listener(), settings, reload_rx, async move {
        let _ = stopped.await;
    }));
    let a = UnixStream::connect(&f.socket).await.unwrap();
    let _b = UnixStream::connect(&f.socket).await.unwrap();
    let t0 = Instant::now();
    let mut c = UnixStream::connect(&f.socket).await.unwrap();
    let _ = c.write_all(&f.frame()).await;
    let _ = c.shutdown().await;
    assert_eq!(
        reply_or_closed(&mut c).await,
        b"O",
        "overloaded, closed unread"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // One place freed: served again.
    drop(a);
    let mut d = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut d = UnixStream::connect(&f.socket).await.unwrap();
        if d.write_all(&f.frame()).await.is_ok() && d.shutdown().await.is_ok() {
            break d;
        }
    };
    let mut reply = reply_or_closed(&mut d).await;
    while reply.is_empty() || reply == b"O" {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut e = UnixStream::connect(&f.socket).await.unwrap();
        let _ = e.write_all(&f.frame()).await;
        let _ = e.shutdown().await;
        reply = reply_or_closed(&mut e).await;
    }
    assert_eq!(reply, b"A");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn connection_limit_follows_the_fd_limit() {
    assert_eq!(connection_limit(1024), 896);
    assert_eq!(connection_limit(1 << 20), MAX_CONNECTIONS);
    assert_eq!(connection_limit(10), 16);
}

/// Bytes `client` wrote that the daemon has not read yet (`SIOCOUTQ`: for a Unix stream
/// socket, data stays charged to the sender until the receiver consumes it).
fn unread_by_daemon(client: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: a valid socket fd and a pointer to a c_int, as SIOCOUTQ (= TIOCOUTQ) expects.
    let rc = unsafe { libc::ioctl(client.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap()
}

/// Nothing arrives on `c` within `wait`.
async fn no_reply_within(c: &mut UnixStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(wait, c.read(&mut byte)).await.is_err()
}

/// A commit that takes long (a slow disk) leaves the runtime free: meanwhile new clients
/// are accepted, their frames read (even in pieces) and validated, an invalid one is
/// answered at once, and a valid one waits for its own commit.
#[tokio::test]
async fn a_slow_commit_does_not_stall_accepting_and_reading() {
    // How long the first commit waits for the test to release it, at most.
    const SLOW_COMMIT_LIMIT: Duration = Duration::from_secs(10);
    let f = Fixture::new();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(Some(gate));
    let (commit_started, mut commits) = mpsc::unbounded_channel::<usize>();
    let released_by_test = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let released = released_by_test.clone();
    let hook = stager::CommitHook(Arc::new(move |records| {
        let _ = commit_started.send(records);
        let first = gate.lock().unwrap().take();
        if let Some(gate) = first {
            let by_test = gate.recv_timeout(SLOW_COMMIT_LIMIT).is_ok();
            released.store(by_test, std::sync::atomic::Ordering::SeqCst);
        }
    }));
    let mut settings = f.settings(false);
    settings.commit_hook = Some(hook);
    let (stop, stopped) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(serve(f.listener(), settings, reload_rx, async move {
        let _ = stopped.await;
    }));
    let frame = f.frame();

    let mut first = UnixStream::connect(&f.socket).await.unwrap();
    first.write_all(&frame).await.unwrap();
    first.shutdown().await.unwrap();
    assert_eq!(commits.recv().await, Some(1), "the first commit started");

    let mut bad = UnixStream::connect(&f.socket).await.unwrap();
    let mut garbled = frame.clone();
    garbled[10] = b'#';
    bad.write_all(&garbled).await.unwrap();
    bad.shutdown().await.unwrap();
    assert_eq!(reply_of(&mut bad).await, b"I", "answered during the commit");

    let mut second = UnixStream::connect(&f.socket).await.unwrap();
    second.write_all(&frame[..20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    second.write_all(&frame[20..]).await.unwrap();
    second.shutdown().await.unwrap();
    let t0 = Instant::now();
    while unread_by_daemon(&second) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "second frame never read"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(no_reply_within(&mut second, Duration::from_millis(100)).await);
    assert!(no_reply_within(&mut first, Duration::from_millis(1)).await);

    release.send(()).unwrap();
    assert_eq!(reply_of(&mut first).await, b"A");
    assert_eq!(reply_of(&mut second).await, b"A");
    assert_eq!(
        commits.recv().await,
        Some(1),
        "the second record's own commit"
    );
    assert!(
        released_by_test.load(std::sync::atomic::Ordering::SeqCst),
        "the runtime was blocked while the first commit ran"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.staged_count(), 2);
}
