//! A hostile unprivileged local user, for the end-to-end test of the daemons' trust model
//! (`tests/tests/e2e/hostile.rs`). Started as an unprivileged uid with `TELEMETRICS_ROOT` /
//! `TELEMETRICS_HOST_ROOT` set, it runs every attack a local user can make on its own, all
//! at once, against the telemprobd socket:
//!
//! * a `CFG:` file whose `cainfo=` is a FIFO, one whose `cainfo=` is `/dev/zero`, and one
//!   swapped for a FIFO right after telemprobd accepted it (telempostd must never block on
//!   or read any of them);
//! * a flood of junk records (`JUNK_BURST` at once before and after, a steady stream in
//!   between);
//! * thousands of connections holding half a frame, reopened as the daemon closes them;
//! * one record every 2 s whose `CFG:` names a server that accepts and never answers;
//! * malformed frames (`header_size` 10 bytes too large, a 16th header line).
//!
//! Usage: `hostile-user <socket> <own dir> <spool dir> <collector url> <silent server url>`.
//! Commands on stdin: `after` (the second junk burst; answered `after-done`), `stop` (end
//! every attack, close every connection, print `stats {json}` and exit). After the first
//! burst and the connections are in place it prints `ready {json}`.

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtelemetry::client::{send_frame, Ack, Delivery, SendError};
use libtelemetry::{encode_frame, HostInfo, Paths, Record};

/// Junk records sent at once before and after root's records.
const JUNK_BURST: usize = 3000;
/// Longest time of a junk burst.
const BURST_TIME: Duration = Duration::from_secs(8);
/// Connections the holder tries to keep open at once.
const HELD_CONNECTIONS: usize = 6000;
/// Reopened connections per round of the holder (bounds the attacker's own CPU use).
const REOPEN_PER_ROUND: usize = 600;
/// Budget of one send (a client would give up after it).
const SEND_BUDGET: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counts {
    junk_accepted: AtomicU64,
    junk_refused: AtomicU64,
    junk_failed: AtomicU64,
    cfg_accepted: AtomicU64,
    cfg_refused: AtomicU64,
    hang_accepted: AtomicU64,
    malformed_refused: AtomicU64,
    malformed_accepted: AtomicU64,
    /// Turned away unread (`O`: this uid's connections are all in use).
    malformed_overloaded: AtomicU64,
    malformed_other: AtomicU64,
    held_peak: AtomicU64,
    reopened: AtomicU64,
}

impl Counts {
    fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "junk_accepted": g(&self.junk_accepted),
            "junk_refused": g(&self.junk_refused),
            "junk_failed": g(&self.junk_failed),
            "cfg_accepted": g(&self.cfg_accepted),
            "cfg_refused": g(&self.cfg_refused),
            "hang_accepted": g(&self.hang_accepted),
            "malformed_refused": g(&self.malformed_refused),
            "malformed_accepted": g(&self.malformed_accepted),
            "malformed_overloaded": g(&self.malformed_overloaded),
            "malformed_other": g(&self.malformed_other),
            "held_peak": g(&self.held_peak),
            "reopened": g(&self.reopened),
        })
    }
}

struct Ctx {
    socket: PathBuf,
    host: HostInfo,
    counts: Counts,
    stop: AtomicBool,
}

impl Ctx {
    fn record(&self, classification: &str, payload: &str) -> Record {
        let mut r = Record::new(1, classification, 1, &self.host).expect("record");
        r.set_payload(payload.as_bytes()).expect("payload");
        r
    }

    /// Send `frame`; `Some(true)` acknowledged, `Some(false)` refused by the daemon, `None`
    /// failed otherwise (timeout, connect error).
    fn send(&self, frame: &[u8]) -> Option<bool> {
        match send_frame(&self.socket, frame, SEND_BUDGET) {
            Ok(Delivery::Acknowledged) => Some(true),
            Ok(_) => None,
            Err(SendError::Rejected(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// One junk record; true when accepted.
    fn junk(&self, n: u64) -> bool {
        let r = self.record("org.test/junk/flood", &format!("junk {n}"));
        let sent = self.send(&encode_frame(&r, None));
        match sent {
            Some(true) => &self.counts.junk_accepted,
            Some(false) => &self.counts.junk_refused,
            None => &self.counts.junk_failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        sent == Some(true)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleep `d` in small steps, returning early (true) when stopped.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stopped() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
        self.stopped()
    }
}

/// `JUNK_BURST` junk records accepted, from 4 senders at once, each sending again at once
/// when turned away (for at most `BURST_TIME`).
fn junk_burst(ctx: &Arc<Ctx>, base: u64) {
    let deadline = Instant::now() + BURST_TIME;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ctx = Arc::clone(ctx);
            std::thread::spawn(move || {
                let (mut accepted, mut i) = (0, 0);
                while accepted < JUNK_BURST / 4 && Instant::now() < deadline {
                    i += 1;
                    accepted += usize::from(ctx.junk(base + t * 1_000_000 + i));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// A non-blocking connection to `socket` with `half` written, or None (backlog full).
fn open_half(addr: &libc::sockaddr_un, half: &[u8]) -> Option<i32> {
    // SAFETY: plain system calls on a socket this function owns.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return None;
        }
        let rc = libc::connect(
            fd,
            (addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        if rc != 0 {
            libc::close(fd);
            return None;
        }
        libc::send(fd, half.as_ptr().cast(), half.len(), libc::MSG_NOSIGNAL);
        Some(fd)
    }
}

/// Holds up to `HELD_CONNECTIONS` connections with half a frame each; every round, those
/// the daemon answered or closed are closed and reopened. `ready` is set once the first
/// round is done.
fn hold_connections(ctx: &Ctx, ready: &AtomicBool) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr
        .sun_path
        .iter_mut()
        .zip(ctx.socket.as_os_str().as_bytes())
    {
        *d = *s as libc::c_char;
    }
    let r = ctx.record("org.test/junk/half", "half a frame");
    let frame = encode_frame(&r, None);
    let half = &frame[..frame.len() / 2];
    let mut held: Vec<i32> = Vec::with_capacity(HELD_CONNECTIONS);
    let mut first = true;
    while !ctx.stopped() {
        // Drop the connections the daemon answered (`O`, `I`) or closed.
        held.retain(|&fd| {
            let mut b = [0u8; 16];
            // SAFETY: recv on an fd this function owns into a local buffer.
            let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
            let open =
                n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
            if !open {
                // SAFETY: closing an fd this function owns, once.
                unsafe { libc::close(fd) };
            }
            open
        });
        let mut opened = 0;
        while held.len() < HELD_CONNECTIONS && (first || opened < REOPEN_PER_ROUND) {
            match open_half(&addr, half) {
                Some(fd) => {
                    held.push(fd);
                    opened += 1;
                }
                None => break,
            }
        }
        if !first {
            ctx.counts
                .reopened
                .fetch_add(opened as u64, Ordering::Relaxed);
        }
        ctx.counts
            .held_peak
            .fetch_max(held.len() as u64, Ordering::Relaxed);
        first = false;
        ready.store(true, Ordering::SeqCst);
        ctx.pause(Duration::from_millis(250));
    }
    for fd in held {
        // SAFETY: closing fds this function owns, once each.
        unsafe { libc::close(fd) };
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// F1/F2: records whose `CFG:` sets `cainfo` to a FIFO or `/dev/zero`, and a `CFG:` file
/// swapped for a FIFO once telemprobd accepted it; one of each per second.
fn hostile_cainfo(ctx: &Ctx, dir: &Path, collector_url: &str) {
    let fifo = dir.join("ca.fifo");
    mkfifo(&fifo);
    let fifo_conf = dir.join("cainfo-fifo.conf");
    write_file(
        &fifo_conf,
        &format!(
            "[settings]\nserver={collector_url}\ncainfo={}\n",
            fifo.display()
        ),
    );
    let zero_conf = dir.join("cainfo-zero.conf");
    write_file(
        &zero_conf,
        &format!("[settings]\nserver={collector_url}\ncainfo=/dev/zero\n"),
    );
    let swap_conf = dir.join("swapped.conf");
    let swap_fifo = dir.join("swapped.fifo");
    let mut n = 0u64;
    while !ctx.stopped() {
        n += 1;
        for conf in [&fifo_conf, &zero_conf] {
            let r = ctx.record("org.test/junk/cainfo", &format!("cainfo {n}"));
            let sent = ctx.send(&encode_frame(&r, conf.to_str()));
            match sent {
                Some(true) => &ctx.counts.cfg_accepted,
                _ => &ctx.counts.cfg_refused,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        // The previous round left a FIFO there: writing would wait for a reader.
        let _ = std::fs::remove_file(&swap_conf);
        write_file(&swap_conf, &format!("[settings]\nserver={collector_url}\n"));
        let r = ctx.record("org.test/junk/swapped", &format!("swapped {n}"));
        match ctx.send(&encode_frame(&r, swap_conf.to_str())) {
            Some(true) => &ctx.counts.cfg_accepted,
            _ => &ctx.counts.cfg_refused,
        }
        .fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(&swap_fifo);
        mkfifo(&swap_fifo);
        let _ = std::fs::rename(&swap_fifo, &swap_conf);
        if ctx.pause(Duration::from_secs(1)) {
            break;
        }
    }
}

/// F6: one record every 2 s whose `CFG:` names a server that never answers (resent until
/// accepted within the 2 s, as a persistent attacker would).
fn hanging_server(ctx: &Ctx, dir: &Path, silent_url: &str) {
    let conf = dir.join("hang.conf");
    write_file(&conf, &format!("[settings]\nserver={silent_url}\n"));
    let mut n = 0u64;
    while !ctx.stopped() {
        n += 1;
        let started = Instant::now();
        let r = ctx.record("org.test/junk/hang", &format!("hang {n}"));
        let frame = encode_frame(&r, conf.to_str());
        while started.elapsed() < Duration::from_millis(1500) && !ctx.stopped() {
            if ctx.send(&frame) == Some(true) {
                ctx.counts.hang_accepted.fetch_add(1, Ordering::Relaxed);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if ctx.pause(Duration::from_secs(2).saturating_sub(started.elapsed())) {
            break;
        }
    }
}

/// F9: frames whose header block is delimited wrongly, several a second.
fn malformed_frames(ctx: &Ctx) {
    let r = ctx.record("org.test/junk/malformed", "THE-PAYLOAD-WOULD-BE-HERE");
    let good = encode_frame(&r, None);
    let hs = r.headers.block().len() as u32;
    let mut long_header_size = good.clone();
    long_header_size[4..8].copy_from_slice(&(hs + 10).to_ne_bytes());
    // The payload's first line would pass for a 16th header.
    let r16 = ctx.record("org.test/junk/malformed", "extra: line\nrest");
    let mut sixteen = encode_frame(&r16, None);
    sixteen[4..8].copy_from_slice(&(hs + 12).to_ne_bytes());
    while !ctx.stopped() {
        for f in [&long_header_size, &sixteen] {
            let c = match send_frame(&ctx.socket, f, SEND_BUDGET) {
                Err(SendError::Rejected(Ack::Invalid)) => &ctx.counts.malformed_refused,
                Err(SendError::Rejected(Ack::Overloaded)) => &ctx.counts.malformed_overloaded,
                Ok(Delivery::Acknowledged) => &ctx.counts.malformed_accepted,
                _ => &ctx.counts.malformed_other,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        if ctx.pause(Duration::from_millis(100)) {
            break;
        }
    }
}

/// Can this user create a file in the spool? (Where it can, it could also plant files
/// there; the units make the spool 0750 and owned by the daemon user.)
fn spool_writable(spool: &Path) -> bool {
    let p = spool.join(".hostile-probe");
    match std::fs::File::create(&p) {
        Ok(_) => {
            let _ = std::fs::remove_file(&p);
            true
        }
        Err(_) => false,
    }
}

fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, dir, spool, collector_url, silent_url] = &args[..] else {
        eprintln!(
            "usage: hostile-user <socket> <own dir> <spool dir> <collector url> <silent url>"
        );
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let fd_limit = raise_fd_limit();
    let paths = Paths::from_env();
    let ctx = Arc::new(Ctx {
        socket: PathBuf::from(socket),
        host: HostInfo::collect(&paths),
        counts: Counts::default(),
        stop: AtomicBool::new(false),
    });
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    let writable = spool_writable(Path::new(spool));

    // The records with a hostile `CFG:` go first, before the junk has used this uid's
    // share of the rate limit (they would wait in the spool for the next minute), and the
    // junk burst before the connections are held (which leave this uid no connection).
    let mut threads = Vec::new();
    {
        let (ctx, dir, url) = (Arc::clone(&ctx), dir.clone(), collector_url.clone());
        threads.push(std::thread::spawn(move || hostile_cainfo(&ctx, &dir, &url)));
    }
    {
        let (ctx, dir, url) = (Arc::clone(&ctx), dir.clone(), silent_url.clone());
        threads.push(std::thread::spawn(move || hanging_server(&ctx, &dir, &url)));
    }
    {
        let ctx = Arc::clone(&ctx);
        threads.push(std::thread::spawn(move || malformed_frames(&ctx)));
    }
    let first_sent = Instant::now() + Duration::from_secs(10);
    while (ctx.counts.hang_accepted.load(Ordering::Relaxed) == 0
        || ctx.counts.cfg_accepted.load(Ordering::Relaxed) < 3)
        && Instant::now() < first_sent
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    junk_burst(&ctx, 0);
    let held_ready = Arc::new(AtomicBool::new(false));
    {
        let (ctx, ready) = (Arc::clone(&ctx), Arc::clone(&held_ready));
        threads.push(std::thread::spawn(move || hold_connections(&ctx, &ready)));
    }
    while !held_ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    {
        // The steady stream of junk between the bursts.
        let ctx = Arc::clone(&ctx);
        threads.push(std::thread::spawn(move || {
            let mut n = 10_000_000;
            while !ctx.pause(Duration::from_millis(5)) {
                n += 1;
                let _ = ctx.junk(n);
            }
        }));
    }
    let out = std::io::stdout();
    let say = |line: String| {
        let mut o = out.lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    say(format!(
        "ready {}",
        serde_json::json!({
            "uid": uid, "fd_limit": fd_limit, "spool_writable": writable,
            "counts": ctx.counts.json(),
        })
    ));
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("after") => {
                junk_burst(&ctx, 20_000_000);
                say("after-done".to_string());
            }
            Ok("stop") | Err(_) => break,
            Ok(_) => {}
        }
    }
    ctx.stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    say(format!("stats {}", ctx.counts.json()));
}
