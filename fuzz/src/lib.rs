//! The properties the fuzz targets check, one function per target. Each takes the raw input
//! and panics only when a property fails (a parser panicking counts too). The targets in
//! `fuzz_targets/` call these; `tests/seeds.rs` writes the seed corpus and runs every
//! function on every seed and on every saved regression input (`regressions/<target>/`), so
//! the same checks run without a fuzzer.

use std::path::Path;
use std::time::Duration;

use crashprobe::modules::SymbolOptions;
use crashprobe::{AnalysisOptions, CoreImage, Limits, Report};
use kernelprobes::kmsg::KmsgScanner;
use kernelprobes::lines::LineAssembler;
use kernelprobes::oops::{parse_text, Oops, OopsParser, PayloadOptions, MAX_LINES, MAX_LINE_LEN};
use libtelemetry::config::{Config, ConfigError};
use libtelemetry::frame::{decode_frame, encode_frame, frame_len};
use libtelemetry::record::{validate_classification, validate_payload, Record, MAX_PAYLOAD};
use libtelemetry::staged::{encode_staged, parse_staged};
use libtelemetry::{HostInfo, Paths};
use swupdprobe::name::{is_ignored, SwupdName};

/// A target: its name (the directory names under `seeds/`, `corpus/`, `regressions/`) and
/// its property function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order of `Cargo.toml`.
pub const TARGETS: &[Target] = &[
    ("frame_decode", frame_decode),
    ("staged_parse", staged_parse),
    ("config_parse", config_parse),
    ("core_unwind", core_unwind),
    ("oops_parse", oops_parse),
    ("swupd_file", swupd_file),
];

/// Frame decoding never panics; whatever decodes re-encodes to a frame that decodes equal.
pub fn frame_decode(data: &[u8]) {
    let _ = frame_len(data);
    if let Ok(frame) = decode_frame(data) {
        let again = encode_frame(&frame.record, frame.cfg_path.as_deref());
        let back = decode_frame(&again).expect("re-encoded frame decodes");
        assert_eq!(back.record, frame.record);
        assert_eq!(back.cfg_path, frame.cfg_path);
    }
}

/// Staged-file parsing never panics; a parsed file re-encodes to one that parses equal.
pub fn staged_parse(data: &[u8]) {
    if let Ok(s) = parse_staged(data) {
        let cfg = s
            .cfg_path
            .as_ref()
            .and_then(|p| p.to_str())
            .map(str::to_owned);
        let record = s.clone().into_record();
        let again =
            parse_staged(&encode_staged(&record, cfg.as_deref())).expect("re-encoded file parses");
        assert_eq!(again.headers, s.headers);
        assert_eq!(again.into_record(), record);
    }
}

/// Config parsing never panics, and its errors name a line within the input.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Path::new("fuzz.conf"), &Paths::default()) {
        Ok(_) => {}
        Err(ConfigError::Syntax { line, .. }) | Err(ConfigError::Value { line, .. }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1),
                "line {line}"
            );
        }
        Err(_) => {}
    }
}

/// A core, read both ways (in memory as a `-c` file is, and streamed as from the kernel's
/// pipe), always ends in a valid, bounded report that starts with the process line; the
/// stream is always drained.
pub fn core_unwind(data: &[u8]) {
    let opts = AnalysisOptions {
        // Hostile cores must end, but not by the 20 s production budget under a fuzzer.
        budget: Duration::from_secs(2),
        // No separate debug files: keep the host's /usr/lib/debug out of the loop.
        symbols: SymbolOptions {
            debug_roots: Vec::new(),
            ..SymbolOptions::default()
        },
        ..AnalysisOptions::default()
    };
    let check = |report: Report| {
        assert!(
            report.payload.len() <= MAX_PAYLOAD,
            "{}",
            report.payload.len()
        );
        validate_payload(report.payload.as_bytes()).expect("payload is valid record text");
        assert!(report.payload.starts_with("Process: p\n"));
    };
    check(crashprobe::report_for(
        CoreImage::from_vec(data.to_vec()),
        "p",
        Some(11),
        &opts,
    ));
    let limits = Limits {
        // Notes-last inputs spill to a temp file; keep that small here.
        spill_cap: 1 << 20,
        ..Limits::default()
    };
    let (image, total) = CoreImage::from_stream(data, None, &limits);
    assert_eq!(total, data.len() as u64, "the stream is drained");
    check(crashprobe::report_for(image, "p", Some(11), &opts));
}

fn assert_bounded(found: &[Oops]) {
    for oops in found {
        assert!(oops.lines.len() <= MAX_LINES);
        assert!(oops.lines.iter().all(|l| l.len() <= MAX_LINE_LEN * 3));
        for register_values in [false, true] {
            let p = oops.payload(PayloadOptions { register_values });
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            validate_payload(p.as_bytes()).expect("payload is valid record text");
        }
        assert!(validate_classification(oops.classification()).is_ok());
        assert!((1..=4).contains(&oops.severity()));
    }
}

/// The oops parser never panics, its payloads are valid and bounded whatever the input, and
/// its result does not depend on where reads cut the text (the first two bytes choose the
/// cuts). kmsg records and pstore dump headers go through their parsers too.
pub fn oops_parse(data: &[u8]) {
    let whole = parse_text(data);
    assert_bounded(&whole);

    let step = match data {
        [a, b, ..] => 1 + usize::from(u16::from_le_bytes([*a, *b])) % 4096,
        _ => 1,
    };
    let mut parser = OopsParser::new();
    let mut asm = LineAssembler::new(MAX_LINE_LEN);
    let mut pieces = Vec::new();
    {
        let mut feed = |line: &[u8]| pieces.extend(parser.push_syslog_line(line));
        for chunk in data.chunks(step) {
            asm.push(chunk, &mut feed);
        }
        asm.finish(&mut feed);
    }
    pieces.extend(parser.finish());
    assert_eq!(
        pieces, whole,
        "read boundaries changed the result (step {step})"
    );

    let mut scanner = KmsgScanner::new();
    let mut found = Vec::new();
    for chunk in data.chunks(step) {
        found.extend(scanner.push(chunk));
    }
    found.extend(scanner.flush());
    assert_bounded(&found);
    for line in data.split(|b| *b == b'\n') {
        let _ = kernelprobes::kmsg::parse_record(line);
    }
    assert_bounded(&parse_text(kernelprobes::pstore::strip_header(data)));
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = kernelprobes::pstore::parse_dump_name(name);
    }
}

/// A swupd file: the first line is the file name, the rest its content. Names never panic
/// the parser; a valid name gives a valid classification and severity and prints back to an
/// equal name; a valid name with any content gives either a record (whose frame round-trips)
/// or a refusal.
pub fn swupd_file(data: &[u8]) {
    let (name, content) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    let _ = is_ignored(&name);
    let Ok(parsed) = SwupdName::parse(&name) else {
        return;
    };
    let classification = parsed.classification();
    assert!(validate_classification(&classification).is_ok(), "{name:?}");
    assert!((1..=4).contains(&parsed.severity));
    let printed = format!(
        "{}.{}.{}.{}",
        parsed.version, parsed.class, parsed.severity, parsed.random
    );
    assert_eq!(SwupdName::parse(&printed), Ok(parsed.clone()));

    // What `Sender::build` does, with fixed host facts (no file system access).
    let host = HostInfo {
        arch: "x86_64".into(),
        host_type: "vendor|product|version".into(),
        build: "42".into(),
        kernel_version: "6.1.0".into(),
        system_name: "testos".into(),
        board_name: "board|vendor".into(),
        cpu_model: "Test CPU".into(),
        bios_version: "1.0".into(),
    };
    let mut record = Record::new(parsed.severity, &classification, parsed.version, &host)
        .expect("a valid name makes a valid record");
    if record.set_payload(content).is_ok() {
        let frame = encode_frame(&record, None);
        let back = decode_frame(&frame).expect("the record's frame decodes");
        assert_eq!(back.record, record);
    }
}
