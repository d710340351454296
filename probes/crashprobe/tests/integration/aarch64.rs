//! aarch64 cores analysed on this machine: C programs cross-compiled with Debian's
//! `gcc-aarch64-linux-gnu`, crashed under `qemu-aarch64` (whose cores carry no `NT_FILE`,
//! so modules come from the dynamic linker's list), read with `--sysroot` and compared
//! with `gdb-multiarch` on the same core: same functions, files and lines, frame by frame.
//! Position-independent builds (which gdb-multiarch does not symbolize in a qemu core)
//! must give the frames of the fixed-address build.
//! Skipped, with a message, when the cross tools are not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backtraces::{LEVELS_C, OPTIMIZED_C, THREADS_C};
use crate::support::*;

const SYSROOT: &str = "/usr/aarch64-linux-gnu";

const ABORT_C: &str = r#"
#include <stdlib.h>
__attribute__((noinline)) void give_up(void) { abort(); }
__attribute__((noinline)) void decide(int n) { if (n < 5) give_up(); }
int main(int argc, char **argv) { decide(argc); return 0; }
"#;

/// The cross tools, or why the test is skipped.
fn cross_tools() -> Option<()> {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["aarch64-linux-gnu-gcc", "qemu-aarch64", "gdb-multiarch"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() || !Path::new(SYSROOT).join("lib").is_dir() {
        eprintln!(
            "SKIPPED: aarch64 cross tools missing ({missing:?}, {SYSROOT}); \
             apt-get install gcc-aarch64-linux-gnu qemu-user gdb-multiarch"
        );
        return None;
    }
    Some(())
}

fn cross_cc(lab: &Lab, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    lab.cc_with("aarch64-linux-gnu-gcc", name, src, flags)
}

/// Run `exe` under qemu-aarch64 in a directory of its own; returns the core qemu wrote.
fn qemu_core(lab: &Lab, exe: &Path) -> PathBuf {
    let dir = lab.path(&format!(
        "{}.cores",
        exe.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -c unlimited; exec qemu-aarch64 -L {SYSROOT} '{}'",
            exe.display()
        ))
        .current_dir(&dir)
        .output()
        .expect("qemu-aarch64");
    assert!(!out.status.success(), "the program did not crash");
    let core = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "core"))
        .unwrap_or_else(|| {
            panic!(
                "no qemu core in {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    core
}

/// One frame: function and `file:line` (basename of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    function: String,
    location: Option<(String, u32)>,
}

type Threads = Vec<(u32, Vec<Frame>)>;

fn basename(p: &str) -> String {
    p.rsplit('/').next().unwrap_or(p).to_string()
}

fn file_line(s: &str) -> Option<(String, u32)> {
    let (file, line) = s.trim().rsplit_once(':')?;
    Some((basename(file), line.parse().ok()?))
}

/// crashprobe's frames (rich style) for `core`.
fn ours(exe: &Path, core: Input<'_>, signal: &str) -> (Threads, String) {
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let exe_s = exe.to_str().unwrap();
    let name = exe.file_name().unwrap().to_str().unwrap();
    let run = probe(
        &root,
        &[
            "-p",
            name,
            "-E",
            &exe_s.replace('/', "!"),
            "-s",
            signal,
            "--sysroot",
            SYSROOT,
        ],
        core,
        Some("/nonexistent"),
    );
    let text = payload(&listener.next());
    assert_eq!(run.code, 0, "stderr: {}\n{text}", run.stderr);
    let mut threads: Threads = Vec::new();
    for line in text.lines() {
        if let Some(tid) = line.strip_prefix("Backtrace (TID ") {
            threads.push((tid.trim_end_matches("):").parse().unwrap(), Vec::new()));
        } else if let (Some(rest), Some(t)) = (line.strip_prefix('#'), threads.last_mut()) {
            let rest = rest.split_once(' ').map_or("", |r| r.1);
            let (function, tail) = match rest.split_once("() - [") {
                Some((f, tail)) => (f.to_string(), tail),
                None => ("??".to_string(), ""),
            };
            let location = tail.split_once("] - ").and_then(|(_, l)| file_line(l));
            t.1.push(Frame { function, location });
        }
    }
    (threads, text)
}

/// gdb-multiarch's `thread apply all bt` for `core`, with the sysroot.
fn gdb_frames(exe: &Path, core: &Path) -> (Threads, String) {
    // gdb-multiarch can spin on a qemu core it cannot unwind: bounded.
    let out = Command::new("timeout")
        .args(["300", "gdb-multiarch"])
        .env("DEBUGINFOD_URLS", "")
        .args(["-nx", "-q", "-batch"])
        .args(["-iex", "set debuginfod enabled off"])
        .args(["-ex", &format!("set sysroot {SYSROOT}")])
        .args(["-ex", "thread apply all bt"])
        .arg(exe)
        .arg(core)
        .output()
        .expect("gdb-multiarch");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut threads: Threads = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            // Thread 2 (LWP 1234):
            let tid = rest
                .split_once("(LWP ")
                .or_else(|| rest.split_once("(process "))
                .and_then(|(_, t)| t.split(')').next()?.trim().parse().ok())
                .unwrap_or(0);
            threads.push((tid, Vec::new()));
        } else if let (Some(rest), Some(t)) = (line.strip_prefix('#'), threads.last_mut()) {
            let rest = rest.split_once(' ').map_or("", |r| r.1).trim_start();
            // `0x... in ` precedes the function of all but exact (first/inline) frames.
            let rest = match rest.split_once(" in ") {
                Some((addr, r)) if addr.starts_with("0x") => r,
                _ => rest,
            };
            let function = rest.split(" (").next().unwrap_or("??").to_string();
            let location = rest.rsplit_once(" at ").and_then(|(_, l)| file_line(l));
            t.1.push(Frame { function, location });
        }
    }
    assert!(
        !threads.is_empty(),
        "gdb-multiarch showed no threads:\n{text}"
    );
    (threads, text)
}

/// A frame as compared: a library without debug information has only ELF symbols, where
/// one address often has aliases (`__nanosleep`, `nanosleep`) and gdb and crashprobe (as
/// libdwfl) may pick different ones; those are compared without leading underscores.
fn comparable(threads: &Threads) -> Threads {
    threads
        .iter()
        .map(|(tid, frames)| {
            let frames = frames
                .iter()
                .map(|f| match &f.location {
                    Some(_) => f.clone(),
                    None => Frame {
                        function: f.function.trim_start_matches('_').to_string(),
                        location: None,
                    },
                })
                .collect();
            (*tid, frames)
        })
        .collect()
}

/// Every frame gdb shows, ours shows the same (gdb stops at `main`; crashprobe may go on).
/// Returns the number of frames compared.
fn assert_same_frames(ours: &Threads, gdb: &Threads, context: &str) -> usize {
    let (ours, gdb) = (&comparable(ours), &comparable(gdb));
    assert_eq!(ours.len(), gdb.len(), "thread count\n{context}");
    let mut compared = 0;
    for (tid, g) in gdb {
        let o = &ours
            .iter()
            .find(|(t, _)| t == tid)
            .unwrap_or_else(|| panic!("TID {tid} missing\n{context}"))
            .1;
        assert!(
            o.len() >= g.len() && o[..g.len()] == g[..],
            "TID {tid}: frames differ\n gdb:  {g:?}\n ours: {o:?}\n{context}"
        );
        compared += g.len();
    }
    compared
}

/// Build `src` fixed-address and position-independent, crash both under qemu, and check:
/// the fixed-address core against gdb, and the PIE core against the fixed-address frames.
fn check(name: &str, src: &str, flags: &[&str], signal: &str) -> (String, usize) {
    let lab = Lab::new();
    let mut fixed_flags = flags.to_vec();
    fixed_flags.push("-no-pie");
    let exe = cross_cc(&lab, name, src, &fixed_flags);
    let core = qemu_core(&lab, &exe);
    let (o, text) = ours(&exe, Input::File(&core), signal);
    let (g, gdb_text) = gdb_frames(&exe, &core);
    let n = assert_same_frames(&o, &g, &format!("{text}\ngdb:\n{gdb_text}"));
    assert!(n > 0);
    // Through a pipe, as the kernel would give it: the reader keeps what the link_map walk
    // reads (qemu writes the notes first, so the core is streamed).
    let bytes = std::fs::read(&core).unwrap();
    let (piped, piped_text) = ours(&exe, Input::Pipe(&bytes), signal);
    assert_eq!(piped, o, "piped:\n{piped_text}\nfile:\n{text}");

    let mut pie_flags = flags.to_vec();
    pie_flags.extend(["-fPIE", "-pie"]);
    // Same source file name, so that the frames are comparable.
    let pie_lab = Lab::new();
    let pie = cross_cc(&pie_lab, name, src, &pie_flags);
    let pie_core = qemu_core(&pie_lab, &pie);
    let (p, pie_text) = ours(&pie, Input::File(&pie_core), signal);
    // Thread ids differ between the runs: compare thread by thread in order.
    assert_eq!(p.len(), o.len(), "{pie_text}\n{text}");
    for ((_, pf), (_, of)) in p.iter().zip(&o) {
        assert_eq!(
            pf, of,
            "PIE frames differ\nPIE:\n{pie_text}\nfixed:\n{text}"
        );
    }
    eprintln!("{name}: {n} frames equal to gdb-multiarch; PIE build equal");
    (text, n)
}

fn functions(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| {
            l.split_once(' ')?
                .1
                .split_once("() - [")
                .map(|x| x.0.to_string())
        })
        .collect()
}

#[test]
fn aarch64_o0_matches_gdb_multiarch() {
    let Some(()) = cross_tools() else { return };
    let (text, _) = check("levels", LEVELS_C, &["-g", "-O0"], "11");
    let f = functions(&text);
    assert_eq!(f[..4], ["level3", "level2", "level1", "main"], "{text}");
}

#[test]
fn aarch64_o2_matches_gdb_multiarch() {
    let Some(()) = cross_tools() else { return };
    let (text, _) = check("optimized", OPTIMIZED_C, &["-g", "-O2"], "11");
    let f = functions(&text);
    // `poke` is inlined into `deep`: its own frame, as in gdb.
    assert_eq!(f[0], "poke", "{text}");
    assert_eq!(f.iter().filter(|f| *f == "deep").count(), 4, "{text}");
}

#[test]
fn aarch64_abort_in_libc_matches_gdb_multiarch() {
    let Some(()) = cross_tools() else { return };
    let (text, _) = check("aborts", ABORT_C, &["-g", "-O0"], "6");
    let f = functions(&text);
    let at = f.iter().position(|f| f == "abort").expect(&text);
    assert_eq!(f[at + 1..at + 3], ["give_up", "decide"], "{text}");
}

#[test]
fn aarch64_threads_match_gdb_multiarch() {
    let Some(()) = cross_tools() else { return };
    // A store to address 0 is compiled into a trap (`brk`) at -O2, which qemu-aarch64 does
    // not turn into a crash; address 8 faults as well.
    let src = THREADS_C.replace("*(volatile int *)0 = 1", "*(volatile int *)8 = 1");
    let (text, _) = check("threads", &src, &["-g", "-O2"], "11");
    assert_eq!(text.matches("Backtrace (TID ").count(), 3, "{text}");
    assert!(text.contains("sleeper()") && text.contains("waiter_inner()"));
}

/// Return addresses signed with pointer authentication (qemu's default CPU has it; gdb
/// cannot unwind them without the kernel's PAC mask note, which qemu does not write): the
/// frames are those of the unsigned build.
#[test]
fn aarch64_signed_return_addresses_are_stripped() {
    let Some(()) = cross_tools() else { return };
    let plain_lab = Lab::new();
    let plain = cross_cc(&plain_lab, "levels", LEVELS_C, &["-g", "-O0", "-no-pie"]);
    let plain_core = qemu_core(&plain_lab, &plain);
    let (want, want_text) = ours(&plain, Input::File(&plain_core), "11");
    let lab = Lab::new();
    let flags = ["-g", "-O0", "-no-pie", "-mbranch-protection=pac-ret+leaf"];
    let exe = cross_cc(&lab, "levels", LEVELS_C, &flags);
    let core = qemu_core(&lab, &exe);
    let (got, text) = ours(&exe, Input::File(&core), "11");
    assert_eq!(got.len(), 1, "{text}");
    assert_eq!(
        got[0].1, want[0].1,
        "signed:\n{text}\nunsigned:\n{want_text}"
    );
    assert_eq!(
        functions(&text)[..4],
        ["level3", "level2", "level1", "main"],
        "{text}"
    );
}

/// A qemu core whose data segments (where the dynamic section, `r_debug` and the
/// `link_map` list are) are corrupted, also into a list that loops: analysed without a
/// panic, as a record.
#[test]
fn aarch64_corrupt_link_map_never_panics() {
    let Some(()) = cross_tools() else { return };
    let lab = Lab::new();
    let exe = cross_cc(&lab, "levels", LEVELS_C, &["-g", "-O0", "-no-pie"]);
    let core = std::fs::read(qemu_core(&lab, &exe)).unwrap();
    let img = crashprobe::CoreImage::from_vec(core.clone()).unwrap();
    let data: Vec<(usize, usize)> = img
        .segments
        .iter()
        .filter(|s| s.p_type == 1 && !s.is_executable() && s.filesz > 0 && s.filesz <= 1 << 20)
        .map(|s| (s.offset as usize, s.filesz as usize))
        .collect();
    assert!(!data.is_empty());
    let mut opts = crashprobe::AnalysisOptions::default();
    opts.symbols.sysroot = Some(SYSROOT.into());
    opts.symbols.executable = Some(exe.clone());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..48 {
        let mut bytes = core.clone();
        for _ in 0..64 {
            let (off, len) = data[next() as usize % data.len()];
            let at = (off + (next() as usize % len)) & !7;
            let value = match round % 3 {
                // Pointers at themselves: a list that loops.
                0 => {
                    (at - off) as u64
                        + img
                            .segments
                            .iter()
                            .find(|s| s.offset as usize == off)
                            .unwrap()
                            .vaddr
                }
                1 => next(),
                _ => 0,
            };
            if at + 8 <= off + len {
                bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        let img = crashprobe::CoreImage::from_vec(bytes).unwrap();
        let report = crashprobe::analyze(&img, "levels", Some(11), &opts);
        assert!(report.payload.starts_with("Process: levels\n"));
    }
}

/// A fault in a signal handler: the unwind goes through the signal frame into the
/// interrupted code. (gdb-multiarch 13 does not finish unwinding such a qemu core, so the
/// expected frames are written here.)
#[test]
fn aarch64_signal_handler_frames() {
    let Some(()) = cross_tools() else { return };
    const SIGNAL_C: &str = r#"
#include <signal.h>
__attribute__((noinline)) void fault(void) { *(volatile int *)8 = 1; }
void handler(int sig) { (void)sig; fault(); }
__attribute__((noinline)) void trigger(void) { raise(SIGUSR1); }
int main(void) { signal(SIGUSR1, handler); trigger(); return 0; }
"#;
    let lab = Lab::new();
    let exe = cross_cc(&lab, "handler", SIGNAL_C, &["-g", "-O0", "-no-pie"]);
    let core = qemu_core(&lab, &exe);
    let (_, text) = ours(&exe, Input::File(&core), "11");
    // The trampoline qemu provides lies in no module; the frame record it leaves leads to
    // the interrupted function in libc (pthread_kill's, not exported: no name) and on.
    let f = functions(&text);
    let mut rest = f.iter();
    for want in ["fault", "handler", "raise", "trigger", "main"] {
        assert!(
            rest.any(|f| f == want),
            "{want} missing or out of order\n{text}"
        );
    }
    assert_eq!(f[..2], ["fault", "handler"], "{text}");
}
