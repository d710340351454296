//! The seed corpus: `cargo test --manifest-path fuzz/Cargo.toml` rewrites `seeds/<target>/`
//! from the inputs the crates' own tests use (golden records, the distribution config, the
//! oops/kmsg/pstore fixtures, synthetic cores in the layout of crashprobe's test cores, swupd's files of every class),
//! then runs every target's property function on every seed and on every input saved under
//! `regressions/<target>/` (inputs that once failed). The seeds are deterministic: a diff in
//! `seeds/` after this test means the fixtures changed.

use std::path::{Path, PathBuf};

use libtelemetry::frame::encode_frame;
use libtelemetry::record::{Headers, Record};
use libtelemetry::staged::encode_staged;

#[allow(dead_code)]
#[path = "../../probes/swupdprobe/tests/integration/fixtures.rs"]
mod swupd_fixtures;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_file(rel: &str) -> Vec<u8> {
    let p = fuzz_dir().join("..").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A record the collector accepts, distinguishable by `i`.
fn record(i: usize, payload: &[u8]) -> Record {
    let values = [
        "4".to_string(),
        format!("org.clearlinux/fuzz/seed{i}"),
        "2".into(),
        "5768134ac73df19cbf582da092628002".into(),
        "1795614028".into(),
        "x86_64".into(),
        "LENOVO|20KH|ThinkPad X1 Carbon".into(),
        "42".into(),
        "6.1.0-18-amd64".into(),
        "1".into(),
        "clear-linux-os".into(),
        "no_bn_file|no_bv_file".into(),
        "Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz".into(),
        "".into(),
        format!("{:032x}", 0xf0220000u64 + i as u64),
    ];
    Record {
        headers: Headers(values),
        payload: payload.to_vec(),
    }
}

fn records() -> Vec<(Record, Option<&'static str>)> {
    vec![
        (record(0, b"hello\nworld"), None),
        (record(1, b""), None),
        (
            record(2, b"key=value\nutf-8: \xc3\xa9\ttab\n"),
            Some("/etc/telemetrics/telemetrics.conf"),
        ),
        (record(3, &[b'x'; 8192]), None),
    ]
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    records()
        .iter()
        .enumerate()
        .map(|(i, (r, cfg))| (format!("frame{i}"), encode_frame(r, *cfg)))
        .collect()
}

fn staged_seeds() -> Vec<(String, Vec<u8>)> {
    records()
        .iter()
        .enumerate()
        .map(|(i, (r, cfg))| (format!("staged{i}"), encode_staged(r, *cfg)))
        .collect()
}

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        ("default.conf".into(), repo_file("etc/telemetrics.conf")),
        (
            "small.conf".into(),
            b"[settings]\nserver=https://example.com/v2/collector\nspool_dir=/var/spool/telemetry\n\
record_expiry=1200\nspool_max_size=-1\nrate_limit_strategy=drop\ndelivery_mode=v3\n"
                .to_vec(),
        ),
        (
            "errors.conf".into(),
            b"# comment\n[settings]\nrecord_window_length=99\nnot a line\nrate_limit_enabled=maybe\n"
                .to_vec(),
        ),
    ]
}

const STACK: u64 = 0x7ff0_0000;
const TEXT: u64 = 0x40_0000;

/// A stack holding a frame-pointer chain `rbp → … → 0` with return addresses in `TEXT`.
fn chained_stack(frames: u64) -> Vec<u8> {
    let mut stack = vec![0u8; 4096];
    for i in 0..frames {
        let at = (0x100 * (i + 1)) as usize;
        let next = if i + 1 == frames {
            0
        } else {
            STACK + 0x100 * (i + 2)
        };
        stack[at..at + 8].copy_from_slice(&next.to_le_bytes());
        stack[at + 8..at + 16].copy_from_slice(&(TEXT + 0x30 + 0x10 * i).to_le_bytes());
    }
    stack
}

/// One memory segment of a synthetic core.
struct Seg {
    vaddr: u64,
    flags: u32,
    bytes: Vec<u8>,
    memsz: u64,
}

/// A minimal x86_64 core in the kernel's layout (the layout of crashprobe's test cores):
/// ELF header, program headers, one `NT_PRSTATUS` per `(tid, rip, rsp, rbp)`, an optional
/// `NT_FILE`, then `segs` at page-aligned offsets.
fn synthetic_core(
    threads: &[(u32, u64, u64, u64)],
    files: &[(u64, u64, u64, &str)],
    segs: &[Seg],
) -> Vec<u8> {
    synthetic_core_of(X86_64, threads, files, segs)
}

/// `e_machine`, `NT_PRSTATUS` size and the `pr_reg` indices of pc, sp and frame pointer.
struct Machine {
    e_machine: u16,
    prstatus_size: usize,
    pc_sp_fp: [usize; 3],
}

const X86_64: Machine = Machine {
    e_machine: 62,
    prstatus_size: 336,
    pc_sp_fp: [16, 19, 4],
};

/// aarch64: `pr_reg` is x0..x30, sp, pc, pstate.
const AARCH64: Machine = Machine {
    e_machine: 183,
    prstatus_size: 392,
    pc_sp_fp: [32, 31, 29],
};

fn synthetic_core_of(
    machine: Machine,
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
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut notes = Vec::new();
    for &(tid, rip, rsp, rbp) in threads {
        // struct elf_prstatus (64-bit): pr_cursig at 12, pr_pid at 32, pr_reg at 112.
        let mut d = vec![0u8; machine.prstatus_size];
        d[12..14].copy_from_slice(&11u16.to_le_bytes());
        d[32..36].copy_from_slice(&tid.to_le_bytes());
        let [pc, sp, fp] = machine.pc_sp_fp;
        for (i, v) in [(pc, rip), (sp, rsp), (fp, rbp)] {
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
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little endian
    out[6] = 1; // EV_CURRENT
    out[16] = 4; // ET_CORE
    out[18..20].copy_from_slice(&machine.e_machine.to_le_bytes());
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

fn text_segment() -> Seg {
    Seg {
        vaddr: TEXT,
        flags: 5,
        bytes: Vec::new(),
        memsz: 4096,
    }
}

fn stack_segment(bytes: Vec<u8>) -> Seg {
    Seg {
        vaddr: STACK,
        flags: 6,
        bytes,
        memsz: 4096,
    }
}

/// The same core with its notes moved after the memory (as gdb writes cores).
fn notes_last(core: &[u8]) -> Vec<u8> {
    let u64_at = |o: usize| u64::from_le_bytes(core[o..o + 8].try_into().unwrap());
    let mut out = core.to_vec();
    let phoff = u64_at(32) as usize;
    let phnum = u16::from_le_bytes([core[56], core[57]]) as usize;
    for i in 0..phnum {
        let ph = phoff + i * 56;
        if u32::from_le_bytes(core[ph..ph + 4].try_into().unwrap()) != 4 {
            continue;
        }
        let (off, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
        let notes = core[off..off + size].to_vec();
        out[off..off + size].fill(0);
        let new_off = out.len().next_multiple_of(8);
        out.resize(new_off, 0);
        out.extend_from_slice(&notes);
        out[ph + 8..ph + 16].copy_from_slice(&(new_off as u64).to_le_bytes());
    }
    out
}

fn core_seeds() -> Vec<(String, Vec<u8>)> {
    let chained = synthetic_core(
        &[(7, TEXT + 0x10, STACK + 0xf8, STACK + 0x100)],
        &[(TEXT, TEXT + 0x1000, 0, "/usr/bin/fuzz-victim")],
        &[stack_segment(chained_stack(3)), text_segment()],
    );
    let mut looping = vec![0u8; 4096];
    looping[..8].copy_from_slice(&STACK.to_le_bytes());
    looping[8..16].copy_from_slice(&(TEXT + 0x20).to_le_bytes());
    let threads = synthetic_core(
        &[
            (7, TEXT + 0x10, STACK + 0xf8, STACK + 0x100),
            (8, TEXT + 0x18, STACK + 0x200, STACK + 0x300),
            (9, 0, 0, 0),
        ],
        &[
            (TEXT, TEXT + 0x1000, 0, "/usr/bin/fuzz-victim"),
            (
                0x7f00_0000_0000,
                0x7f00_0000_2000,
                0,
                "/usr/lib64/libfuzz.so.1 (deleted)",
            ),
        ],
        &[stack_segment(chained_stack(5)), text_segment()],
    );
    vec![
        ("chained.core".into(), chained.clone()),
        (
            "looping.core".into(),
            synthetic_core(
                &[(7, TEXT + 0x10, STACK, STACK)],
                &[],
                &[stack_segment(looping), text_segment()],
            ),
        ),
        ("threads.core".into(), threads),
        ("notes-last.core".into(), notes_last(&chained)),
        ("header-only.core".into(), chained[..64].to_vec()),
        (
            // No NT_FILE (as qemu-user writes): modules come from the dynamic linker's list.
            "aarch64-no-nt-file.core".into(),
            synthetic_core_of(
                AARCH64,
                &[(7, TEXT + 0x10, STACK + 0xf8, STACK + 0x100)],
                &[],
                &[stack_segment(chained_stack(3)), text_segment()],
            ),
        ),
    ]
}

fn oops_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for dir in [
        "oops",
        "kmsg",
        "pstore/efi",
        "pstore/ramoops",
        "pstore/no_final_newline",
    ] {
        let rel = format!("probes/kernelprobes/tests/fixtures/{dir}");
        let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join("..").join(&rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".expected"))
            .collect();
        names.sort();
        for n in names {
            let seed = format!("{}-{n}", dir.replace('/', "-"));
            v.push((seed, repo_file(&format!("{rel}/{n}"))));
        }
    }
    v
}

fn swupd_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = swupd_fixtures::every_class()
        .into_iter()
        .map(|f| {
            (
                f.name.to_string(),
                format!("{}\n{}", f.name, f.content).into(),
            )
        })
        .collect();
    for (seed, bytes) in [
        ("ignored", &b".2.update.1.tmp~\nx"[..]),
        ("bad-severity", b"2.update.9.abc\nx"),
        ("binary-content", b"2.update.1.abc\n\x00\x01\xff"),
    ] {
        v.push((seed.to_string(), bytes.to_vec()));
    }
    v
}

fn seeds_for(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "frame_decode" => frame_seeds(),
        "staged_parse" => staged_seeds(),
        "config_parse" => config_seeds(),
        "core_unwind" => core_seeds(),
        "oops_parse" => oops_seeds(),
        "swupd_file" => swupd_seeds(),
        other => panic!("no seeds for {other}"),
    }
}

/// Replace the contents of `dir` with `files`.
fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn seeds_are_written_and_every_target_holds_on_them() {
    for (target, check) in telemetrics_fuzz::TARGETS {
        let seeds = seeds_for(target);
        assert!(!seeds.is_empty(), "{target}");
        let dir = fuzz_dir().join("seeds").join(target);
        write_dir(&dir, &seeds);
        for path in files_in(&dir) {
            let bytes = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            check(&bytes);
        }
    }
}

#[test]
fn saved_regressions_still_pass() {
    for (target, check) in telemetrics_fuzz::TARGETS {
        for path in files_in(&fuzz_dir().join("regressions").join(target)) {
            eprintln!("{target}: {}", path.display());
            check(&std::fs::read(&path).unwrap());
        }
    }
}
