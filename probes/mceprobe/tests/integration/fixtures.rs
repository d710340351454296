//! Fixtures: `struct mce` records for every class with their golden payloads, and a tracefs
//! tree (instance, format file, header_page, per-CPU captured pages).

use std::path::{Path, PathBuf};

use mceprobe::mce::{
    Mce, MCE_STRUCT_SIZE, MCG_STATUS_EIPV, MCG_STATUS_MCIP, MCG_STATUS_RIPV, MCI_STATUS_ADDRV,
    MCI_STATUS_AR, MCI_STATUS_EN, MCI_STATUS_MISCV, MCI_STATUS_PCC, MCI_STATUS_S, MCI_STATUS_UC,
    MCI_STATUS_VAL,
};

/// Fields every fixture shares: a Skylake-SP (family 6, model 85, stepping 4) on CPU 3.
pub fn base() -> Mce {
    Mce {
        tsc: 0x2d1c5e9b87a,
        time: 1_484_000_000,
        cpuvendor: 0,
        cpuid: 0x0005_0654,
        extcpu: 3,
        cpu: 3,
        finished: 1,
        socketid: 0,
        apicid: 6,
        mcgcap: 0xc09,
        ppin: 0x1234_5678_90ab_cdef,
        microcode: 0x0200_6e05,
        misc: 0x86,
        addr: 0x5566_7788,
        record_len: MCE_STRUCT_SIZE,
        ..Mce::default()
    }
}

/// One fixture: the record, its expected class and severity, and its golden payload
/// (for batch index `index`; the text has no trailing newline, as the patch sent it).
pub struct Case {
    pub name: &'static str,
    pub mce: Mce,
    pub class: &'static str,
    pub severity: u32,
    pub golden: String,
}

const TAIL_128: &str = "MCGCAP c09 APICID 6 SOCKETID 0 \n\
PPIN 1234567890abcdef\n\
MICROCODE 2006e05\n\
CPUID Vendor Intel Family 6 Model 85 Step 4";

const HEAD: &str = "Hardware event. This is not a software error.\n";
const TIME: &str = "TIME 1484000000 Mon Jan  9 22:13:20 2017\n";

/// Every class of the mcelog patch, in batch order (index = position).
pub fn cases() -> Vec<Case> {
    let b = base();
    vec![
        Case {
            name: "corrected memory read error with green threshold",
            mce: Mce {
                bank: 4,
                status: MCI_STATUS_VAL
                    | MCI_STATUS_EN
                    | MCI_STATUS_MISCV
                    | MCI_STATUS_ADDRV
                    | (1 << 53)
                    | 0x0090,
                addr: 0x1122_3344,
                ..b.clone()
            },
            class: "corrected",
            severity: 2,
            golden: format!(
                "{HEAD}MCE 0\nCPU 3 BANK 4 TSC 2d1c5e9b87a \nMISC 86 ADDR 11223344 \n{TIME}\
MCG status:\nMCi status:\nCorrected error\nError enabled\nMCi_MISC register valid\n\
MCi_ADDR register valid\nThreshold based error status: green\n\
MCA: MEMORY CONTROLLER RD_CHANNEL0_ERR\nTransaction: Memory read error\n\
STATUS 9c20000000000090 MCGSTATUS 0\n{TAIL_128}"
            ),
        },
        Case {
            name: "uncorrected, no action required (UCNA)",
            mce: Mce {
                bank: 7,
                status: MCI_STATUS_VAL
                    | MCI_STATUS_UC
                    | MCI_STATUS_EN
                    | MCI_STATUS_MISCV
                    | MCI_STATUS_ADDRV
                    | 0x009f,
                ..b.clone()
            },
            class: "UCNA",
            severity: 4,
            golden: format!(
                "{HEAD}MCE 1\nCPU 3 BANK 7 TSC 2d1c5e9b87a \nMISC 86 ADDR 55667788 \n{TIME}\
MCG status:\nMCi status:\nUncorrected error\nError enabled\nMCi_MISC register valid\n\
MCi_ADDR register valid\nMCA: MEMORY CONTROLLER RD_CHANNELunspecified_ERR\n\
Transaction: Memory read error\nSTATUS bc0000000000009f MCGSTATUS 0\n{TAIL_128}"
            ),
        },
        Case {
            name: "software recoverable, action optional (SRAO): patrol scrub",
            mce: Mce {
                bank: 7,
                status: MCI_STATUS_VAL
                    | MCI_STATUS_UC
                    | MCI_STATUS_EN
                    | MCI_STATUS_MISCV
                    | MCI_STATUS_ADDRV
                    | MCI_STATUS_S
                    | 0x00c0,
                mcgstatus: MCG_STATUS_RIPV | MCG_STATUS_MCIP,
                ..b.clone()
            },
            class: "SRAO",
            severity: 4,
            golden: format!(
                "{HEAD}MCE 2\nCPU 3 BANK 7 TSC 2d1c5e9b87a \nMISC 86 ADDR 55667788 \n{TIME}\
MCG status:RIPV MCIP \nMCi status:\nUncorrected error\nError enabled\n\
MCi_MISC register valid\nMCi_ADDR register valid\nSRAO\n\
MCA: MEMORY CONTROLLER MS_CHANNEL0_ERR\nTransaction: Memory scrubbing error\n\
STATUS bd000000000000c0 MCGSTATUS 5\n{TAIL_128}"
            ),
        },
        Case {
            name: "software recoverable, action required (SRAR): data load",
            mce: Mce {
                bank: 1,
                status: MCI_STATUS_VAL
                    | MCI_STATUS_UC
                    | MCI_STATUS_EN
                    | MCI_STATUS_MISCV
                    | MCI_STATUS_ADDRV
                    | MCI_STATUS_S
                    | MCI_STATUS_AR
                    | 0x0134,
                mcgstatus: MCG_STATUS_EIPV | MCG_STATUS_MCIP,
                ip: 0x7f00_1234_5678,
                cs: 0x33,
                ..b.clone()
            },
            class: "SRAR",
            severity: 4,
            golden: format!(
                "{HEAD}MCE 3\nCPU 3 BANK 1 TSC 2d1c5e9b87a \nRIP 33:7f0012345678\n\
MISC 86 ADDR 55667788 \n{TIME}MCG status:EIPV MCIP \nMCi status:\nUncorrected error\n\
Error enabled\nMCi_MISC register valid\nMCi_ADDR register valid\nSRAR\n\
MCA: Data CACHE Level-1 Data-Read Error\nSTATUS bd80000000000134 MCGSTATUS 6\n{TAIL_128}"
            ),
        },
        Case {
            name: "UC with AR but not S: the odd AR class",
            mce: Mce {
                bank: 0,
                status: MCI_STATUS_VAL
                    | MCI_STATUS_UC
                    | MCI_STATUS_EN
                    | MCI_STATUS_PCC
                    | MCI_STATUS_AR
                    | 0x0005,
                mcgstatus: MCG_STATUS_MCIP,
                ..b.clone()
            },
            class: "AR",
            severity: 4,
            golden: format!(
                "{HEAD}MCE 4\nCPU 3 BANK 0 TSC 2d1c5e9b87a \n{TIME}MCG status:MCIP \n\
MCi status:\nUncorrected error\nError enabled\nProcessor context corrupt\nAR\n\
MCA: Internal parity error\nSTATUS b280000000000005 MCGSTATUS 4\n{TAIL_128}"
            ),
        },
        Case {
            name: "thermal bank (kernels before 4.11): no decoding lines",
            mce: Mce {
                bank: 128,
                status: 0x8838_0001,
                misc: 0,
                addr: 0,
                ..b.clone()
            },
            class: "thermal",
            severity: 2,
            golden: format!(
                "{HEAD}MCE 5\nCPU 3 THERMAL EVENT TSC 2d1c5e9b87a \n{TIME}\
STATUS 88380001 MCGSTATUS 0\n{TAIL_128}"
            ),
        },
    ]
}

/// The corrected record as an 88-byte (pre-3.x kernel) record, and its golden payload:
/// no PPIN, MICROCODE lines (the record is too short to hold them).
pub fn short_case() -> (Vec<u8>, String) {
    let c = &cases()[0];
    let golden = c
        .golden
        .replace("PPIN 1234567890abcdef\nMICROCODE 2006e05\n", "");
    (c.mce.to_bytes(88), golden)
}

/// All cases as a `/dev/mcelog`-style stream of 128-byte records.
pub fn blob() -> Vec<u8> {
    cases()
        .iter()
        .flat_map(|c| c.mce.to_bytes(MCE_STRUCT_SIZE))
        .collect()
}

/// The backend's `re.search('STATUS.*([A-Fa-f0-9]{8}) MCGSTATUS', payload).group(1)`,
/// by hand: the leftmost `STATUS` with a match, then the greedy `.*` (no newline), so the
/// rightmost 8 hex digits before ` MCGSTATUS` on that line.
pub fn backend_status_capture(payload: &str) -> Option<String> {
    for line in payload.split('\n') {
        let starts: Vec<usize> = line.match_indices("STATUS").map(|(i, _)| i).collect();
        let ends: Vec<usize> = line.match_indices(" MCGSTATUS").map(|(i, _)| i).collect();
        for &s in &starts {
            for &e in ends.iter().rev() {
                if e >= s + 6 + 8 {
                    let cand = &line[e - 8..e];
                    if cand.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Some(cand.to_string());
                    }
                }
            }
        }
    }
    None
}

// ---- tracefs --------------------------------------------------------------------------

/// A tracepoint layout: `(C type, name, offset, size)` after the four common fields.
pub type Layout = &'static [(&'static str, &'static str, usize, usize)];

/// `mce_record` of a 6.x kernel (with ppin, microcode and the AMD vendor-data array).
pub const LAYOUT_6X: Layout = &[
    ("u64", "mcgcap", 8, 8),
    ("u64", "mcgstatus", 16, 8),
    ("u64", "status", 24, 8),
    ("u64", "addr", 32, 8),
    ("u64", "misc", 40, 8),
    ("u64", "synd", 48, 8),
    ("u64", "ipid", 56, 8),
    ("u64", "ip", 64, 8),
    ("u64", "tsc", 72, 8),
    ("u64", "ppin", 80, 8),
    ("u64", "walltime", 88, 8),
    ("u32", "cpu", 96, 4),
    ("u32", "cpuid", 100, 4),
    ("u32", "apicid", 104, 4),
    ("u32", "socketid", 108, 4),
    ("u8", "cs", 112, 1),
    ("u8", "bank", 113, 1),
    ("u8", "cpuvendor", 114, 1),
    ("u32", "microcode", 116, 4),
];

/// `mce_record` of a 4.x kernel: no ppin or microcode, other offsets.
pub const LAYOUT_4X: Layout = &[
    ("u64", "mcgcap", 8, 8),
    ("u64", "mcgstatus", 16, 8),
    ("u64", "status", 24, 8),
    ("u64", "addr", 32, 8),
    ("u64", "misc", 40, 8),
    ("u64", "synd", 48, 8),
    ("u64", "ipid", 56, 8),
    ("u64", "ip", 64, 8),
    ("u64", "tsc", 72, 8),
    ("u64", "walltime", 80, 8),
    ("u32", "cpu", 88, 4),
    ("u32", "cpuid", 92, 4),
    ("u32", "apicid", 96, 4),
    ("u32", "socketid", 100, 4),
    ("u8", "cs", 104, 1),
    ("u8", "bank", 105, 1),
    ("u8", "cpuvendor", 106, 1),
];

/// Size of the event data for a layout (the v_data locator of 6.x included).
pub fn event_size(layout: Layout) -> usize {
    let end = layout.iter().map(|(_, _, o, s)| o + s).max().unwrap_or(8);
    if layout.len() == LAYOUT_6X.len() {
        124
    } else {
        end.div_ceil(4) * 4
    }
}

/// The text of `events/mce/mce_record/format` for `layout`.
pub fn format_text(id: u32, layout: Layout) -> String {
    let mut t = format!(
        "name: mce_record\nID: {id}\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n"
    );
    for (ty, name, off, size) in layout {
        t.push_str(&format!(
            "\tfield:{ty} {name};\toffset:{off};\tsize:{size};\tsigned:0;\n"
        ));
    }
    if layout.len() == LAYOUT_6X.len() {
        t.push_str("\tfield:__data_loc u8[] v_data;\toffset:120;\tsize:4;\tsigned:0;\n");
    }
    t.push_str(
        "\nprint fmt: \"CPU: %d, MCGc/s: %llx/%llx, MC%d: %016Lx\", REC->cpu, REC->mcgcap, \
         REC->mcgstatus, REC->bank, REC->status\n",
    );
    t
}

pub const HEADER_PAGE: &str = "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:1;\n";

/// The event data of `m` as the kernel lays it out for `layout` (event type `id`).
pub fn event_data(id: u16, layout: Layout, m: &Mce) -> Vec<u8> {
    let mut d = vec![0u8; event_size(layout)];
    d[..2].copy_from_slice(&id.to_ne_bytes());
    d[4..8].copy_from_slice(&4242i32.to_ne_bytes());
    for (_, name, off, size) in layout {
        let v: u64 = match *name {
            "mcgcap" => m.mcgcap,
            "mcgstatus" => m.mcgstatus,
            "status" => m.status,
            "addr" => m.addr,
            "misc" => m.misc,
            "synd" => m.synd,
            "ipid" => m.ipid,
            "ip" => m.ip,
            "tsc" => m.tsc,
            "ppin" => m.ppin,
            "walltime" => m.time,
            "cpu" => u64::from(m.extcpu),
            "cpuid" => u64::from(m.cpuid),
            "apicid" => u64::from(m.apicid),
            "socketid" => u64::from(m.socketid),
            "cs" => u64::from(m.cs),
            "bank" => u64::from(m.bank),
            "cpuvendor" => u64::from(m.cpuvendor),
            "microcode" => u64::from(m.microcode),
            other => panic!("unknown field {other}"),
        };
        d[*off..off + size].copy_from_slice(&v.to_ne_bytes()[..*size]);
    }
    d
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One ring-buffer page holding `events`, encoded as the kernel does: a time-extend first,
/// small events with `type_len = len/4`, large ones with `type_len 0` and a length word,
/// and a discarded (padding) event in the middle.
pub fn page(events: &[Vec<u8>], missed_events: bool) -> Vec<u8> {
    let mut data = Vec::new();
    let header = |type_len: u32, delta: u32| (type_len | (delta << 5)).to_ne_bytes();
    // Time extend: header + one word.
    data.extend_from_slice(&header(30, 7));
    data.extend_from_slice(&1u32.to_ne_bytes());
    for (i, ev) in events.iter().enumerate() {
        let padded = ev.len().div_ceil(4) * 4;
        if padded <= 112 && ev.len() % 4 == 0 {
            data.extend_from_slice(&header((padded / 4) as u32, 3));
        } else {
            data.extend_from_slice(&header(0, 3));
            data.extend_from_slice(&((ev.len() + 4) as u32).to_ne_bytes());
        }
        data.extend_from_slice(ev);
        data.resize(data.len() + (padded - ev.len()), 0);
        if i == 0 {
            // A discarded event: padding with a non-zero delta; its length word counts
            // itself and the 8 bytes of body (the event is 4 + 12 bytes long).
            data.extend_from_slice(&header(29, 1));
            data.extend_from_slice(&12u32.to_ne_bytes());
            data.extend_from_slice(&[0xee; 8]);
        }
    }
    let mut p = vec![0u8; page_size()];
    p[..8].copy_from_slice(&0x1234_5678u64.to_ne_bytes());
    let commit = data.len() as u64 | if missed_events { 1 << 31 } else { 0 };
    p[8..16].copy_from_slice(&commit.to_ne_bytes());
    p[16..16 + data.len()].copy_from_slice(&data);
    p
}

/// A tracefs mount in `sys/kernel/tracing` under `host_root` with a global tree and an
/// existing `mceprobe` instance (as a real tracefs would populate it on mkdir). Returns
/// the instance dir.
pub fn tracefs_tree(host_root: &Path, id: u32, layout: Layout, cpus: usize) -> PathBuf {
    let tracefs = host_root.join("sys/kernel/tracing");
    let write = |rel: &str, content: &str| {
        let p = tracefs.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("tracing_on", "1\n");
    write("events/mce/mce_record/enable", "0\n");
    write("events/mce/mce_record/format", &format_text(id, layout));
    write("events/header_page", HEADER_PAGE);
    let inst = "instances/mceprobe";
    write(&format!("{inst}/tracing_on"), "1\n");
    write(&format!("{inst}/buffer_percent"), "50\n");
    write(&format!("{inst}/events/mce/mce_record/enable"), "0\n");
    write(
        &format!("{inst}/events/mce/mce_record/format"),
        &format_text(id, layout),
    );
    write(&format!("{inst}/events/header_page"), HEADER_PAGE);
    for cpu in 0..cpus {
        write(&format!("{inst}/per_cpu/cpu{cpu}/trace_pipe_raw"), "");
    }
    tracefs.join(inst)
}

/// Append pages to a CPU's `trace_pipe_raw` in the fixture tree.
pub fn append_pages(instance: &Path, cpu: usize, pages: &[Vec<u8>]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(instance.join(format!("per_cpu/cpu{cpu}/trace_pipe_raw")))
        .unwrap();
    for p in pages {
        f.write_all(p).unwrap();
    }
}
