//! mcelog's text layout for one record — the payload the mcelog telemetry patch captured
//! (everything `dump_mce()` printed through `Wprintf`, after the `disclaimer()` and the
//! `MCE <n>` line, with the final newline dropped).
//!
//! The backend's MCE view runs `STATUS.*([A-Fa-f0-9]{8}) MCGSTATUS` over the payload, so the
//! `STATUS <hex> MCGSTATUS <hex>` line is always present and printed with `{:x}` like mcelog's
//! `%llx`.
//!
//! Differences from mcelog, on purpose: the `TIME` line is printed in UTC (mcelog used the
//! local time zone through `ctime`), so payloads do not depend on the host's zone; only the
//! architectural (generic Intel) decoding is reproduced — mcelog's per-model add-on lines
//! (memory-controller channel details of specific Xeon generations, the AMD K8 decoder) and
//! its "bogus event" filters are not. The backend parses none of those lines.

use std::fmt::Write as _;

use crate::mce::{self, offset, Mce};

/// Which decoder mcelog would have run between the `TIME` and the `STATUS` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuDecode {
    /// Intel architectural decoding (`decode_intel_mc` without the per-model add-ons).
    Intel,
    /// No decoder (unknown vendor, or a vendor whose decoder is not reproduced).
    None,
}

/// `X86_VENDOR_*` numbers as `struct mce.cpuvendor` holds them.
const VENDORS: [&str; 9] = [
    "Intel",
    "Cyrix",
    "AMD",
    "UMC",
    "vendor 4",
    "Centaur",
    "vendor 6",
    "Transmeta",
    "NSC",
];
const X86_VENDOR_INTEL: u8 = 0;

/// The first line of every payload (mcelog's `disclaimer()`).
pub const DISCLAIMER: &str = "Hardware event. This is not a software error.";

impl CpuDecode {
    /// The decoder for `m`: from the record's CPUID when it has one, else from the host's
    /// `/proc/cpuinfo` vendor (`host_is_intel`), as mcelog's `mce_cpuid()` chooses.
    pub fn for_record(m: &Mce, host_is_intel: bool) -> CpuDecode {
        if m.has(offset::CPUID) && m.cpuid != 0 {
            if m.cpuvendor == X86_VENDOR_INTEL {
                CpuDecode::Intel
            } else {
                CpuDecode::None
            }
        } else if host_is_intel {
            CpuDecode::Intel
        } else {
            CpuDecode::None
        }
    }
}

/// True when a `/proc/cpuinfo` text names an Intel CPU.
pub fn cpuinfo_is_intel(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.trim() == "vendor_id" && v.trim() == "GenuineIntel")
    })
}

/// `(family, model, stepping)` exactly as mcelog's `parse_cpuid()` computes them (the
/// extended model is added only when the final family is 6 or 15).
pub fn parse_cpuid(cpuid: u32) -> (u32, u32, u32) {
    let mut family = (cpuid >> 8) & 0xf;
    if family == 0xf {
        family += (cpuid >> 20) & 0xff;
    }
    let mut model = (cpuid >> 4) & 0xf;
    if family == 6 || family == 0xf {
        model += ((cpuid >> 16) & 0xf) << 4;
    }
    (family, model, cpuid & 0xf)
}

fn vendor_name(v: u8) -> &'static str {
    VENDORS.get(v as usize).copied().unwrap_or("Unknown vendor")
}

fn bank_name(bank: u8) -> String {
    if bank >= mce::MCE_EXTENDED_BANK {
        match bank {
            mce::MCE_THERMAL_BANK => "THERMAL EVENT".to_string(),
            mce::MCE_TIMEOUT_BANK => "Timeout waiting for exception on other CPUs".to_string(),
            other => format!("Undecoded extended event {other:x}"),
        }
    } else {
        format!("BANK {bank}")
    }
}

/// The payload for record number `index` of its batch (mcelog's `MCE <n>` line), without
/// the trailing newline (the patch overwrote the last byte with NUL).
pub fn payload_text(m: &Mce, index: usize, decode: CpuDecode) -> String {
    let mut out = String::with_capacity(1024);
    let _ = writeln!(out, "{DISCLAIMER}");
    let _ = writeln!(out, "MCE {index}");
    dump_mce(&mut out, m, decode);
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

/// mcelog's `dump_mce()`.
fn dump_mce(out: &mut String, m: &Mce, decode: CpuDecode) {
    let cpu = m.cpu_number();
    if m.finished == 0 {
        out.push_str("not finished?\n");
    }
    let _ = write!(out, "CPU {cpu} {} ", bank_name(m.bank));
    if m.tsc != 0 {
        // mcelog appends a decoded uptime only when the record has no wall time, which
        // never happens after mce_prepare() filled it in.
        let _ = write!(out, "TSC {:x} ", m.tsc);
    }
    out.push('\n');
    if m.ip != 0 {
        let inexact = if m.mcgstatus & mce::MCG_STATUS_EIPV == 0 {
            " !INEXACT!"
        } else {
            ""
        };
        let _ = writeln!(out, "RIP{inexact} {:02x}:{:x}", m.cs, m.ip);
    }
    let mut line = String::new();
    if m.status & mce::MCI_STATUS_MISCV != 0 {
        let _ = write!(line, "MISC {:x} ", m.misc);
    }
    if m.status & mce::MCI_STATUS_ADDRV != 0 {
        let _ = write!(line, "ADDR {:x} ", m.addr);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    if m.time != 0 {
        let _ = write!(out, "TIME {} {}", m.time, ctime_utc(m.time));
    }
    if decode == CpuDecode::Intel {
        decode_intel_mc(out, m);
    }
    let _ = writeln!(out, "STATUS {:x} MCGSTATUS {:x}", m.status, m.mcgstatus);
    let mut line = String::new();
    if m.has(offset::CPUID) && m.mcgcap != 0 {
        let _ = write!(line, "MCGCAP {:x} ", m.mcgcap);
    }
    if m.has(offset::APICID) {
        let _ = write!(line, "APICID {:x} ", m.apicid);
    }
    if m.has(offset::SOCKETID) {
        let _ = write!(line, "SOCKETID {:x} ", m.socketid);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    if m.has(offset::PPIN) && m.ppin != 0 {
        let _ = writeln!(out, "PPIN {:x}", m.ppin);
    }
    if m.has(offset::MICROCODE) && m.microcode != 0 {
        let _ = writeln!(out, "MICROCODE {:x}", m.microcode);
    }
    if m.has(offset::CPUID) && m.cpuid != 0 {
        let (family, model, step) = parse_cpuid(m.cpuid);
        let _ = writeln!(
            out,
            "CPUID Vendor {} Family {family} Model {model} Step {step}",
            vendor_name(m.cpuvendor)
        );
    }
}

/// `decode_intel_mc()` without the per-model add-ons. The thermal bank returns early: its
/// text went through `Gprintf` and never reached the payload.
fn decode_intel_mc(out: &mut String, m: &Mce) {
    if m.bank == mce::MCE_THERMAL_BANK {
        return;
    }
    out.push_str("MCG status:");
    for (bit, name) in [
        (mce::MCG_STATUS_RIPV, "RIPV "),
        (mce::MCG_STATUS_EIPV, "EIPV "),
        (mce::MCG_STATUS_MCIP, "MCIP "),
        (mce::MCG_STATUS_LMCES, "LMCE "),
    ] {
        if m.mcgstatus & bit != 0 {
            out.push_str(name);
        }
    }
    out.push('\n');
    decode_mci(out, m);
}

fn decode_mci(out: &mut String, m: &Mce) {
    let status = m.status;
    out.push_str("MCi status:\n");
    if status & mce::MCI_STATUS_VAL == 0 {
        out.push_str("Machine check not valid\n");
    }
    if status & mce::MCI_STATUS_OVER != 0 {
        out.push_str("Error overflow\n");
    }
    if status & mce::MCI_STATUS_UC != 0 {
        out.push_str("Uncorrected error\n");
    } else {
        out.push_str("Corrected error\n");
    }
    if status & mce::MCI_STATUS_EN != 0 {
        out.push_str("Error enabled\n");
    }
    if status & mce::MCI_STATUS_MISCV != 0 {
        out.push_str("MCi_MISC register valid\n");
    }
    if status & mce::MCI_STATUS_ADDRV != 0 {
        out.push_str("MCi_ADDR register valid\n");
    }
    if status & mce::MCI_STATUS_PCC != 0 {
        out.push_str("Processor context corrupt\n");
    }
    if status & (mce::MCI_STATUS_S | mce::MCI_STATUS_AR) != 0 {
        let _ = writeln!(
            out,
            "{}",
            ["UCNA", "AR", "SRAO", "SRAR"][((status >> 55) & 3) as usize]
        );
    }
    if m.mcgcap & mce::MCG_SER_P != 0 && status & mce::MCI_STATUS_FWST != 0 {
        out.push_str("Firmware may have updated this error\n");
    }
    if (m.mcgcap == 0 || m.mcgcap & mce::MCG_TES_P != 0) && status & mce::MCI_STATUS_UC == 0 {
        match (status >> 53) & 3 {
            0 => {}
            1 => out.push_str("Threshold based error status: green\n"),
            2 => out.push_str(
                "Threshold based error status: yellow\nLarge number of corrected cache errors. \
                 System operating, but might lead\nto uncorrected errors soon\n",
            ),
            _ => out.push_str("Threshold based error status: res3\n"),
        }
    }
    out.push_str("MCA: ");
    decode_mca(out, m);
}

fn prefix(n: u32, mca: u32) -> bool {
    (mca >> n) == 1
}

fn level_str(ll: u32) -> &'static str {
    ["Level-0", "Level-1", "Level-2", "Level-3"]
        .get(ll as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

fn tt_str(t: u32) -> &'static str {
    ["Instruction", "Data", "Generic", "Unknown"]
        .get(t as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

fn rrrr_str(r: u32) -> &'static str {
    [
        "Generic",
        "Read",
        "Write",
        "Data-Read",
        "Data-Write",
        "Instruction-Fetch",
        "Prefetch",
        "Eviction",
        "Snoop",
    ]
    .get(r as usize)
    .copied()
    .unwrap_or("UNKNOWN")
}

fn decode_memory_controller(out: &mut String, mca: u32) {
    const MNEMONIC: [&str; 8] = ["GEN", "RD", "WR", "AC", "MS", "RES5", "RES6", "RES7"];
    const DESC: [&str; 8] = [
        "Generic undefined request",
        "Memory read error",
        "Memory write error",
        "Address/Command error",
        "Memory scrubbing error",
        "Reserved 5",
        "Reserved 6",
        "Reserved 7",
    ];
    let channel = if mca & 0xf == 0xf {
        "unspecified".to_string()
    } else {
        (mca & 0xf).to_string()
    };
    let op = ((mca >> 4) & 7) as usize;
    let _ = writeln!(
        out,
        "MEMORY CONTROLLER {}_CHANNEL{channel}_ERR",
        MNEMONIC[op]
    );
    let _ = writeln!(out, "Transaction: {}", DESC[op]);
}

/// mcelog's `decode_mca()`: the architectural meaning of the low 16 bits of MCi_STATUS.
fn decode_mca(out: &mut String, m: &Mce) {
    const SIMPLE: [&str; 7] = [
        "No Error",
        "Unclassified",
        "Microcode ROM parity error",
        "External error",
        "FRC error",
        "Internal parity error",
        "SMM Handler Code Access Violation",
    ];
    let status = m.status;
    let mut mca = (status & 0xffff) as u32;
    if mca & (1 << 12) != 0 {
        out.push_str("corrected filtering (some unreported errors in same region)\n");
        mca &= !(1 << 12);
    }
    if let Some(msg) = SIMPLE.get(mca as usize) {
        let _ = writeln!(out, "{msg}");
        return;
    }
    if (mca >> 2) == 3 {
        let _ = writeln!(out, "{} Generic cache hierarchy error", level_str(mca & 3));
    } else if prefix(4, mca) {
        let _ = writeln!(
            out,
            "{} TLB {} Error",
            tt_str((mca & 0xc) >> 2),
            level_str(mca & 3)
        );
    } else if prefix(8, mca) {
        let _ = writeln!(
            out,
            "{} CACHE {} {} Error",
            tt_str((mca & 0xc) >> 2),
            level_str((mca & 3) + 1),
            rrrr_str((mca & 0xf0) >> 4)
        );
    } else if prefix(9, mca) && ((mca >> 7) & 3) == 1 {
        out.push_str("Memory as cache: ");
        decode_memory_controller(out, mca);
    } else if prefix(10, mca) {
        if mca == 0x400 {
            out.push_str("Internal Timer error\n");
        } else {
            let _ = writeln!(out, "Internal unclassified error: {:x}", mca & 0xffff);
        }
    } else if prefix(11, mca) {
        let socket: i64 = if m.has(offset::SOCKETID) {
            i64::from(m.socketid as i32)
        } else {
            -1
        };
        let pp = [
            "Local-CPU-originated-request",
            "Responed-to-request",
            "Observed-error-as-third-party",
            "Generic",
        ][((mca & 0x600) >> 9) as usize];
        let ii =
            ["Memory-access", "Reserved", "IO", "Other-transaction"][((mca & 0xc) >> 2) as usize];
        let timeout =
            ["Request-did-not-timeout", "Request-timed-out"][((mca & 0x100) >> 8) as usize];
        let _ = writeln!(
            out,
            "BUS error: {socket} {} {} {pp} {} {ii} {timeout}",
            m.cpu_number() as i32,
            level_str(mca & 3),
            rrrr_str((mca & 0xf0) >> 4),
        );
        if status & mce::MCI_STATUS_MISCV != 0 && (status & 0xefff) == 0x0e0b {
            let bits = |lo: u32, hi: u32| (m.misc >> lo) & ((1u64 << (hi - lo + 1)) - 1);
            let _ = writeln!(
                out,
                "IO MCA reported by root port {:x}:{:02x}:{:02x}.{:x}",
                bits(32, 39),
                bits(24, 31),
                bits(19, 23),
                bits(16, 18)
            );
        }
    } else if prefix(7, mca) {
        decode_memory_controller(out, mca);
    } else {
        let _ = writeln!(out, "Unknown Error {mca:x}");
    }
}

/// `ctime()` in UTC: `"Www Mmm dd hh:mm:ss yyyy\n"` with a space-padded day.
pub fn ctime_utc(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = libtelemetry::civil::civil_from_days(days as i64);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}\n",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_libc_in_utc() {
        for (secs, want) in [
            (0, "Thu Jan  1 00:00:00 1970\n"),
            (1_484_000_000, "Mon Jan  9 22:13:20 2017\n"),
            (951_782_400, "Tue Feb 29 00:00:00 2000\n"),
            (4_102_444_799, "Thu Dec 31 23:59:59 2099\n"),
        ] {
            assert_eq!(ctime_utc(secs), want, "{secs}");
        }
    }

    #[test]
    fn cpuid_fields_as_mcelog() {
        // Skylake-SP stepping 4: family 6, model 0x55 = 85.
        assert_eq!(parse_cpuid(0x0005_0654), (6, 85, 4));
        // AMD Zen (family 0x17): the extended model is not added (mcelog quirk).
        assert_eq!(parse_cpuid(0x0080_0f12), (0x17, 1, 2));
    }
}
