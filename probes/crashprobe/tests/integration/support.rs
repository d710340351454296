//! Test programs, real cores from gdb, a notes-first converter, gdb reference backtraces and
//! a record listener.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use libtelemetry::frame::{decode_frame, Frame};
use telemetrics_tests::TestRoot;

/// A temp dir holding test programs and their cores.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            dir: tempfile::Builder::new()
                .prefix("crashlab")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Compile `src` (C) with `flags` into an executable named `name`.
    pub fn cc(&self, name: &str, src: &str, flags: &[&str]) -> PathBuf {
        self.cc_with("gcc", name, src, flags)
    }

    /// [`Lab::cc`] with another C compiler (a cross compiler).
    pub fn cc_with(&self, compiler: &str, name: &str, src: &str, flags: &[&str]) -> PathBuf {
        let c = self.path(&format!("{name}.c"));
        std::fs::write(&c, src).unwrap();
        let exe = self.path(name);
        run_ok(
            Command::new(compiler)
                .args(flags)
                .arg("-o")
                .arg(&exe)
                .arg(&c)
                .arg("-lpthread"),
        );
        exe
    }

    /// Compile `src` (Rust) with debug info into `name`.
    pub fn rustc(&self, name: &str, src: &str) -> PathBuf {
        let rs = self.path(&format!("{name}.rs"));
        std::fs::write(&rs, src).unwrap();
        let exe = self.path(name);
        run_ok(
            Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                .args(["-g", "-C", "opt-level=0", "-C", "panic=abort", "-o"])
                .arg(&exe)
                .arg(&rs),
        );
        exe
    }

    /// Run `exe` under gdb until it stops on a fatal signal and write a core.
    pub fn gdb_core(&self, exe: &Path, args: &[&str]) -> PathBuf {
        self.gdb_core_with(exe, args, &[])
    }

    /// [`Lab::gdb_core`] with extra gdb commands run before `run`.
    pub fn gdb_core_with(&self, exe: &Path, args: &[&str], pre: &[&str]) -> PathBuf {
        let core = self.path(&format!(
            "{}.core",
            exe.file_name().unwrap().to_string_lossy()
        ));
        let mut cmd = gdb();
        for p in pre {
            cmd.args(["-ex", p]);
        }
        let out = cmd
            .args(["-ex", "run", "-ex"])
            .arg(format!("generate-core-file {}", core.display()))
            .arg("--args")
            .arg(exe)
            .args(args)
            .output()
            .expect("run gdb");
        assert!(
            core.exists(),
            "gdb wrote no core:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        core
    }
}

/// gdb in batch mode, without init files, network lookups or pagination.
pub fn gdb() -> Command {
    let mut c = Command::new("gdb");
    c.env("DEBUGINFOD_URLS", "")
        .args(["-nx", "-q", "-batch"])
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-iex", "set auto-load safe-path /"]);
    c
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A thread's frames by function name, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub tid: u32,
    pub functions: Vec<String>,
}

/// gdb's frames for every thread (as `thread apply all bt` lists them), read through gdb's
/// Python API so that frame kinds are known. gdb also shows "tail call" frames that it
/// rebuilds from DWARF call-site records; they have no return address on the stack, so an
/// unwinder cannot see them, and they are left out of the comparison.
const GDB_FRAMES_PY: &str = r#"
import gdb
for inf in gdb.inferiors():
    for th in sorted(inf.threads(), key=lambda t: t.num, reverse=True):
        th.switch()
        print("THREAD %d" % th.ptid[1])
        f = gdb.newest_frame()
        while f is not None:
            if f.type() == gdb.SIGTRAMP_FRAME:
                print("FRAME sigtramp <signal handler called>")
            elif f.type() == gdb.TAILCALL_FRAME:
                print("FRAME tailcall %s" % (f.name() or "??"))
            else:
                print("FRAME normal %s" % (f.name() or "??"))
            f = f.older()
"#;

/// gdb's backtraces of `core`, with `debug_dirs` as gdb's debug-file-directory.
pub fn gdb_backtraces(exe: &Path, core: &Path, debug_dirs: &str) -> Vec<Thread> {
    let script = core.with_extension("gdb-frames.py");
    std::fs::write(&script, GDB_FRAMES_PY).unwrap();
    let out = gdb()
        .args(["-iex", &format!("set debug-file-directory {debug_dirs}")])
        .arg("-ex")
        .arg(format!("source {}", script.display()))
        .arg(exe)
        .arg(core)
        .output()
        .expect("gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut threads: Vec<Thread> = Vec::new();
    for line in text.lines() {
        if let Some(tid) = line.strip_prefix("THREAD ") {
            threads.push(Thread {
                tid: tid.trim().parse().unwrap(),
                functions: Vec::new(),
            });
        } else if let (Some(rest), Some(t)) = (line.strip_prefix("FRAME "), threads.last_mut()) {
            let (kind, name) = rest.split_once(' ').unwrap_or((rest, "??"));
            if kind != "tailcall" {
                t.functions.push(name.to_string());
            }
        }
    }
    assert!(
        !threads.is_empty(),
        "no threads in gdb output:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    threads
}

/// Per-thread function names from a crashprobe payload.
pub fn payload_backtraces(payload: &str) -> Vec<Thread> {
    let mut threads: Vec<Thread> = Vec::new();
    for line in payload.lines() {
        if let Some(tid) = line.strip_prefix("Backtrace (TID ") {
            threads.push(Thread {
                tid: tid.trim_end_matches("):").parse().unwrap(),
                functions: Vec::new(),
            });
        } else if let (Some(rest), Some(t)) = (line.strip_prefix('#'), threads.last_mut()) {
            let rest = rest.split_once(' ').map_or("", |r| r.1);
            let name = match rest.split_once("() - [") {
                Some((name, _)) => name.to_string(),
                None => "??".to_string(),
            };
            t.functions.push(name);
        }
    }
    threads
}

/// Comparable form of a function name: last path segment without generics or arguments;
/// closures and gdb's signal frame marker mapped to common spellings.
pub fn normalize(name: &str) -> String {
    if name == "<signal handler called>" {
        return "__restore_rt".into();
    }
    if name == "???" {
        return "??".into();
    }
    let mut out = String::new();
    let mut depth = 0i32;
    let mut prev = ' ';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if prev != '-' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        prev = c;
    }
    let out = out.split('(').next().unwrap_or("");
    let out = out.trim_end_matches("::").to_string();
    let last = out.rsplit("::").next().unwrap_or("").to_string();
    if last.contains("closure") {
        "{closure}".into()
    } else {
        // Rust shims: `call_once{{vtable.shim}}` (symbol) is `call_once` in gdb.
        last.split('{').next().unwrap_or("").to_string()
    }
}

/// Check that for every thread gdb shows, crashprobe shows the same functions in the same
/// order. gdb stops at `main` (backtrace past-main off); crashprobe may go on from there.
/// When the payload was cut at its size limit, threads after the cut are missing and the
/// last one shown may end early.
pub fn assert_matches_gdb(ours: &[Thread], gdb: &[Thread], payload: &str) {
    let cut = payload.ends_with(crashprobe::payload::SIZE_MARKER);
    if !cut {
        assert_eq!(ours.len(), gdb.len(), "thread count\n{payload}");
    }
    for g in gdb {
        let Some(o) = ours.iter().find(|o| o.tid == g.tid) else {
            assert!(cut, "TID {} missing from payload:\n{payload}", g.tid);
            continue;
        };
        let gn: Vec<String> = g.functions.iter().map(|f| normalize(f)).collect();
        let on: Vec<String> = o.functions.iter().map(|f| normalize(f)).collect();
        if cut && ours.last().map(|t| t.tid) == Some(g.tid) && on.len() < gn.len() {
            assert_eq!(on[..], gn[..on.len()], "TID {} (cut)\n{payload}", g.tid);
            continue;
        }
        assert!(
            on.len() >= gn.len() && on[..gn.len()] == gn[..],
            "TID {}: frames differ from gdb\n gdb:  {:?}\n ours: {:?}\npayload:\n{payload}",
            g.tid,
            gn,
            on
        );
        if on.len() > gn.len() {
            assert_eq!(
                gn.last().map(String::as_str),
                Some("main"),
                "TID {}: extra frames after {:?}\n{payload}",
                g.tid,
                gn.last()
            );
        }
    }
}

/// Rewrite a core into the kernel's layout: ELF header, program headers, all notes, then
/// the memory segments at page-aligned offsets. Section headers are dropped.
pub fn to_notes_first(core: &[u8]) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes(core[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(core[o..o + 8].try_into().unwrap());
    let phoff = u64_at(32) as usize;
    let phnum = u16_at(56) as usize;
    let mut phdrs: Vec<Vec<u8>> = (0..phnum)
        .map(|i| core[phoff + i * 56..phoff + (i + 1) * 56].to_vec())
        .collect();
    let mut out = core[..64].to_vec();
    out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    out[40..48].copy_from_slice(&0u64.to_le_bytes()); // e_shoff
    out[58..60].copy_from_slice(&0u16.to_le_bytes()); // e_shentsize
    out[60..62].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
    out[62..64].copy_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let mut data: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut pos = 64 + phnum * 56;
    // Notes first, then loads, each in their original order.
    for pass in [4u32, 1u32] {
        for (i, ph) in phdrs.iter_mut().enumerate() {
            let ptype = u32::from_le_bytes(ph[0..4].try_into().unwrap());
            if ptype != pass {
                continue;
            }
            let off = u64::from_le_bytes(ph[8..16].try_into().unwrap()) as usize;
            let size = u64::from_le_bytes(ph[32..40].try_into().unwrap()) as usize;
            if pass == 1 {
                pos = pos.next_multiple_of(4096);
            }
            ph[8..16].copy_from_slice(&(pos as u64).to_le_bytes());
            data.push((i, core[off..off + size].to_vec()));
            pos += size;
        }
    }
    for ph in &phdrs {
        out.extend_from_slice(ph);
    }
    for (i, bytes) in data {
        let off = u64::from_le_bytes(phdrs[i][8..16].try_into().unwrap()) as usize;
        out.resize(off, 0);
        out.extend_from_slice(&bytes);
    }
    out
}

/// A telemprobd stand-in: accepts connections on the root's socket, replies `A`, and hands
/// over the decoded frames.
pub struct Listener {
    rx: mpsc::Receiver<Frame>,
}

impl Listener {
    pub fn start(root: &TestRoot) -> Listener {
        let _ = std::fs::remove_file(root.socket_path());
        let listener = UnixListener::bind(root.socket_path()).expect("bind");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { break };
                let mut buf = Vec::new();
                let _ = c.read_to_end(&mut buf);
                let _ = c.write_all(b"A");
                let frame = decode_frame(&buf).expect("probe sent a valid frame");
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
        Listener { rx }
    }

    pub fn next(&self) -> Frame {
        self.rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no record received")
    }

    pub fn none(&self) -> bool {
        self.rx.recv_timeout(Duration::from_millis(200)).is_err()
    }
}

/// A root with the privacy filters off (test programs live outside /usr) and the rich
/// frame style (inlined frames, demangled names), which is what gdb shows.
pub fn unfiltered_root() -> TestRoot {
    let mut root = compatible_root();
    root.set(crashprobe::cli::FRAMES_KEY, "rich");
    root
}

/// A root with the privacy filters off and the default configuration.
pub fn compatible_root() -> TestRoot {
    let root = TestRoot::new();
    std::fs::write(root.paths.no_privacy_filters_file(), "").unwrap();
    root
}

/// What one probe run produced.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Where the probe reads the core from.
pub enum Input<'a> {
    /// `-c FILE`.
    File(&'a Path),
    /// Written into a real pipe on stdin.
    Pipe(&'a [u8]),
}

/// Run crashprobe in `root` with `args` and `input`, within a time limit.
pub fn probe(root: &TestRoot, args: &[&str], input: Input<'_>, debug_root: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crashprobe"));
    root.apply_env(&mut cmd);
    cmd.env("CRASHPROBE_USER", "root").args(args);
    match debug_root {
        Some(d) => cmd.env("CRASHPROBE_DEBUG_ROOT", d),
        None => cmd.env_remove("CRASHPROBE_DEBUG_ROOT"),
    };
    if let Input::File(p) = input {
        cmd.arg("-c").arg(p);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn crashprobe");
    let mut stdin = child.stdin.take().unwrap();
    let writer = match input {
        Input::Pipe(bytes) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                // The probe must read everything: a write error here means it did not.
                stdin.write_all(&bytes).map_err(|e| e.to_string())
            }))
        }
        Input::File(_) => {
            drop(stdin);
            None
        }
    };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("crashprobe hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        w.join()
            .unwrap()
            .expect("crashprobe did not drain its stdin");
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.unwrap().read_to_string(&mut stderr).unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Payload text of a frame.
pub fn payload(f: &Frame) -> String {
    String::from_utf8(f.record.payload.clone()).unwrap()
}

pub fn class(f: &Frame) -> &str {
    f.record.classification()
}

pub fn severity(f: &Frame) -> &str {
    f.record.headers.get(libtelemetry::record::Header::Severity)
}

/// One memory segment of a synthetic core.
pub struct Seg {
    pub vaddr: u64,
    pub flags: u32,
    pub bytes: Vec<u8>,
    pub memsz: u64,
}

/// A minimal kernel-layout core: one `NT_PRSTATUS` per `(tid, rip, rsp, rbp)`, an optional
/// `NT_FILE`, and `segs`.
pub fn synthetic_core(
    threads: &[(u32, u64, u64, u64)],
    files: &[(u64, u64, u64, &str)],
    segs: &[Seg],
) -> Vec<u8> {
    fn note(out: &mut Vec<u8>, ntype: u32, desc: &[u8]) {
        out.extend_from_slice(&5u32.to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&ntype.to_le_bytes());
        out.extend_from_slice(b"CORE\0\0\0\0");
        out.extend_from_slice(desc);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut notes = Vec::new();
    for &(tid, rip, rsp, rbp) in threads {
        let mut d = vec![0u8; 336];
        d[12..14].copy_from_slice(&11u16.to_le_bytes());
        d[32..36].copy_from_slice(&tid.to_le_bytes());
        for (i, v) in [(16usize, rip), (19, rsp), (4, rbp)] {
            d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        note(&mut notes, 1, &d);
    }
    if !files.is_empty() {
        let mut d = Vec::new();
        d.extend_from_slice(&(files.len() as u64).to_le_bytes());
        d.extend_from_slice(&4096u64.to_le_bytes());
        for (s, e, o, _) in files {
            for v in [s, e, o] {
                d.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (_, _, _, p) in files {
            d.extend_from_slice(p.as_bytes());
            d.push(0);
        }
        note(&mut notes, 0x4649_4c45, &d);
    }
    let phnum = 1 + segs.len();
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16] = 4;
    out[18] = 62;
    out[20] = 1;
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[52] = 64;
    out[54] = 56;
    out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let notes_off = 64 + phnum as u64 * 56;
    let ph = |t: u32, f: u32, off: u64, va: u64, fsz: u64, msz: u64| {
        let mut p = Vec::new();
        p.extend_from_slice(&t.to_le_bytes());
        p.extend_from_slice(&f.to_le_bytes());
        for v in [off, va, 0, fsz, msz, 1] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    let mut table = ph(4, 0, notes_off, 0, notes.len() as u64, 0);
    let mut off = (notes_off + notes.len() as u64).next_multiple_of(4096);
    let mut offsets = Vec::new();
    for s in segs {
        table.extend(ph(1, s.flags, off, s.vaddr, s.bytes.len() as u64, s.memsz));
        offsets.push(off);
        off = (off + s.bytes.len() as u64).next_multiple_of(4096);
    }
    out.extend(table);
    out.extend(notes);
    for (s, o) in segs.iter().zip(offsets) {
        out.resize(o as usize, 0);
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// Let the child that `cmd` starts dump core of any size (`RLIMIT_CORE` unlimited).
pub fn allow_core_dumps(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            Ok(())
        });
    }
}
