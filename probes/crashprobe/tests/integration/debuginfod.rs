//! Debug files fetched by build-id: elfutils' `debuginfod` server (Debian package
//! `debuginfod`) on a loopback port, serving the `.debug` file of a stripped test program,
//! behind a counting proxy; and servers that refuse or never answer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object::Object;
use telemetrics_tests::TestRoot;

use crate::backtraces::LEVELS_C;
use crate::support::*;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 64 << 10;

/// `debuginfod -F DIR` on a free loopback port; killed on drop.
struct Debuginfod {
    child: Child,
    port: u16,
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn debuginfod_available() -> bool {
    Command::new("debuginfod")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Debuginfod {
    fn start(lab: &Lab, dir: &Path) -> Debuginfod {
        let port = free_port();
        let child = Command::new("debuginfod")
            .arg("-F")
            .args(["-p", &port.to_string()])
            .arg("-d")
            .arg(lab.path("debuginfod.sqlite"))
            .args(["-t", "0", "-g", "0", "-c", "1"])
            .arg(dir)
            .env("HOME", lab.path(""))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start debuginfod");
        Debuginfod { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The status code of `GET path` on `port`, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Wait until `cond` holds (the machine may be loaded: generous limit).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(120), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reverse proxy that forwards each request to `upstream` on a fresh connection and counts
/// the requests.
struct CountingProxy {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { break };
                let count = Arc::clone(&count);
                std::thread::spawn(move || forward(client, upstream, &count));
            }
        });
        CountingProxy { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One request (a GET: no body) per connection, answered by upstream, then closed.
fn forward(mut client: TcpStream, upstream: u16, count: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            request.push_str(line);
            request.push_str("\r\n");
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(request.as_bytes()).is_ok() {
        let _ = std::io::copy(&mut server, &mut client);
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// A server that accepts connections and never answers.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    port
}

/// The frame lines (`#N ...`) of a payload: PIDs and TIDs differ between runs, frames not.
fn frames(payload: &str) -> Vec<String> {
    payload
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn build_id_hex(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let id = obj
        .build_id()
        .unwrap()
        .expect("test program has a build-id");
    crashprobe::modules::build_id_hex(id)
}

/// A crash of a stripped program: the reference payload of the unstripped program (same
/// path, same addresses: gdb runs programs without address randomization), the core of the
/// stripped one, the directory holding its `.debug` file, and its build-id.
struct Stripped {
    lab: Lab,
    core: PathBuf,
    reference: Vec<String>,
    debug_dir: PathBuf,
    build_id: String,
}

fn stripped_crash() -> Stripped {
    let lab = Lab::new();
    let exe = lab.cc("levels", LEVELS_C, &["-O0", "-g", "-Wl,--build-id"]);
    let build_id = build_id_hex(&exe);
    let args = ["-p", "levels", "-s", "11"];
    let reference = {
        let core = lab.gdb_core(&exe, &[]);
        let root = compatible_root();
        let listener = Listener::start(&root);
        let run = probe(&root, &args, Input::File(&core), Some("/nonexistent"));
        assert_eq!(run.code, 0, "{}", run.stderr);
        frames(&payload(&listener.next()))
    };
    assert!(
        reference.iter().any(|l| l.contains("levels.c:2")),
        "{reference:?}"
    );
    let debug_dir = lab.path("debug");
    std::fs::create_dir(&debug_dir).unwrap();
    let debug_file = debug_dir.join("levels.debug");
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&exe)
            .arg(&debug_file),
    );
    run_ok(Command::new("strip").arg("--strip-debug").arg(&exe));
    run_ok(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug_file.display()))
            .arg(&exe),
    );
    assert_eq!(build_id_hex(&exe), build_id);
    let core = lab.gdb_core(&exe, &[]);
    Stripped {
        lab,
        core,
        reference,
        debug_dir,
        build_id,
    }
}

/// A root with the key set to `urls` and the given time budget.
fn root_with(urls: &str, timeout_s: u32) -> telemetrics_tests::TestRoot {
    let mut root = compatible_root();
    root.set("debuginfod_urls", urls);
    root.set("debuginfod_timeout", &timeout_s.to_string());
    root
}

const ARGS: [&str; 4] = ["-p", "levels", "-s", "11"];
/// No local debug files: the program's debug file is only on the server.
const NO_DEBUG_ROOT: Option<&str> = Some("/nonexistent");

#[test]
fn debug_files_come_from_debuginfod_then_from_the_cache() {
    if !debuginfod_available() {
        eprintln!("SKIPPED: no debuginfod binary (apt-get install debuginfod)");
        return;
    }
    let s = stripped_crash();
    // Without the key: symbol-table names only.
    let root = compatible_root();
    let listener = Listener::start(&root);
    let run = probe(&root, &ARGS, Input::File(&s.core), NO_DEBUG_ROOT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plain = frames(&payload(&listener.next()));
    assert_ne!(plain, s.reference);
    assert!(!plain.iter().any(|l| l.contains("levels.c:")), "{plain:?}");

    let server = Debuginfod::start(&s.lab, &s.debug_dir);
    let path = format!("/buildid/{}/debuginfo", s.build_id);
    wait_until("debuginfod did not index the debug file", || {
        http_status(server.port, &path) == Some(200)
    });
    let proxy = CountingProxy::start(server.port);
    let root = root_with(&proxy.url(), 5);
    let listener = Listener::start(&root);
    let run = probe(&root, &ARGS, Input::File(&s.core), NO_DEBUG_ROOT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        frames(&payload(&listener.next())),
        s.reference,
        "{}",
        run.stderr
    );
    let asked = proxy.count();
    assert!(asked >= 1, "{}", run.stderr);
    assert!(run.stderr.contains(" 1 fetched"), "{}", run.stderr);
    let cached = root
        .paths
        .debuginfod_cache_dir()
        .join(&s.build_id)
        .join("debuginfo");
    assert!(cached.is_file());
    let leftovers: Vec<_> = std::fs::read_dir(cached.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Again: everything from the cache (the program's file, and the libraries the server
    // does not have, remembered as missing); no request at all.
    let run = probe(&root, &ARGS, Input::File(&s.core), NO_DEBUG_ROOT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(frames(&payload(&listener.next())), s.reference);
    assert_eq!(proxy.count(), asked, "{}", run.stderr);
    assert!(run.stderr.contains(" 0 fetched"), "{}", run.stderr);

    // `env` reads DEBUGINFOD_URLS; without it the variable is ignored.
    let root = root_with("env", 5);
    let listener = Listener::start(&root);
    let out = probe_with_debuginfod_urls(&root, &server.url(), &s.core);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(frames(&payload(&listener.next())), s.reference);

    let root = root_with(&format!("http://127.0.0.1:{}", free_port()), 5);
    let listener = Listener::start(&root);
    let out = probe_with_debuginfod_urls(&root, &server.url(), &s.core);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(frames(&payload(&listener.next())), plain);
}

/// crashprobe on `core` with `DEBUGINFOD_URLS=urls` in its environment and no debug root.
fn probe_with_debuginfod_urls(root: &TestRoot, urls: &str, core: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crashprobe"));
    root.apply_env(&mut cmd);
    cmd.env("CRASHPROBE_USER", "root")
        .env("CRASHPROBE_DEBUG_ROOT", "/nonexistent")
        .env("DEBUGINFOD_URLS", urls)
        .args(ARGS)
        .arg("-c")
        .arg(core)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_server_that_is_down_or_never_answers_costs_at_most_the_budget() {
    let s = stripped_crash();
    let root = compatible_root();
    let listener = Listener::start(&root);
    let run = probe(&root, &ARGS, Input::File(&s.core), NO_DEBUG_ROOT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plain = frames(&payload(&listener.next()));

    const BUDGET_S: u32 = 2;
    let down = format!("http://127.0.0.1:{}", free_port());
    let silent = format!("http://127.0.0.1:{}", silent_server());
    for (urls, silent) in [(down, false), (silent, true)] {
        let root = root_with(&urls, BUDGET_S);
        let listener = Listener::start(&root);
        let start = Instant::now();
        let run = probe(&root, &ARGS, Input::File(&s.core), NO_DEBUG_ROOT);
        let took = start.elapsed();
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(frames(&payload(&listener.next())), plain, "{urls}");
        // The budget plus the probe's own work, with a wide margin for a loaded machine;
        // without a budget the silent server would hold the probe until its 300 s alarm.
        assert!(
            took < Duration::from_secs(u64::from(BUDGET_S) + 20),
            "{urls}: {took:?}"
        );
        assert!(
            run.stderr.contains("failed or out of time"),
            "{}",
            run.stderr
        );
        if silent {
            // The probe waited for the silent server as long as the budget allowed.
            assert!(took >= Duration::from_secs(u64::from(BUDGET_S)), "{took:?}");
        }
        // A failure is not remembered as "not found": the next crash asks again.
        let cache = root.paths.debuginfod_cache_dir().join(&s.build_id);
        assert!(!cache.join("debuginfo.missing").exists());
        assert!(!cache.join("debuginfo").exists());
    }
}

/// The program's own file is gone when the probe runs: the file itself comes from the
/// server (`/executable`, checked against the build-id the core holds), then its debug
/// file. Run as root, the probe drops to `nobody` first, and the cache is `nobody`'s.
#[test]
fn a_missing_program_file_is_fetched_as_the_user_the_probe_runs_as() {
    if !debuginfod_available() {
        eprintln!("SKIPPED: no debuginfod binary (apt-get install debuginfod)");
        return;
    }
    let s = stripped_crash();
    let exe = s.lab.path("levels");
    std::fs::copy(&exe, s.debug_dir.join("levels")).unwrap();
    std::fs::remove_file(&exe).unwrap();
    let server = Debuginfod::start(&s.lab, &s.debug_dir);
    for kind in ["executable", "debuginfo"] {
        let path = format!("/buildid/{}/{kind}", s.build_id);
        wait_until("debuginfod did not index the program", || {
            http_status(server.port, &path) == Some(200)
        });
    }
    let root = root_with(&server.url(), 5);
    let listener = Listener::start(&root);
    let mut args = ARGS.to_vec();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        args.extend(["--user", "nobody"]);
        // The dropped-to user needs the test root (state directory, socket).
        run_ok(Command::new("chmod").args(["-R", "o+rwX"]).arg(root.dir()));
    }
    let bytes = to_notes_first(&std::fs::read(&s.core).unwrap());
    let run = probe(&root, &args, Input::Pipe(&bytes), NO_DEBUG_ROOT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        frames(&payload(&listener.next())),
        s.reference,
        "{}",
        run.stderr
    );
    let entry = root.paths.debuginfod_cache_dir().join(&s.build_id);
    for kind in ["executable", "debuginfo"] {
        assert!(entry.join(kind).is_file(), "{kind}");
    }
    if as_root {
        use std::os::unix::fs::MetadataExt;
        let out = run_ok(Command::new("id").args(["-u", "nobody"]));
        let nobody: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        for p in [
            root.paths.debuginfod_cache_dir(),
            entry.clone(),
            entry.join("executable"),
            entry.join("debuginfo"),
        ] {
            assert_eq!(std::fs::metadata(&p).unwrap().uid(), nobody, "{p:?}");
        }
    }
}
