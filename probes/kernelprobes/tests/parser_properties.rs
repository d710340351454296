//! Property tests: the parser never panics, never returns an oversized or invalid payload,
//! and does not depend on how the input is cut into reads.

use kernelprobes::kmsg::KmsgScanner;
use kernelprobes::lines::LineAssembler;
use kernelprobes::oops::{parse_text, Oops, OopsParser, PayloadOptions, MAX_LINES, MAX_LINE_LEN};
use libtelemetry::record::{validate_payload, MAX_PAYLOAD};
use proptest::prelude::*;

fn assert_bounded(found: &[Oops]) {
    for oops in found {
        assert!(oops.lines.len() <= MAX_LINES);
        assert!(oops.lines.iter().all(|l| l.len() <= MAX_LINE_LEN * 3));
        for register_values in [false, true] {
            let p = oops.payload(PayloadOptions { register_values });
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            assert!(validate_payload(p.as_bytes()).is_ok());
        }
    }
}

/// Lines built from the pieces oopses are made of.
fn kernel_line() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2",
        "BUG: unable to handle kernel paging request at 0",
        "ALSA a.c:1: BUG: x",
        "irq 7: nobody cared",
        "BERT: Error records from previous boot:",
        "[Hardware Error]: event severity: fatal",
        "Kernel panic - not syncing: x",
        "Call Trace:",
        " [<ffffffff81000000>] ? f+0x1/0x2",
        " g+0x1/0x2 [mod]",
        " <IRQ>",
        " </TASK>",
        "Code: 0f 0b",
        "---[ end trace 0 ]---",
        "CPU: 1 PID: 2 Comm: x Tainted: G W 6.1 #1 Y",
        "Pid: 1, comm: x Not tainted 2.6 #1",
        "Modules linked in: a b c",
        "RAX: ffff RBX: 0 FS: 0(0) GS: 1",
        "RSP <ffff>",
        "EIP is at f+0x10/0x20",
        "IP: [<ffff>] f+0x1/0x2",
        "Unable to handle kernel",
        "",
        " ",
    ]);
    (
        prop::sample::select(vec!["", "<4>[ 1.000000] ", "<4>", "[ 2.5] ", "<12>[\t3.0]"]),
        piece,
        "[ -~\\t\u{e9}\u{1b}]{0,40}",
    )
        .prop_map(|(prefix, piece, tail)| format!("{prefix}{piece}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        assert_bounded(&parse_text(&bytes));
        let mut scanner = KmsgScanner::new();
        let mut found = scanner.push(&bytes);
        found.extend(scanner.flush());
        assert_bounded(&found);
    }

    #[test]
    fn oops_shaped_input_stays_bounded(lines in prop::collection::vec(kernel_line(), 0..400)) {
        let text = lines.join("\n");
        assert_bounded(&parse_text(text.as_bytes()));
    }

    #[test]
    fn long_lines_stay_bounded(n in 0usize..30, len in 1usize..20000) {
        let mut text = String::from("WARNING: big\nCall Trace:\n");
        for i in 0..n {
            text.push_str(&format!("<4>[ 1.0]  {}{i}+0x1/0x2\n", "f".repeat(len)));
        }
        assert_bounded(&parse_text(text.as_bytes()));
    }

    #[test]
    fn read_boundaries_do_not_matter(
        lines in prop::collection::vec(kernel_line(), 0..200),
        cuts in prop::collection::vec(0usize..10000, 0..20),
    ) {
        let text = lines.join("\n");
        let whole = parse_text(text.as_bytes());
        let bytes = text.as_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut parser = OopsParser::new();
        let mut asm = LineAssembler::new(MAX_LINE_LEN);
        let mut found = Vec::new();
        let mut start = 0;
        {
            let mut feed = |line: &[u8]| found.extend(parser.push_syslog_line(line));
            for cut in cuts {
                asm.push(&bytes[start..cut], &mut feed);
                start = cut;
            }
            asm.finish(&mut feed);
        }
        found.extend(parser.finish());
        prop_assert_eq!(found, whole);
    }
}
