//! Backtraces of real crashes match gdb's on the same core, thread by thread.

use std::path::Path;

use crate::support::*;

pub const LEVELS_C: &str = r#"
int level3(int *p) { return *p; }
int level2(int *p) { return level3(p) + 1; }
int level1(int *p) { return level2(p) + 1; }
int main(int argc, char **argv) { return level1(argc > 5 ? &argc : 0); }
"#;

pub const OPTIMIZED_C: &str = r#"
#include <stddef.h>
volatile int sink;
static inline __attribute__((always_inline)) void poke(int *p) { *p = 42; }
__attribute__((noinline)) void deep(int *p, int n) {
    if (n > 0) { deep(p, n - 1); sink++; } else { poke(p); }
}
__attribute__((noinline)) void middle(int *p) { deep(p, 3); sink++; }
int main(int argc, char **argv) { middle(argc > 5 ? &argc : NULL); return sink; }
"#;

const LIBC_C: &str = r#"
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) size_t measure(const char *s) { return strlen(s) + 1; }
__attribute__((noinline)) void give_up(void) { abort(); }
int main(int argc, char **argv) {
    if (argc > 1) give_up();
    return (int)measure(argc > 5 ? argv[0] : NULL);
}
"#;

pub const THREADS_C: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static pthread_barrier_t ready;
__attribute__((noinline)) void *sleeper(void *a) {
    pthread_barrier_wait(&ready);
    for (;;) pause();
    return a;
}
__attribute__((noinline)) void waiter_inner(void) {
    pthread_barrier_wait(&ready);
    for (;;) sleep(100);
}
__attribute__((noinline)) void *waiter(void *a) { waiter_inner(); return a; }
__attribute__((noinline)) void crash_now(void) { *(volatile int *)0 = 1; }
int main(void) {
    pthread_t t1, t2;
    pthread_barrier_init(&ready, NULL, 3);
    pthread_create(&t1, NULL, sleeper, NULL);
    pthread_create(&t2, NULL, waiter, NULL);
    pthread_barrier_wait(&ready);
    usleep(200000);
    crash_now();
    return 0;
}
"#;

const SIGNAL_C: &str = r#"
#include <signal.h>
__attribute__((noinline)) void fault(void) { *(volatile int *)0 = 1; }
void handler(int sig) { (void)sig; fault(); }
__attribute__((noinline)) void trigger(void) { raise(SIGUSR1); }
int main(void) { signal(SIGUSR1, handler); trigger(); return 0; }
"#;

const THREADS_RS: &str = r#"
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

#[inline(never)]
fn park_forever(b: Arc<Barrier>) {
    b.wait();
    loop {
        thread::sleep(Duration::from_secs(100));
    }
}

#[inline(never)]
fn boom() {
    std::process::abort();
}

fn main() {
    let b = Arc::new(Barrier::new(3));
    for _ in 0..2 {
        let b = b.clone();
        thread::spawn(move || park_forever(b));
    }
    b.wait();
    thread::sleep(Duration::from_millis(200));
    boom();
}
"#;

const DEFAULT_DEBUG: &str = "/usr/lib/debug";

/// Run the probe on `core` and compare with gdb; returns the payload.
fn check_against_gdb(exe: &Path, core: &Path, debug_dirs: &str, signal: &str) -> String {
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let exe_s = exe.to_str().unwrap();
    let name = exe.file_name().unwrap().to_str().unwrap();
    let run = probe(
        &root,
        &["-p", name, "-E", &exe_s.replace('/', "!"), "-s", signal],
        Input::File(core),
        Some(debug_dirs),
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let frame = listener.next();
    let text = payload(&frame);
    assert_eq!(class(&frame), "org.clearlinux/crash/clr", "{text}");
    assert_eq!(severity(&frame), "3");
    assert!(
        text.starts_with(&format!("Process: {exe_s}\nPID: ")),
        "{text}"
    );
    assert!(text.contains(&format!("\nSignal: {signal}\n")), "{text}");
    let ours = payload_backtraces(&text);
    let reference = gdb_backtraces(exe, core, debug_dirs);
    assert_matches_gdb(&ours, &reference, &text);
    text
}

fn first_thread(payload: &str) -> Vec<String> {
    payload_backtraces(payload)[0]
        .functions
        .iter()
        .map(|f| normalize(f))
        .collect()
}

fn assert_sequence(functions: &[String], expected: &[&str], payload: &str) {
    let mut it = functions.iter();
    for e in expected {
        assert!(
            it.any(|f| f == e),
            "{e} missing or out of order in {functions:?}\n{payload}"
        );
    }
}

#[test]
fn o0_program_matches_gdb_with_file_and_line() {
    let lab = Lab::new();
    let exe = lab.cc("levels", LEVELS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    assert_sequence(
        &first_thread(&text),
        &["level3", "level2", "level1", "main"],
        &text,
    );
    let src = lab.path("levels.c");
    assert!(
        text.contains(&format!(
            "#0 level3() - [{}] - {}:2\n",
            exe.display(),
            src.display()
        )),
        "{text}"
    );
}

#[test]
fn optimized_program_without_frame_pointers_matches_gdb() {
    let lab = Lab::new();
    let exe = lab.cc(
        "optimized",
        OPTIMIZED_C,
        &["-O2", "-g", "-fomit-frame-pointer"],
    );
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    // `poke` is inlined into `deep`: it must show as its own frame, as in gdb.
    assert_sequence(
        &first_thread(&text),
        &["poke", "deep", "deep", "middle", "main"],
        &text,
    );
}

#[test]
fn stripped_program_uses_build_id_debug_file() {
    let lab = Lab::new();
    let exe = lab.cc("stripped", LEVELS_C, &["-O0", "-g", "-Wl,--build-id"]);
    let debug = lab.path("stripped.debug");
    run_ok(
        std::process::Command::new("objcopy")
            .args(["--only-keep-debug"])
            .arg(&exe)
            .arg(&debug),
    );
    run_ok(
        std::process::Command::new("strip")
            .arg("--strip-all")
            .arg(&exe),
    );
    let out = run_ok(std::process::Command::new("readelf").arg("-n").arg(&exe));
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("build id");
    let tree = lab.path("debug");
    let dir = tree.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(&debug, dir.join(format!("{}.debug", &id[2..]))).unwrap();
    let core = lab.gdb_core(&exe, &[]);
    let dirs = format!("{}:{DEFAULT_DEBUG}", tree.display());
    let text = check_against_gdb(&exe, &core, &dirs, "11");
    assert_sequence(
        &first_thread(&text),
        &["level3", "level2", "level1", "main"],
        &text,
    );
    assert!(
        text.contains("levels") || text.contains("stripped.c:2"),
        "{text}"
    );

    // Without the debug tree the stripped program has no names left.
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let run = probe(
        &root,
        &["-p", "stripped"],
        Input::File(&core),
        Some("/nonexistent"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bare = payload(&listener.next());
    assert!(bare.contains("#0 ??? - ["), "{bare}");
}

#[test]
fn stripped_program_uses_gnu_debuglink() {
    let lab = Lab::new();
    // With a build-id (it proves the file is the mapped one), found by debuglink only: no
    // debug root has it.
    let exe = lab.cc("linked", LEVELS_C, &["-O0", "-g"]);
    let debug_dir = lab.path(".debug");
    std::fs::create_dir_all(&debug_dir).unwrap();
    let debug = debug_dir.join("linked.debug");
    run_ok(
        std::process::Command::new("objcopy")
            .args(["--only-keep-debug"])
            .arg(&exe)
            .arg(&debug),
    );
    run_ok(
        std::process::Command::new("strip")
            .arg("--strip-all")
            .arg(&exe),
    );
    run_ok(
        std::process::Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&exe),
    );
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    assert_sequence(
        &first_thread(&text),
        &["level3", "level2", "level1", "main"],
        &text,
    );
}

#[test]
fn crash_inside_libc_strlen_matches_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("libcsegv", LIBC_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    assert!(text.contains("- [libc.so.6]"), "{text}");
    assert_sequence(&first_thread(&text), &["measure", "main"], &text);
}

#[test]
fn abort_matches_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("aborts", LIBC_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &["abort"]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "6");
    assert_sequence(&first_thread(&text), &["give_up", "main"], &text);
}

#[test]
fn threads_match_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("threads", THREADS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    let threads = payload_backtraces(&text);
    assert_eq!(threads.len(), 3, "{text}");
    assert_sequence(&first_thread(&text), &["crash_now", "main"], &text);
    let all: Vec<Vec<String>> = threads
        .iter()
        .map(|t| t.functions.iter().map(|f| normalize(f)).collect())
        .collect();
    assert!(
        all.iter().any(|f| f.contains(&"sleeper".to_string())),
        "{text}"
    );
    assert!(
        all.iter()
            .any(|f| f.contains(&"waiter_inner".to_string()) && f.contains(&"waiter".to_string())),
        "{text}"
    );
}

#[test]
fn signal_handler_frames_match_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("sighandler", SIGNAL_C, &["-O0", "-g"]);
    let core = lab.gdb_core_with(&exe, &[], &["handle SIGUSR1 nostop noprint pass"]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "11");
    assert_sequence(
        &first_thread(&text),
        &["fault", "handler", "__restore_rt", "trigger", "main"],
        &text,
    );
}

#[test]
fn rust_threads_match_gdb() {
    let lab = Lab::new();
    let exe = lab.rustc("rthreads", THREADS_RS);
    let core = lab.gdb_core(&exe, &[]);
    let text = check_against_gdb(&exe, &core, DEFAULT_DEBUG, "6");
    assert_sequence(&first_thread(&text), &["abort", "boom", "main"], &text);
    let threads = payload_backtraces(&text);
    assert_eq!(threads.len(), 3, "{text}");
    let parked = threads
        .iter()
        .filter(|t| t.functions.iter().any(|f| normalize(f) == "park_forever"))
        .count();
    assert_eq!(parked, 2, "{text}");
}

#[test]
fn rebuilt_program_is_reported_by_module_offset_and_build_id() {
    let lab = Lab::new();
    let exe = lab.cc("rebuilt", LEVELS_C, &["-O0", "-g", "-Wl,--build-id"]);
    let core = lab.gdb_core(&exe, &[]);
    let build_id = |exe: &Path| {
        let out = run_ok(std::process::Command::new("readelf").arg("-n").arg(exe));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
            .expect("build id")
    };
    let crashed = build_id(&exe);
    // The "package" is updated after the crash: same path, other contents.
    lab.cc(
        "rebuilt",
        &LEVELS_C.replace("+ 1", "+ 2"),
        &["-O0", "-g", "-Wl,--build-id"],
    );
    assert_ne!(build_id(&exe), crashed);

    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let run = probe(&root, &["-p", "rebuilt"], Input::File(&core), None);
    let text = payload(&listener.next());
    assert_eq!(run.code, 0, "{}\n{text}", run.stderr);
    let module = exe.display().to_string();
    let line0 = text
        .lines()
        .find(|l| l.starts_with("#0 "))
        .expect("frame 0");
    assert!(
        line0.starts_with(&format!("#0 {module}+0x"))
            && line0.ends_with(&format!("() - [{module}] - build-id {crashed}")),
        "{text}"
    );
    assert!(
        !text.contains("level3"),
        "the new file's symbols must not be used\n{text}"
    );
}

/// A core written by the kernel itself (ASLR on, notes first), when this host's
/// `kernel.core_pattern` writes plain files; skipped otherwise. The pattern is only read.
#[test]
fn kernel_written_core_through_a_pipe_matches_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("kcore", THREADS_C, &["-O0", "-g"]);
    let mut cmd = std::process::Command::new(&exe);
    cmd.current_dir(lab.dir.path());
    allow_core_dumps(&mut cmd);
    let status = cmd.status().expect("run crasher");
    assert!(!status.success());
    let core = std::fs::read_dir(lab.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("core"))
                && std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF"))
        });
    let Some(core) = core else {
        eprintln!("kernel.core_pattern does not write core files here; skipped");
        return;
    };
    let bytes = std::fs::read(&core).unwrap();
    let (img, _) =
        crashprobe::CoreImage::from_stream(&bytes[..], None, &crashprobe::Limits::default());
    assert_eq!(img.unwrap().stats.mode, crashprobe::ReadMode::Streamed);

    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let run = probe(
        &root,
        &["-p", "kcore", "-s", "11"],
        Input::Pipe(&bytes),
        Some(DEFAULT_DEBUG),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = payload(&listener.next());
    let reference = gdb_backtraces(&exe, &core, DEFAULT_DEBUG);
    assert_matches_gdb(&payload_backtraces(&text), &reference, &text);
    assert_sequence(&first_thread(&text), &["crash_now", "main"], &text);
}

/// Offline analysis of an x86-64 core against a copy of the crashed machine's files: the
/// executable on this machine was rebuilt since, the copy under `--sysroot` is the crashed
/// one, and the frames come from the copy (its build-id is the core's).
#[test]
fn sysroot_copy_is_used_for_an_offline_core() {
    let lab = Lab::new();
    let exe = lab.cc("offline", LEVELS_C, &["-O0", "-g", "-Wl,--build-id"]);
    let core = lab.gdb_core(&exe, &[]);
    let sysroot = lab.path("sysroot");
    let copy = sysroot.join(exe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&exe, &copy).unwrap();
    lab.cc(
        "offline",
        &LEVELS_C.replace("+ 1", "+ 2"),
        &["-O0", "-g", "-Wl,--build-id"],
    );
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let sysroot_s = sysroot.to_str().unwrap();
    let run = probe(
        &root,
        &["-p", "offline", "--sysroot", sysroot_s],
        Input::File(&core),
        Some(DEFAULT_DEBUG),
    );
    let text = payload(&listener.next());
    assert_eq!(run.code, 0, "{}\n{text}", run.stderr);
    assert_sequence(
        &first_thread(&text),
        &["level3", "level2", "level1", "main"],
        &text,
    );
}

/// A core without `NT_FILE` (as qemu-user and old kernels write them): the modules are
/// found through the dynamic linker's `link_map` list, and the frames are gdb's.
#[test]
fn core_without_nt_file_matches_gdb() {
    let lab = Lab::new();
    let exe = lab.cc("nofile", THREADS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let mut bytes = std::fs::read(&core).unwrap();
    // The note's type followed by its name: NT_FILE becomes a type nobody reads.
    let nt_file = b"ELIFCORE\0";
    let at = bytes
        .windows(nt_file.len())
        .position(|w| w == nt_file)
        .expect("NT_FILE note");
    bytes[at..at + 4].copy_from_slice(&0x7fff_0001u32.to_le_bytes());
    assert!(!bytes.windows(nt_file.len()).any(|w| w == nt_file));
    let stripped = lab.path("nofile-stripped.core");
    std::fs::write(&stripped, &bytes).unwrap();
    let text = check_against_gdb(&exe, &stripped, DEFAULT_DEBUG, "11");
    assert!(
        text.contains("crash_now()") && text.contains("sleeper()"),
        "{text}"
    );
    // Piped in the kernel's layout: the reader keeps what the walk and the build-ids need.
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let exe_s = exe.to_str().unwrap().replace('/', "!");
    let kernel_layout = to_notes_first(&bytes);
    let run = probe(
        &root,
        &["-p", "nofile", "-E", &exe_s, "-s", "11"],
        Input::Pipe(&kernel_layout),
        Some(DEFAULT_DEBUG),
    );
    let piped = payload(&listener.next());
    assert_eq!(run.code, 0, "{}\n{piped}", run.stderr);
    assert_eq!(
        payload_backtraces(&piped),
        payload_backtraces(&text),
        "piped:\n{piped}\nfile:\n{text}"
    );
}
