//! telemprobd integration tests: the real binary in a temp root, driven over its socket.

mod frames;
mod lifecycle;
mod load;
mod power_cut;
mod trust;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use libtelemetry::client::{send_record, Delivery, SendError};
use libtelemetry::record::Header;
use libtelemetry::{parse_staged, HostInfo, Record, StagedRecord};
use telemetrics_tests::{TestDaemon, TestRoot};

/// Generous bound for a daemon to start or stop on a loaded CI machine.
pub const STARTUP: Duration = Duration::from_secs(20);

/// telemprobd started with `-f <root config>`, listening.
pub fn start(root: &TestRoot) -> TestDaemon {
    let cfg = root.config_path();
    let mut d = TestDaemon::spawn(root, "telemprobd", &["-f", cfg.to_str().unwrap()]);
    d.wait_for_socket(&root.socket_path(), STARTUP);
    d
}

/// A record as a probe builds it in this root, with `payload`.
pub fn new_record(root: &TestRoot, payload: &str) -> Record {
    let host = HostInfo::collect(&root.paths);
    let mut r = Record::new(2, "org.test/probd/integration", 1, &host).unwrap();
    r.set_payload(payload.as_bytes()).unwrap();
    r
}

/// Send with the library, as a probe does.
pub fn send(root: &TestRoot, record: &Record) -> Result<Delivery, SendError> {
    send_record(&root.paths, &root.socket_path(), record, None)
}

/// Write `chunks` (pausing between them), close the write side, return every reply byte.
pub fn exchange(socket: &Path, chunks: &[&[u8]], pause: Duration) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    for c in chunks {
        s.write_all(c).unwrap();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut replies = Vec::new();
    let _ = s.read_to_end(&mut replies);
    replies
}

/// Every staged record in the spool, parsed.
pub fn staged(root: &TestRoot) -> Vec<StagedRecord> {
    root.staged_files()
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            parse_staged(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

pub fn event_id(r: &Record) -> String {
    r.headers.get(Header::EventId).to_string()
}

/// Raise this process's fd limit (tests holding many connections).
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// Are the tests running as root (needed to act as a second user)?
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Let other users reach the daemon's socket (and files under the root): add search
/// permission on every directory from the temp root down to the socket.
pub fn allow_other_users(root: &TestRoot) {
    use std::os::unix::fs::PermissionsExt;
    let mut dir = root.socket_path().parent().unwrap().to_path_buf();
    loop {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        if dir == root.dir() || !dir.pop() {
            break;
        }
    }
}

/// What a sender running as another user got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentAs {
    Reply(u8),
    /// The connection was closed without a reply.
    NoReply,
    ConnectFailed,
}

/// Send `frame` from a forked child that drops to `uid`/`gid` (the tests must run as root,
/// see [`is_root`]). The child uses raw system calls only: it is forked from a process
/// with other threads.
pub fn send_as(uid: u32, gid: u32, socket: &Path, frame: &[u8]) -> SentAs {
    use std::os::unix::ffi::OsStrExt;
    // Everything the child needs is prepared before the fork.
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = socket.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the child calls only async-signal-safe functions, then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the forked child: raw system calls on values prepared before the fork
        // (no allocation, no lock), then _exit.
        unsafe {
            let code = (|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return 202;
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0
                    || libc::connect(
                        fd,
                        &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) != 0
                {
                    return 201;
                }
                let mut off = 0;
                while off < frame.len() {
                    let n = libc::write(
                        fd,
                        frame[off..].as_ptr() as *const libc::c_void,
                        frame.len() - off,
                    );
                    if n <= 0 {
                        break;
                    }
                    off += n as usize;
                }
                libc::shutdown(fd, libc::SHUT_WR);
                let mut reply = 0u8;
                let n = libc::read(fd, &mut reply as *mut u8 as *mut libc::c_void, 1);
                if n == 1 {
                    i32::from(reply)
                } else {
                    200
                }
            })();
            libc::_exit(code);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "sender child crashed: {status}");
    match libc::WEXITSTATUS(status) {
        202 => panic!("cannot switch to uid {uid}"),
        201 => SentAs::ConnectFailed,
        200 => SentAs::NoReply,
        b => SentAs::Reply(b as u8),
    }
}

/// A forked child running as `uid`/`gid` that opens up to `n` connections to `socket`
/// (non-blocking, for at most 30 s), writes `half` on each and holds them all until killed.
/// Returns its pid once it has made every attempt, and how many connections it opened.
pub fn hold_connections_as(
    uid: u32,
    gid: u32,
    socket: &Path,
    n: usize,
    half: &[u8],
) -> (libc::pid_t, usize) {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(socket.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let mut pipe = [0i32; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child calls only async-signal-safe functions.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: in the forked child: raw system calls on values prepared before the fork
        // (no allocation, no lock); it never returns.
        unsafe {
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(2);
            }
            let start = libc::time(std::ptr::null_mut());
            let mut held: u64 = 0;
            while (held as usize) < n && libc::time(std::ptr::null_mut()) - start < 30 {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if fd < 0 {
                    break;
                }
                let rc = libc::connect(
                    fd,
                    &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
                if rc != 0 {
                    libc::close(fd);
                    libc::usleep(1000);
                    continue;
                }
                libc::send(
                    fd,
                    half.as_ptr() as *const libc::c_void,
                    half.len(),
                    libc::MSG_NOSIGNAL,
                );
                held += 1;
            }
            let bytes = held.to_ne_bytes();
            libc::write(pipe[1], bytes.as_ptr() as *const libc::c_void, 8);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our copy of the write end, which nothing else uses.
    unsafe { libc::close(pipe[1]) };
    let mut bytes = [0u8; 8];
    // SAFETY: reading at most 8 bytes into a local 8-byte array.
    let n = unsafe { libc::read(pipe[0], bytes.as_mut_ptr() as *mut libc::c_void, 8) };
    // SAFETY: closing the read end, which nothing else uses.
    unsafe { libc::close(pipe[0]) };
    assert_eq!(n, 8, "the connection holder did not report");
    (pid, u64::from_ne_bytes(bytes) as usize)
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The command line, from the getopt table both daemons share.
mod cli {
    use telemetrics_tests::daemon_cli;

    #[test]
    fn options_answer_as_glibc_getopt_long() {
        daemon_cli::options_answer_as_glibc_getopt_long("telemprobd", probd::cli::usage);
    }

    #[test]
    fn an_abbreviated_config_option_takes_its_path() {
        daemon_cli::an_abbreviated_config_option_takes_its_path("telemprobd");
    }

    #[test]
    fn unknown_config_keys_are_logged_with_a_suggestion() {
        daemon_cli::unknown_config_keys_are_logged_with_a_suggestion(
            "telemprobd",
            ("socket_path", "/nonexistent/dir/telem-0"),
        );
    }
}
