//! Frame lines equal to those of the C crashprobe 2.4.3 for the same crashes.
//!
//! `tests/conformance/` holds the C probe's payloads for 33 crashes and the programs that
//! made them. Here the programs are built with the same flags, crashed, and the probe's
//! payload (default configuration) is compared frame line by frame line with the C one,
//! with the binaries' folder substituted. Cores come from the kernel when this host's
//! `kernel.core_pattern` writes plain files (the pattern is only read), else from gdb,
//! rewritten into the kernel's notes-first layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");
const DEFAULT_DEBUG: &str = "/usr/lib/debug";

/// The programs of `cases.txt`, built as the README of the fixtures says.
pub struct Programs {
    pub lab: Lab,
    pub bin: PathBuf,
    pub debug: PathBuf,
}

fn sh(dir: &Path, prog: &str, args: &[&str]) {
    run_ok(Command::new(prog).current_dir(dir).args(args));
}

impl Programs {
    pub fn build(only: &[&str]) -> Programs {
        let lab = Lab::new();
        let work = lab.dir.path().to_path_buf();
        let src = work.join("src");
        let bin = work.join("bin");
        let debug = work.join("debug");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&debug).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        for e in std::fs::read_dir(Path::new(FIXTURES).join("src")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
        }
        let want = |n: &str| only.is_empty() || only.contains(&n);
        let gcc = |name: &str, flags: &[&str], file: &str| {
            let mut args: Vec<&str> = flags.to_vec();
            let input = format!("../src/{file}");
            args.extend(["-o", name, &input]);
            sh(&bin, "gcc", &args);
        };
        for (name, flags) in [
            ("c1_O0", &["-g", "-O0"][..]),
            ("c1_O2", &["-g", "-O2"]),
            ("c1_nopie", &["-g", "-O2", "-no-pie"]),
            ("c1_omitfp", &["-g", "-O0", "-fomit-frame-pointer"]),
            ("c1_symtab", &["-O2"]),
            ("c1_ehonly", &["-O2"]),
            ("c1_sep", &["-g", "-O2"]),
            ("c1_dlink", &["-g", "-O2"]),
        ] {
            if want(name) {
                gcc(name, flags, "c1.c");
            }
        }
        if want("c1_ehonly") {
            sh(&bin, "strip", &["c1_ehonly"]);
        }
        if want("c1_sep") {
            sh(
                &bin,
                "objcopy",
                &["--only-keep-debug", "c1_sep", "c1_sep.debug"],
            );
            sh(&bin, "strip", &["c1_sep"]);
            let id = build_id(&bin.join("c1_sep"));
            let dir = debug.join(".build-id").join(&id[..2]);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::rename(
                bin.join("c1_sep.debug"),
                dir.join(format!("{}.debug", &id[2..])),
            )
            .unwrap();
        }
        if want("c1_dlink") {
            sh(
                &bin,
                "objcopy",
                &["--only-keep-debug", "c1_dlink", "c1_dlink.debug"],
            );
            sh(&bin, "strip", &["c1_dlink"]);
            sh(
                &bin,
                "objcopy",
                &["--add-gnu-debuglink=c1_dlink.debug", "c1_dlink"],
            );
        }
        for (name, flags) in [("cxx_O1", "-O1"), ("cxx_O2", "-O2")] {
            if want(name) {
                let args = ["-g", flags, "-o", name, "../src/cxx.cpp"];
                sh(&bin, "g++", &args);
            }
        }
        for (name, file) in [("mt", "mt.c"), ("extra", "extra.c")] {
            if want(name) {
                gcc(name, &["-g", "-O2", "-pthread"], file);
            }
        }
        for (lib, main, g) in [
            ("libcrashg.so", "libmain_g", true),
            ("libcrashn.so", "libmain_n", false),
        ] {
            if !want(main) {
                continue;
            }
            let mut args = if g { vec!["-g"] } else { vec![] };
            args.extend(["-fPIC", "-shared", "-o", lib, "../src/lib.c"]);
            sh(&bin, "gcc", &args);
            let rpath = format!("-Wl,-rpath,{}", bin.display());
            let link = format!("-l{}", &lib[3..lib.len() - 3]);
            let args = ["-g", "-o", main, "../src/libmain.c", "-L.", &link, &rpath];
            sh(&bin, "gcc", &args);
        }
        if want("many") {
            let abs = src.join("many.c");
            let args = ["-g", "-O1", "-pthread", "-o", "many", abs.to_str().unwrap()];
            sh(&bin, "gcc", &args);
        }
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        for (name, level) in [("rs_O0", "opt-level=0"), ("rs_O2", "opt-level=2")] {
            if want(name) {
                let args = [
                    "-g",
                    "-C",
                    level,
                    "-C",
                    "panic=abort",
                    "-o",
                    name,
                    "../src/rs.rs",
                ];
                sh(&bin, &rustc, &args);
            }
        }
        Programs { lab, bin, debug }
    }

    /// Debug roots for the probe: the test's own tree, then the system's (glibc).
    pub fn debug_roots(&self) -> String {
        format!("{}:{DEFAULT_DEBUG}", self.debug.display())
    }

    /// A core of `binary` run with `args`, in the kernel's layout.
    pub fn core(&self, case: &str, binary: &str, args: &[&str]) -> Vec<u8> {
        let exe = self.bin.join(binary);
        if let Some(core) = kernel_core(&self.lab.path(case), &exe, args) {
            return core;
        }
        // The programs raise SIGUSR1 on purpose; the core is of the crash that follows.
        // Address randomization stays on, as for the kernel's cores (see the retries).
        let pre = [
            "handle SIGUSR1 nostop noprint pass",
            "set disable-randomization off",
        ];
        let core = self.lab.gdb_core_with(&exe, args, &pre);
        let bytes = std::fs::read(&core).unwrap();
        std::fs::remove_file(core).unwrap();
        to_notes_first(&bytes)
    }
}

pub fn build_id(exe: &Path) -> String {
    let out = run_ok(Command::new("readelf").arg("-n").arg(exe));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("build id")
}

/// Does the kernel write cores as plain files in the crashing process's directory?
/// (`CONFORMANCE_GDB_CORES=1` uses gdb's cores anyway, as on hosts that pipe cores.)
pub fn kernel_writes_plain_cores() -> bool {
    if std::env::var_os("CONFORMANCE_GDB_CORES").is_some() {
        return false;
    }
    std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .is_ok_and(|p| !p.starts_with('|') && !p.trim().contains('/'))
}

/// Run `exe` in a fresh directory `dir` with cores enabled and return the core the kernel
/// wrote there, if the host's pattern writes one.
pub fn kernel_core(dir: &Path, exe: &Path, args: &[&str]) -> Option<Vec<u8>> {
    if !kernel_writes_plain_cores() {
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(args).current_dir(dir);
    allow_core_dumps(&mut cmd);
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run crasher");
    assert!(!status.success());
    let core = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("core"))
        })?;
    let bytes = std::fs::read(&core).ok()?;
    std::fs::remove_dir_all(dir).unwrap();
    bytes.starts_with(b"\x7fELF").then_some(bytes)
}

/// The comparable part of a payload: the "too many frames" marker, the crashing thread's
/// frame lines, and the other threads' frame lines (their order and TIDs vary from run to
/// run, so they are compared as a sorted list).
#[derive(Debug, PartialEq, Eq)]
pub struct FrameLines {
    pub too_many: bool,
    pub crashing: Vec<String>,
    pub others: Vec<Vec<String>>,
}

/// The libc6 build the C payloads were made with (see the fixtures' README).
const LIBC_BUILD: &str = "2.36-9+deb12u14";

/// Whether this host's libc has the lines of the fixtures' libc.
fn same_libc_build() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "libc6"])
        .output()
        .is_ok_and(|o| o.stdout == LIBC_BUILD.as_bytes())
}

/// A frame line as compared: with another libc build, libc frames by function only.
fn comparable(line: &str, libc_lines: bool) -> String {
    match line.split_once(" - [libc.so.6] - ") {
        Some((head, _)) if !libc_lines => format!("{head} - [libc.so.6]"),
        _ => line.to_string(),
    }
}

pub fn frame_lines(payload: &str) -> FrameLines {
    frame_lines_with(payload, true)
}

fn frame_lines_with(payload: &str, libc_lines: bool) -> FrameLines {
    let body = payload.split("\nSTDERR:").next().unwrap_or("");
    let mut threads: Vec<Vec<String>> = Vec::new();
    for line in body.lines() {
        if line.starts_with("Backtrace (TID ") {
            threads.push(Vec::new());
        } else if let (true, Some(t)) = (line.starts_with('#'), threads.last_mut()) {
            t.push(comparable(line, libc_lines));
        }
    }
    let mut it = threads.into_iter();
    let crashing = it.next().unwrap_or_default();
    let mut others: Vec<_> = it.collect();
    others.sort();
    FrameLines {
        too_many: body.contains(crashprobe::payload::TOO_MANY_FRAMES),
        crashing,
        others,
    }
}

/// `got` has the frame lines of `want`. The C probe did not bound its payload (a record
/// over 8 KiB is then dropped by the daemon); this probe stops at a frame line before
/// the limit and says so. A cut payload matches when every thread it shows completely is
/// one of the C probe's and the last one shown is the start of one.
fn same_frames(want: &FrameLines, got: &FrameLines, cut: bool) -> bool {
    if !cut {
        return want == got;
    }
    if want.too_many != got.too_many || !want.crashing.starts_with(&got.crashing) {
        return false;
    }
    if got.others.is_empty() {
        return true;
    }
    let mut pool: Vec<&Vec<String>> = want.others.iter().collect();
    let mut partial = 0;
    for t in &got.others {
        if let Some(i) = pool.iter().position(|w| *w == t) {
            pool.remove(i);
        } else if pool.iter().any(|w| w.starts_with(t)) {
            partial += 1;
        } else {
            return false;
        }
    }
    partial <= 1
}

/// Lines of `want` and `got` that differ, for the failure message.
fn diff(want: &FrameLines, got: &FrameLines) -> String {
    let mut out = String::new();
    if want.too_many != got.too_many {
        out.push_str(&format!(
            "  too-many marker: want {} got {}\n",
            want.too_many, got.too_many
        ));
    }
    let w = std::iter::once(&want.crashing).chain(&want.others);
    let g: Vec<&Vec<String>> = std::iter::once(&got.crashing).chain(&got.others).collect();
    for (i, wt) in w.enumerate() {
        let empty = Vec::new();
        let gt = g.get(i).copied().unwrap_or(&empty);
        for j in 0..wt.len().max(gt.len()) {
            let (a, b) = (wt.get(j), gt.get(j));
            if a != b {
                out.push_str(&format!(
                    "  thread {i}:\n    want {}\n    got  {}\n",
                    a.map_or("-", String::as_str),
                    b.map_or("-", String::as_str)
                ));
            }
        }
    }
    out
}

fn expected(case: &str, bin: &str, work: &str) -> String {
    std::fs::read_to_string(
        Path::new(FIXTURES)
            .join("expected-2.4.3")
            .join(format!("{case}.txt")),
    )
    .unwrap()
    .replace("@BIN@", bin)
    .replace("@WORK@", work)
}

fn cases() -> Vec<(String, String, Vec<String>)> {
    std::fs::read_to_string(Path::new(FIXTURES).join("cases.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace().map(str::to_string);
            let case = w.next().unwrap();
            let binary = w.next().unwrap();
            (case, binary, w.collect())
        })
        .collect()
}

/// Run the probe with the default configuration on a piped core and return the payload.
pub fn probe_payload(core: &[u8], name: &str, debug_roots: &str) -> String {
    let root = compatible_root();
    let listener = Listener::start(&root);
    let run = probe(
        &root,
        &["-p", name, "-s", "11"],
        Input::Pipe(core),
        Some(debug_roots),
    );
    assert!(run.code == 0 || run.code == 2, "{}", run.stderr);
    payload(&listener.next())
}

#[test]
fn frame_lines_equal_the_c_probe_for_every_case() {
    let only: Vec<String> = std::env::var("CONFORMANCE_CASES")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let cases: Vec<_> = cases()
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.0))
        .collect();
    let binaries: Vec<&str> = cases.iter().map(|c| c.1.as_str()).collect();
    let programs = Programs::build(if only.is_empty() { &[] } else { &binaries });
    let bin = programs.bin.display().to_string();
    let work = programs.lab.dir.path().display().to_string();
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    let libc_lines = same_libc_build();
    if !libc_lines {
        eprintln!("libc6 is not {LIBC_BUILD}: libc frames compared by function only");
    }
    for (case, binary, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Where a stack overflow faults (which instruction first touches the guard page)
        // depends on the randomized stack placement: such a crash is made again until it
        // is the one the C probe saw.
        let expected = expected(case, &bin, &work);
        let first_expected = frame_lines(&expected).crashing.first().cloned();
        let attempts = if case.ends_with("_overflow") { 16 } else { 1 };
        let mut got = String::new();
        for _ in 0..attempts {
            let core = programs.core(case, binary, &args);
            got = probe_payload(&core, binary, &programs.debug_roots());
            if frame_lines(&got).crashing.first() == first_expected.as_ref() {
                break;
            }
        }
        let (want, have) = (
            frame_lines_with(&expected, libc_lines),
            frame_lines_with(&got, libc_lines),
        );
        if !same_frames(
            &want,
            &have,
            got.ends_with(crashprobe::payload::SIZE_MARKER),
        ) {
            results.insert(
                case.clone(),
                format!("{}payload:\n{got}", diff(&want, &have)),
            );
        } else {
            results.insert(case.clone(), String::new());
        }
    }
    let equal = results.values().filter(|d| d.is_empty()).count();
    let mut report = format!("frame lines equal in {equal} of {} cases\n", results.len());
    for (case, d) in &results {
        if !d.is_empty() {
            report.push_str(&format!("{case}:\n{d}\n"));
        }
    }
    eprintln!("{report}");
    assert_eq!(equal, results.len(), "{report}");
}
