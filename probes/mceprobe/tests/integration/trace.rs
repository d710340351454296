//! The tracepoint format parser and the ring-buffer page parser.

use mceprobe::decode::{payload_text, CpuDecode};
use mceprobe::tracefs::{parse_page, EventFormat, Field, PageLayout};

use crate::fixtures::{
    cases, event_data, format_text, page, page_size, Layout, HEADER_PAGE, LAYOUT_4X, LAYOUT_6X,
};

fn check_field(line: &str, expected: Option<Field>) {
    let text = format!("name: x\nID: 1\nformat:\n{line}\n");
    match (EventFormat::parse(&text), expected) {
        (Ok(f), Some(want)) => assert_eq!(f.fields, vec![want], "{line:?}"),
        (Err(_), None) => {}
        (got, want) => panic!("{line:?}: got {got:?}, want {want:?}"),
    }
}

fn field(name: &str, offset: usize, size: usize, signed: bool, data_loc: bool) -> Option<Field> {
    Some(Field {
        name: name.into(),
        offset,
        size,
        signed,
        data_loc,
    })
}

#[test]
fn format_field_lines() {
    check_field(
        "\tfield:u64 status;\toffset:24;\tsize:8;\tsigned:0;",
        field("status", 24, 8, false, false),
    );
    check_field(
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;",
        field("common_pid", 4, 4, true, false),
    );
    check_field(
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
        field("common_type", 0, 2, false, false),
    );
    check_field(
        "\tfield:__data_loc u8[] v_data;\toffset:120;\tsize:4;\tsigned:0;",
        field("v_data", 120, 4, false, true),
    );
    check_field(
        "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;",
        field("comm", 8, 16, true, false),
    );
    check_field("\tfield:u64 status;\toffset:x;\tsize:8;\tsigned:0;", None);
    check_field("\tfield:u64 status;\tsize:8;", None);
    check_field("\tfield:;\toffset:1;\tsize:8;", None);
}

#[test]
fn format_files_need_an_id_and_fields() {
    assert!(EventFormat::parse("name: x\nformat:\n").is_err());
    assert!(EventFormat::parse("name: x\nID: 5\nformat:\n").is_err());
    assert!(EventFormat::parse("name: x\nID: five\n").is_err());
    let f = EventFormat::parse(&format_text(112, LAYOUT_6X)).unwrap();
    assert_eq!((f.name.as_str(), f.id), ("mce_record", 112));
    assert!(f.check_mce_record().is_ok());
    let no_bank = format_text(112, &LAYOUT_6X[..16]);
    assert!(EventFormat::parse(&no_bank)
        .unwrap()
        .check_mce_record()
        .is_err());
}

/// The same record through both kernel layouts gives the device payload, minus the
/// fields the older tracepoint does not carry.
fn check_layout(layout: Layout, drop_lines: &[&str]) {
    let fmt = EventFormat::parse(&format_text(112, layout)).unwrap();
    for (i, c) in cases().iter().enumerate() {
        let data = event_data(112, layout, &c.mce);
        let m = fmt.to_mce(&data).expect("an mce_record event");
        assert_eq!(m.classify().class, c.class, "{}", c.name);
        let mut golden = c.golden.clone();
        for l in drop_lines {
            golden = golden.replace(l, "");
        }
        assert_eq!(
            payload_text(&m, i, CpuDecode::for_record(&m, false)),
            golden
        );
        // Another event type in the same buffer is not an MCE.
        let mut other = data.clone();
        other[..2].copy_from_slice(&113u16.to_ne_bytes());
        assert!(fmt.to_mce(&other).is_none());
        // A truncated event lacks fields but does not panic.
        let _ = fmt.to_mce(&data[..20]);
        assert!(fmt.to_mce(&data[..1]).is_none());
    }
}

#[test]
fn events_decode_with_the_kernel_layout_of_the_format_file() {
    check_layout(LAYOUT_6X, &[]);
    check_layout(
        LAYOUT_4X,
        &["PPIN 1234567890abcdef\n", "MICROCODE 2006e05\n"],
    );
}

#[test]
fn pages_yield_every_event_in_order() {
    let layout = PageLayout::parse(HEADER_PAGE);
    assert_eq!(layout, PageLayout::default());
    for l in [LAYOUT_6X, LAYOUT_4X] {
        let evs: Vec<Vec<u8>> = cases().iter().map(|c| event_data(112, l, &c.mce)).collect();
        let p = page(&evs, false);
        let got = parse_page(&p, &layout);
        assert!(!got.malformed && !got.missed_events);
        assert_eq!(got.events.len(), evs.len());
        for (g, e) in got.events.iter().zip(&evs) {
            assert_eq!(&g[..e.len()], &e[..]);
        }
        assert!(parse_page(&page(&evs[..1], true), &layout).missed_events);
    }
}

#[test]
fn malformed_pages_do_not_panic() {
    let layout = PageLayout::default();
    let evs = vec![event_data(112, LAYOUT_6X, &cases()[0].mce)];
    let good = page(&evs, false);
    // Commit longer than the page.
    let mut p = good.clone();
    p[8..16].copy_from_slice(&(page_size() as u64 * 2).to_ne_bytes());
    let got = parse_page(&p, &layout);
    assert!(got.malformed);
    // An event length word smaller than itself.
    let mut p = good.clone();
    p[16 + 8..16 + 12].copy_from_slice(&0u32.to_ne_bytes());
    p[16 + 12..16 + 16].copy_from_slice(&2u32.to_ne_bytes());
    assert!(parse_page(&p, &layout).malformed);
    // Short buffers and garbage.
    for len in [0, 4, 15, 16, 17, 100] {
        let _ = parse_page(&good[..len], &layout);
    }
    let mut state = 0x2545f4914f6cdd1du64;
    for _ in 0..2000 {
        let mut p = good.clone();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % 256;
            p[i] = (state >> 32) as u8;
        }
        let _ = parse_page(&p, &layout);
    }
    // A 4-byte commit word (32-bit layout) is honoured.
    let small = PageLayout::parse(
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
         \tfield: local_t commit;\toffset:8;\tsize:4;\tsigned:1;\n\
         \tfield: char data;\toffset:12;\tsize:4084;\tsigned:1;\n",
    );
    assert_eq!((small.commit_size, small.data_offset), (4, 12));
}

#[test]
fn arbitrary_format_text_and_records_do_not_panic() {
    let base = format_text(112, LAYOUT_6X);
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for _ in 0..3000 {
        let mut t = base.clone().into_bytes();
        for _ in 0..4 {
            let i = next(t.len() as u64) as usize;
            t[i] = b"0123456789:;\t\n []field offset size-x"[next(36) as usize];
        }
        let t = String::from_utf8_lossy(&t).into_owned();
        if let Ok(f) = EventFormat::parse(&t) {
            let data: Vec<u8> = (0..next(200)).map(|_| next(256) as u8).collect();
            let _ = f.to_mce(&data);
        }
    }
    for len in [0usize, 1, 67, 68, 127, 128, 129, 4096, 4097] {
        let bytes: Vec<u8> = (0..len * 2).map(|_| next(256) as u8).collect();
        let _ = mceprobe::mce::split_records(&bytes, len);
        if let Ok((records, _)) = mceprobe::mce::split_records(&bytes, len) {
            for (i, m) in records.iter().enumerate() {
                let _ = m.classify();
                let p = payload_text(m, i, CpuDecode::Intel);
                assert!(libtelemetry::record::validate_payload(p.as_bytes()).is_ok());
            }
        }
    }
}

/// Descriptors of this process open on a `trace_pipe_raw` under `root`.
fn open_trace_pipes(root: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(root) && t.ends_with("trace_pipe_raw"))
        .count()
}

/// Every open `trace_pipe_raw` holds a reference on its instance and the kernel refuses to
/// remove a referenced instance (`EBUSY`), so the pipes must be closed before the rmdir.
#[test]
fn closing_the_tracepoint_source_closes_its_pipes_first() {
    use mceprobe::{Source, TraceSource};
    let dir = tempfile::tempdir().unwrap();
    let inst = crate::fixtures::tracefs_tree(dir.path(), 112, LAYOUT_6X, 3);
    let tracefs = inst.parent().unwrap().parent().unwrap();
    let mut source = Source::Tracefs(TraceSource::open(tracefs, "mceprobe").unwrap());
    assert_eq!(open_trace_pipes(dir.path()), 3);
    source.close();
    assert_eq!(open_trace_pipes(dir.path()), 0);
    assert_eq!(
        std::fs::read_to_string(inst.join("events/mce/mce_record/enable")).unwrap(),
        "0"
    );
    drop(source);

    // Dropped without an explicit close (an early return): the same order.
    let source = TraceSource::open(tracefs, "mceprobe").unwrap();
    assert_eq!(open_trace_pipes(dir.path()), 3);
    drop(source);
    assert_eq!(open_trace_pipes(dir.path()), 0);
}
