//! Hostile and damaged cores end with a `crash/error` record (or a partial `crash/clr` one),
//! never a panic or a hang, and the pipe is always drained.

use std::sync::OnceLock;

use crashprobe::{AnalysisOptions, CoreImage, Limits};
use libtelemetry::record::{validate_payload, MAX_PAYLOAD};
use proptest::prelude::*;

use crate::backtraces::LEVELS_C;
use crate::support::*;

/// A small real core in the kernel's layout, made once.
fn real_core() -> &'static [u8] {
    static CORE: OnceLock<Vec<u8>> = OnceLock::new();
    CORE.get_or_init(|| {
        let lab = Lab::new();
        let exe = lab.cc("victim", LEVELS_C, &["-O0", "-g"]);
        to_notes_first(&std::fs::read(lab.gdb_core(&exe, &[])).unwrap())
    })
}

const STACK: u64 = 0x7ff0_0000;
const TEXT: u64 = 0x40_0000;

/// A stack whose frame-pointer chain points at itself.
fn looping_core() -> Vec<u8> {
    let mut stack = vec![0u8; 4096];
    stack[..8].copy_from_slice(&STACK.to_le_bytes()); // [rbp] = rbp
    stack[8..16].copy_from_slice(&(TEXT + 0x20).to_le_bytes()); // [rbp+8] = text
    synthetic_core(
        &[(7, TEXT + 0x10, STACK, STACK)],
        &[],
        &[
            Seg {
                vaddr: STACK,
                flags: 6,
                bytes: stack,
                memsz: 4096,
            },
            Seg {
                vaddr: TEXT,
                flags: 5,
                bytes: Vec::new(),
                memsz: 4096,
            },
        ],
    )
}

/// Analyse in-process through both readers; checks the invariants of any outcome.
fn analyse_all_ways(bytes: &[u8]) {
    let opts = AnalysisOptions::default();
    let check = |report: crashprobe::Report| {
        assert!(report.payload.len() <= MAX_PAYLOAD);
        validate_payload(report.payload.as_bytes()).expect("payload is valid text");
        assert!(report.payload.starts_with("Process: p\n"));
    };
    check(crashprobe::report_for(
        CoreImage::from_vec(bytes.to_vec()),
        "p",
        Some(11),
        &opts,
    ));
    let (img, total) = CoreImage::from_stream(bytes, None, &Limits::default());
    assert_eq!(total, bytes.len() as u64, "stream drained");
    check(crashprobe::report_for(img, "p", Some(11), &opts));
}

fn expect_error_record(bytes: &[u8], pipe: bool) -> String {
    let lab = Lab::new();
    let file = lab.path("hostile.core");
    std::fs::write(&file, bytes).unwrap();
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let input = if pipe {
        Input::Pipe(bytes)
    } else {
        Input::File(&file)
    };
    let run = probe(&root, &["-p", "victim", "-s", "11"], input, None);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    let f = listener.next();
    let text = payload(&f);
    assert_eq!(class(&f), "org.clearlinux/crash/error", "{text}");
    assert_eq!(severity(&f), "4");
    assert!(text.contains("\nError: "), "{text}");
    text
}

#[test]
fn truncated_cores_give_error_records() {
    let core = real_core();
    for (i, cut) in [0, 10, 64, 100, 2000, core.len() / 2, core.len() - 1]
        .into_iter()
        .enumerate()
    {
        let text = expect_error_record(&core[..cut], i % 2 == 0);
        assert!(text.starts_with("Process: victim\n"), "{text}");
    }
}

#[test]
fn garbage_notes_give_an_error_record() {
    let mut core = real_core().to_vec();
    // The first note's descriptor size now runs past the segment.
    let notes_off = u64::from_le_bytes(core[64 + 8..64 + 16].try_into().unwrap()) as usize;
    core[notes_off + 4..notes_off + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let text = expect_error_record(&core, true);
    assert!(text.contains("malformed core"), "{text}");
}

#[test]
fn huge_counts_give_error_records() {
    // NT_FILE claiming 2^40 mappings.
    let mut core = synthetic_core(&[(1, 0, 0, 0)], &[(0x1000, 0x2000, 0, "/x")], &[]);
    let pos = core
        .windows(4)
        .position(|w| w == 0x4649_4c45u32.to_le_bytes())
        .unwrap()
        + 4
        + 8;
    core[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let text = expect_error_record(&core, true);
    assert!(
        text.contains("limit") || text.contains("malformed"),
        "{text}"
    );
    // Extended program header numbering without leading notes, and a table too large.
    let mut core = real_core().to_vec();
    core[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
    core[64..68].copy_from_slice(&1u32.to_le_bytes()); // first header is not a note
    expect_error_record(&core, true);
    expect_error_record(&core, false);
}

#[test]
fn stack_loop_gives_an_error_record_with_the_partial_trace() {
    let text = expect_error_record(&looping_core(), true);
    assert!(text.contains("stack loop"), "{text}");
    assert!(
        text.contains("\nBacktrace (TID 7):\n#0 (no symbols)\n"),
        "{text}"
    );
}

#[test]
fn many_threads_are_cut_at_a_frame_boundary() {
    let threads: Vec<(u32, u64, u64, u64)> = (0..2000).map(|i| (i, 0x1000, 0, 0)).collect();
    let core = synthetic_core(&threads, &[], &[]);
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let run = probe(&root, &["-p", "many"], Input::Pipe(&core), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = payload(&listener.next());
    assert!(text.len() <= MAX_PAYLOAD);
    assert!(
        text.ends_with("#0 (no symbols)\nPayload size limit reached. Backtrace truncated.\n"),
        "{text}"
    );
}

/// A core whose `NT_FILE` names a FIFO (as a process can arrange by mapping a file, deleting
/// it and creating a FIFO at its path) is analysed without waiting for a writer.
#[test]
fn a_fifo_named_by_the_core_does_not_block() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("lib.so");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let path = fifo.to_str().unwrap().to_string();
    let deleted = format!("{path} (deleted)");
    let core = synthetic_core(
        &[(7, 0x7f00_0000_0010, 0, 0)],
        &[
            (0x7f00_0000_0000, 0x7f00_0000_1000, 0, path.as_str()),
            (0x7f00_0001_0000, 0x7f00_0001_1000, 0, deleted.as_str()),
        ],
        &[],
    );
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        analyse_all_ways(&core);
        let _ = done.send(());
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(20));
    if result.is_err() {
        // Release the blocked reader so the test process can end.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo);
    }
    assert!(result.is_ok(), "analysis blocked opening the FIFO");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        analyse_all_ways(&bytes);
    }

    #[test]
    fn mutated_real_cores_never_panic(
        cut in 0usize..1_000_000,
        flips in proptest::collection::vec((0usize..1_000_000, any::<u8>()), 0..16),
    ) {
        let real = real_core();
        let mut bytes = real[..cut.min(real.len())].to_vec();
        // Mutations concentrate on the headers and notes, where parsing happens.
        let hot = 16384.min(bytes.len().max(1));
        for (at, b) in flips {
            if !bytes.is_empty() {
                let i = at % hot.min(bytes.len());
                bytes[i] = b;
            }
        }
        analyse_all_ways(&bytes);
    }

    #[test]
    fn mutated_synthetic_cores_never_panic(
        flips in proptest::collection::vec((0usize..8192, any::<u8>()), 1..32),
    ) {
        let mut bytes = looping_core();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        analyse_all_ways(&bytes);
    }
}
