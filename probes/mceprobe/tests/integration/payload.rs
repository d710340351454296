//! Class, severity and golden payload of every record class.

use mceprobe::decode::{payload_text, CpuDecode};
use mceprobe::mce::{split_records, Mce, MCE_STRUCT_SIZE};

use crate::fixtures::{backend_status_capture, blob, cases, short_case};

fn check(m: &Mce, index: usize, class: &str, severity: u32, golden: &str) {
    let c = m.classify();
    assert_eq!((c.class, c.severity), (class, severity), "class of {m:?}");
    let payload = payload_text(m, index, CpuDecode::for_record(m, false));
    assert_eq!(payload, golden, "payload of {class}:\n{payload}");
}

#[test]
fn every_class_has_its_golden_payload() {
    for (i, c) in cases().iter().enumerate() {
        eprintln!("case: {}", c.name);
        check(&c.mce, i, c.class, c.severity, &c.golden);
    }
}

#[test]
fn records_roundtrip_through_struct_mce_bytes() {
    let bytes = blob();
    assert_eq!(bytes.len(), cases().len() * 128);
    let (records, rest) = split_records(&bytes, MCE_STRUCT_SIZE).unwrap();
    assert!(rest.is_empty());
    for (i, (r, c)) in records.iter().zip(cases()).enumerate() {
        assert_eq!(r, &c.mce, "{}", c.name);
        check(r, i, c.class, c.severity, &c.golden);
    }
}

#[test]
fn shorter_record_length_prints_only_fields_it_holds() {
    let (bytes, golden) = short_case();
    let (records, rest) = split_records(&bytes, 88).unwrap();
    assert!(rest.is_empty());
    assert_eq!(records[0].ppin, 0, "ppin lies beyond an 88-byte record");
    check(&records[0], 0, "corrected", 2, &golden);
    assert!(golden.contains("MCGCAP c09 APICID 6 SOCKETID 0 \nCPUID"));
}

#[test]
fn backend_regex_captures_low_32_bits_of_status() {
    for c in cases() {
        let want = format!("{:08x}", c.mce.status & 0xffff_ffff);
        assert_eq!(
            backend_status_capture(&c.golden).as_deref(),
            Some(want.as_str()),
            "{}",
            c.name
        );
    }
    // The matcher itself: too few digits, or no MCGSTATUS, do not match.
    for (text, want) in [
        ("STATUS 1234 MCGSTATUS 0", None),
        ("STATUS 9c20000000000090 MCGSTATUS 0", Some("00000090")),
        ("STATUS 9c20000000000090\nMCGSTATUS 0", None),
        ("x\nSTATUS 00000000deadbeef MCGSTATUS 5\n", Some("deadbeef")),
    ] {
        assert_eq!(backend_status_capture(text).as_deref(), want, "{text:?}");
    }
}

#[test]
fn cpu_decoder_follows_the_record_then_the_host() {
    let intel = cases()[0].mce.clone();
    assert_eq!(CpuDecode::for_record(&intel, false), CpuDecode::Intel);
    let amd = Mce {
        cpuvendor: 2,
        cpuid: 0x0080_0f12,
        ..intel.clone()
    };
    assert_eq!(CpuDecode::for_record(&amd, true), CpuDecode::None);
    let p = payload_text(&amd, 0, CpuDecode::for_record(&amd, true));
    assert!(!p.contains("MCi status:"), "{p}");
    assert!(
        p.contains("CPUID Vendor AMD Family 23 Model 1 Step 2"),
        "{p}"
    );
    let no_cpuid = Mce { cpuid: 0, ..intel };
    assert_eq!(CpuDecode::for_record(&no_cpuid, true), CpuDecode::Intel);
    assert_eq!(CpuDecode::for_record(&no_cpuid, false), CpuDecode::None);
    assert!(mceprobe::decode::cpuinfo_is_intel(
        "processor\t: 0\nvendor_id\t: GenuineIntel\n"
    ));
    assert!(!mceprobe::decode::cpuinfo_is_intel(
        "vendor_id\t: AuthenticAMD\n"
    ));
}

#[test]
fn unfinished_and_inexact_records_are_marked_as_mcelog_does() {
    let m = Mce {
        finished: 0,
        ip: 0xffffffff8102a3b4,
        cs: 0x10,
        mcgstatus: 0,
        ..cases()[0].mce.clone()
    };
    let p = payload_text(&m, 0, CpuDecode::None);
    assert!(p.contains("MCE 0\nnot finished?\nCPU 3 BANK 4"), "{p}");
    assert!(p.contains("RIP !INEXACT! 10:ffffffff8102a3b4\n"), "{p}");
}

#[test]
fn mca_error_codes_decode_like_mcelog() {
    let with = |status: u64| Mce {
        status: mceprobe::mce::MCI_STATUS_VAL | status,
        ..cases()[0].mce.clone()
    };
    for (code, line) in [
        (0x0000, "MCA: No Error\n"),
        (0x0001, "MCA: Unclassified\n"),
        (0x000e, "MCA: Level-2 Generic cache hierarchy error\n"),
        (0x0011, "MCA: Instruction TLB Level-1 Error\n"),
        (0x015b, "MCA: Generic CACHE UNKNOWN Instruction-Fetch Error\n"),
        (0x0400, "MCA: Internal Timer error\n"),
        (0x0402, "MCA: Internal unclassified error: 402\n"),
        (0x1090, "MCA: corrected filtering (some unreported errors in same region)\nMEMORY CONTROLLER RD_CHANNEL0_ERR\n"),
        (0x0e0b, "MCA: BUS error: 0 3 Level-3 Generic Generic IO Request-did-not-timeout\n"),
        (0x02a1, "MCA: Memory as cache: MEMORY CONTROLLER WR_CHANNEL1_ERR\n"),
        (0x00ff, "MCA: MEMORY CONTROLLER RES7_CHANNELunspecified_ERR\nTransaction: Reserved 7\n"),
        (0x2000, "MCA: Unknown Error 2000\n"),
    ] {
        let p = payload_text(&with(code), 0, CpuDecode::Intel);
        assert!(p.contains(line), "code {code:#x}: want {line:?} in\n{p}");
    }
    // IO MCA: MISCV and code 0x0e0b print the root port from MISC.
    let m = Mce {
        status: mceprobe::mce::MCI_STATUS_VAL | mceprobe::mce::MCI_STATUS_MISCV | 0x0e0b,
        misc: (0x1u64 << 32) | (0x3a << 24) | (0x02 << 19) | (0x1 << 16),
        ..cases()[0].mce.clone()
    };
    let p = payload_text(&m, 0, CpuDecode::Intel);
    assert!(
        p.contains("IO MCA reported by root port 1:3a:02.1\n"),
        "{p}"
    );
}
