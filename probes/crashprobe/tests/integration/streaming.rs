//! The streaming path: the kernel's notes-first layout through a real pipe keeps only a few
//! hundred KiB and gives the same record as the mapped file; gdb's notes-last layout goes
//! through the bounded spill file and gives the same record too.

use crashprobe::{AnalysisOptions, CoreImage, Limits, ReadMode};

use crate::backtraces::THREADS_C;
use crate::support::*;

#[test]
fn notes_first_core_through_a_pipe_matches_the_file() {
    let lab = Lab::new();
    let exe = lab.cc("streamed", THREADS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let gdb_layout = std::fs::read(&core).unwrap();
    let kernel_layout = to_notes_first(&gdb_layout);
    let kernel_file = lab.path("kernel.core");
    std::fs::write(&kernel_file, &kernel_layout).unwrap();

    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let args = ["-p", "streamed", "-s", "11"];
    let mut payloads = Vec::new();
    for input in [
        Input::File(&core),
        Input::File(&kernel_file),
        Input::Pipe(&kernel_layout),
        Input::Pipe(&gdb_layout),
    ] {
        let run = probe(&root, &args, input, Some("/usr/lib/debug"));
        assert_eq!(run.code, 0, "{}", run.stderr);
        let frame = listener.next();
        assert_eq!(class(&frame), "org.clearlinux/crash/clr");
        payloads.push(payload(&frame));
    }
    assert_eq!(payload_backtraces(&payloads[0]).len(), 3, "{}", payloads[0]);
    for p in &payloads[1..] {
        assert_eq!(p, &payloads[0]);
    }
    let reference = gdb_backtraces(&exe, &core, "/usr/lib/debug");
    assert_matches_gdb(&payload_backtraces(&payloads[2]), &reference, &payloads[2]);
}

#[test]
fn stream_modes_and_kept_bytes() {
    let lab = Lab::new();
    let exe = lab.cc("modes", THREADS_C, &["-O0", "-g"]);
    let gdb_layout = std::fs::read(lab.gdb_core(&exe, &[])).unwrap();
    let kernel_layout = to_notes_first(&gdb_layout);
    let limits = Limits::default();

    let (img, total) = CoreImage::from_stream(&kernel_layout[..], None, &limits);
    let img = img.unwrap();
    assert_eq!(total, kernel_layout.len() as u64);
    assert_eq!(img.stats.mode, ReadMode::Streamed);
    assert_eq!(img.stats.spilled, 0);
    // Three stack windows, a few ELF heads and the vDSO, not the whole core.
    assert!(img.stats.kept < 2 << 20, "kept {} bytes", img.stats.kept);
    assert!(img.truncation().is_none());

    let (spilled, _) = CoreImage::from_stream(&gdb_layout[..], None, &limits);
    let spilled = spilled.unwrap();
    assert_eq!(spilled.stats.mode, ReadMode::Spilled);
    assert!(spilled.stats.spilled <= gdb_layout.len() as u64);

    let opts = AnalysisOptions::default();
    let mapped = CoreImage::from_vec(gdb_layout).unwrap();
    let a = crashprobe::analyze(&img, "modes", Some(11), &opts);
    let b = crashprobe::analyze(&spilled, "modes", Some(11), &opts);
    let c = crashprobe::analyze(&mapped, "modes", Some(11), &opts);
    assert_eq!(a, c);
    assert_eq!(b, c);
    assert!(!c.is_error(), "{}", c.payload);
}

#[test]
fn spill_cap_bounds_memory_but_the_notes_are_always_kept() {
    let lab = Lab::new();
    let exe = lab.cc("capped", THREADS_C, &["-O0", "-g"]);
    let gdb_layout = std::fs::read(lab.gdb_core(&exe, &[])).unwrap();
    let limits = Limits {
        spill_cap: 64 << 10,
        ..Limits::default()
    };
    let (r, total) = CoreImage::from_stream(&gdb_layout[..], None, &limits);
    assert_eq!(total, gdb_layout.len() as u64, "stdin drained");
    // gdb writes the notes last, past the cap: they are kept anyway, the memory is not.
    let img = r.expect("notes kept beyond the cap");
    assert_eq!(img.stats.mode, ReadMode::Spilled);
    assert_eq!(img.notes.threads.len(), 3);
    let notes: u64 = img
        .segments
        .iter()
        .filter(|s| s.p_type == crashprobe::elfcore::PT_NOTE)
        .map(|s| s.filesz)
        .sum();
    assert!(img.stats.spilled <= (64 << 10) + notes, "{:?}", img.stats);
    // Every thread is reported, and the stacks that were past the cap say so.
    let report = crashprobe::analyze(&img, "capped", Some(11), &AnalysisOptions::default());
    assert_eq!(
        report.payload.matches("\nBacktrace (TID ").count(),
        3,
        "{}",
        report.payload
    );
    assert!(
        report.payload.contains(crashprobe::payload::STACK_NOT_KEPT),
        "{}",
        report.payload
    );
}

const BIG_FRAMES_C: &str = r#"
#include <string.h>
int *volatile nullp;
__attribute__((noinline)) void small_crash(int *p) { *p = 5; }
__attribute__((noinline)) void big_frame2(int n) { volatile char buf[100000]; memset((char *)buf, n, sizeof buf); small_crash(nullp); __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void big_frame1(int n) { volatile char buf[200000]; memset((char *)buf, n, sizeof buf); big_frame2(buf[5]); __asm__ volatile("" ::: "memory"); }
int main(int argc, char **argv) { big_frame1(argc); return 0; }
"#;

#[test]
fn big_frames_of_the_crashing_thread_are_kept_and_a_cut_is_marked() {
    let lab = Lab::new();
    let exe = lab.cc("bigframes", BIG_FRAMES_C, &["-O2", "-g"]);
    let kernel_layout = to_notes_first(&std::fs::read(lab.gdb_core(&exe, &[])).unwrap());
    let names = |limits: &Limits| {
        let (img, _) = CoreImage::from_stream(&kernel_layout[..], None, limits);
        let report = crashprobe::analyze(
            &img.unwrap(),
            "bigframes",
            Some(11),
            &AnalysisOptions::default(),
        );
        report.payload
    };
    // The defaults: 300 KB of frames above the stack pointer are no obstacle.
    let full = names(&Limits::default());
    for f in ["small_crash", "big_frame2", "big_frame1", "main"] {
        assert!(full.contains(&format!(" {f}() - [")), "{f}\n{full}");
    }
    assert!(
        !full.contains(crashprobe::payload::STACK_NOT_KEPT),
        "{full}"
    );
    // A window smaller than the frames: the unwind stops there, visibly.
    let small = Limits {
        stack_window: 64 << 10,
        crash_stack_window: 64 << 10,
        ..Limits::default()
    };
    let cut = names(&small);
    assert!(cut.contains(" big_frame2() - ["), "{cut}");
    assert!(!cut.contains(" main() - ["), "{cut}");
    assert!(cut.contains(crashprobe::payload::STACK_NOT_KEPT), "{cut}");
}

#[test]
fn kept_bytes_do_not_grow_with_the_core() {
    let lab = Lab::new();
    let src = r#"
#include <stdlib.h>
#include <string.h>
char *volatile keep;
int *volatile nowhere;
__attribute__((noinline)) void crash(void) { *nowhere = 1; }
int main(void) {
    keep = malloc(64 << 20);
    memset(keep, 0x5a, 64 << 20);
    crash();
    return 0;
}
"#;
    let exe = lab.cc("big", src, &["-O0", "-g"]);
    let gdb_layout = std::fs::read(lab.gdb_core(&exe, &[])).unwrap();
    assert!(gdb_layout.len() > 64 << 20);
    let kernel_layout = to_notes_first(&gdb_layout);
    drop(gdb_layout);
    let (img, total) = CoreImage::from_stream(&kernel_layout[..], None, &Limits::default());
    let img = img.unwrap();
    assert_eq!(total, kernel_layout.len() as u64);
    assert!(img.stats.kept < 2 << 20, "kept {} bytes", img.stats.kept);
    let report = crashprobe::analyze(&img, "big", Some(11), &AnalysisOptions::default());
    assert!(
        report.payload.contains("#0 crash() - ["),
        "{}",
        report.payload
    );
}
