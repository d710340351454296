use super::*;
use libtelemetry::record::MAX_PAYLOAD;

/// Parse `input` (syslog-style text) and compare every oops found with `expected`
/// (classification, payload).
fn check(input: &str, expected: &[(&str, &str)]) {
    let got: Vec<(&str, String)> = parse_text(input.as_bytes())
        .iter()
        .map(|o| (o.classification(), o.payload(PayloadOptions::default())))
        .collect();
    let want: Vec<(&str, String)> = expected.iter().map(|(c, p)| (*c, p.to_string())).collect();
    assert_eq!(got, want, "input:\n{input}");
}

/// `lines` as the kernel log prints them: each with a level and a timestamp.
fn klog(lines: &str) -> String {
    lines
        .lines()
        .map(|l| format!("<4>[    1.000000] {l}\n"))
        .collect()
}

/// The reasons of the oopses found in `input`.
fn reasons(input: &str) -> Vec<String> {
    parse_text(input.as_bytes())
        .into_iter()
        .map(|o| o.reason().to_string())
        .collect()
}

#[test]
fn start_patterns_in_order() {
    let check_start = |line: &str, expected: Option<usize>| {
        let got = match_start(line).map(|p| PATTERNS.iter().position(|q| q == p).unwrap());
        assert_eq!(got, expected, "{line:?}");
    };
    check_start(
        "NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out",
        Some(0),
    );
    check_start("sysctl table check failed: /kernel/x", Some(1));
    check_start("IRQ handler type mismatch for IRQ 7", Some(2));
    check_start("ALSA sound/core/pcm_lib.c:154: BUG: stream = 1", Some(3));
    check_start("alsa x: bug y", Some(3));
    check_start("ALSA: BUG", None);
    check_start("ALSA : BUG", Some(3));
    check_start(
        "irq 16: nobody cared (try booting with the \"irqpoll\" option)",
        Some(4),
    );
    check_start("handlers: IRQ 9: nobody cared", Some(4));
    check_start("irq : nobody cared", None);
    check_start("WARNING: CPU: 0 PID: 1 at kernel/x.c:1 f+0x1/0x2", Some(5));
    check_start("WARNING:no space", None);
    check_start("general protection fault: 0000 [#1] SMP", Some(6));
    check_start(
        "BUG: unable to handle kernel NULL pointer dereference at 0",
        Some(7),
    );
    check_start("BUG: soft lockup - CPU#8 stuck for 22s!", Some(8));
    check_start("kernel BUG at mm/mmap.c:2156!", Some(9));
    check_start("general protection fault:0000", Some(10));
    check_start("do_IRQ: stack overflow: 512", Some(11));
    check_start("RTNL: assertion failed at net/core/dev.c (4523)", Some(12));
    check_start("Eeek! page_mapcount(page) went negative! (-1)", Some(13));
    check_start("near stack overflow (cur:f2c14000,sp:f2c14180)", Some(14));
    check_start("double fault: 0000 [#3] SMP", Some(15));
    check_start("Badness at drivers/char/tty_ldisc.c:738", Some(16));
    check_start("list_del corruption. next->prev should be x", Some(17));
    check_start("list_add corruption. prev->next should be y", Some(18));
    check_start("ACPI Error: No handler for Region [EC__]", Some(19));
    check_start("Kernel panic - not syncing: Fatal exception", Some(20));
    check_start("BERT: Error records from previous boot:", Some(21));
    // Prefix patterns match at the start only, and case-sensitively.
    check_start(" WARNING: indented", None);
    check_start("warning: lower case", None);
    check_start("ACPI Warning: SystemIO range conflicts", None);
    check_start("", None);
}

#[test]
fn syslog_prefixes() {
    let check_strip = |line: &str, expected: &str| {
        assert_eq!(strip_syslog_prefix(line), expected, "{line:?}");
    };
    check_strip("<4>[  123.456789] WARNING: x", "WARNING: x");
    check_strip("<4>[\t68764.975944]WARNING: x", "WARNING: x");
    check_strip("<30>[    1.0]  [<ffff>] f+0x1/0x2", " [<ffff>] f+0x1/0x2");
    check_strip("[    1.0] no level", "no level");
    check_strip("<3>no time", "no time");
    check_strip("plain", "plain");
    // Without a prefix (a serial console) the indent of an arm64 frame is the line's own.
    check_strip(
        " faulty_write+0x10/0x20 [faulty]",
        " faulty_write+0x10/0x20 [faulty]",
    );
    check_strip("  ESR = 0x96000045", "  ESR = 0x96000045");
    check_strip("<6>[    2.0][    T1] with caller id", "with caller id");
    check_strip("<6>[    2.0][  C12] cpu caller id", "cpu caller id");
    // A bracketed word is message text, not a timestamp.
    check_strip(
        "<3>[Hardware Error]: event severity: fatal",
        "[Hardware Error]: event severity: fatal",
    );
    check_strip("<3>[    1.0] [Hardware Error]: x", "[Hardware Error]: x");
    check_strip("<4", "");
    check_strip("<4>[ 1.0", "[ 1.0");
}

#[test]
fn lines_are_made_payload_safe() {
    assert_eq!(clean_line(b"a\tb\x1b[0m\xff\r"), "a\tb?[0m?");
    assert_eq!(
        clean_line(&vec![b'x'; MAX_LINE_LEN + 10]).len(),
        MAX_LINE_LEN
    );
    assert_eq!(clean_line("caf\u{e9}".as_bytes()), "caf\u{e9}");
}

#[test]
fn frame_functions() {
    let check_frame = |line: &str, expected: Option<&str>| {
        assert_eq!(frame_function(line), expected, "{line:?}");
    };
    check_frame(
        " [<ffffffff8148a996>] ? dump_stack+0x41/0x51",
        Some("? dump_stack"),
    );
    check_frame(
        " [<ffffffffa06c6273>] bond_set_rx_mode+0xb3/0xc0 [bonding]",
        Some("bond_set_rx_mode"),
    );
    check_frame(
        " <IRQ>  [<ffffffff816606a8>] dump_stack+0x19/0x1b",
        Some("dump_stack"),
    );
    check_frame(
        " <EOI>  [<ffffffff8108653e>] ? __hrtimer_start_range_ns+0x1be/0x400",
        Some("? __hrtimer_start_range_ns"),
    );
    check_frame(" <<EOE>>  [<ffffffff81000000>] f+0x1/0x2", Some("f"));
    check_frame(
        " [warn_on_slowpath+71/115] warn_on_slowpath+0x47/0x73",
        Some("warn_on_slowpath"),
    );
    check_frame(" ? _nv007312rm+0x7f8/0x938 [nvidia]", Some("? _nv007312rm"));
    check_frame(" nv_kern_open+0x4b4/0x800 [nvidia]", Some("nv_kern_open"));
    check_frame(" =======================", Some("======================="));
    check_frame(" 0xffffffffc0a1b2c3", Some("0xffffffffc0a1b2c3"));
    // Stack boundary markers alone on a line are not frames.
    for marker in [
        " <IRQ>", " </IRQ>", " <TASK>", " </TASK>", " <NMI>", " <#DF>", " <EOI>",
    ] {
        check_frame(marker, None);
    }
    check_frame(" [<ffffffff81000000>]", None);
    check_frame(" RIP: 0033:0x7f8b1c3f1a3b", None);
    check_frame(
        " RSP: 002b:00007ffd4b5f1c28 EFLAGS: 00000246 ORIG_RAX: 0000000000000010",
        None,
    );
    check_frame(" RIPPER: x+0x1/0x2", Some("RIPPER: x"));
    check_frame("  ", None);
}

#[test]
fn cpu_lines() {
    let check_cpu = |line: &str, version: Option<&str>, tainted: Option<&str>| {
        assert_eq!(parse_cpu_line(line), (version, tainted), "{line:?}");
    };
    check_cpu(
        "CPU: 2 PID: 0 Comm: swapper/2 Not tainted  3.10.4-100.fc18.x86_64 #1",
        Some("3.10.4-100.fc18.x86_64 #1"),
        Some("Not tainted"),
    );
    check_cpu(
        "CPU: 1 PID: 796 Comm: EMT Tainted: G        W  OE   4.2.0-rc2-satori #1",
        Some("4.2.0-rc2-satori #1"),
        Some("G        W  OE  "),
    );
    check_cpu(
        "Pid: 1059, comm: Xorg Tainted: PF          O 3.7.9-201.fc18.x86_64 #1 Apple Inc. MacBookPro6,2/Mac-F22586C8",
        Some("3.7.9-201.fc18.x86_64 #1 Apple Inc. MacBookPro6,2/Mac-F22586C8"),
        Some("PF          O 3."),
    );
    check_cpu(
        "CPU: 0 PID: 1 Comm: init Tainted: G W 6.1.0 #1",
        Some("6.1.0 #1"),
        Some("G W 6.1.0 #1"),
    );
    check_cpu(
        "CPU: 0 PID: 1 Comm: x Not tainted 6.1.0-rc1",
        None,
        Some("Not tainted"),
    );
    check_cpu("CPU: 0 PID: 1 Comm: x 5.0#1", None, None);
    check_cpu("CPU: 0 PID: 1 Comm: x Tainted: ", None, Some(""));
    check_cpu(
        "CPU: 3 PID: 2 Comm: é Tainted: ééééééééééééééééé 5 #1",
        Some("5 #1"),
        Some("éééééééééééééééé"),
    );
}

#[test]
fn registers_follow_the_c_parser() {
    let regs = |line: &str| {
        let mut found = Vec::new();
        parse_registers(line, &mut found);
        found
            .into_iter()
            .map(|(name, value)| match value {
                RegisterValue::Number(n) => (name, n),
                RegisterValue::Symbol(s) => panic!("{name}: symbol {s}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        regs("RAX: 0000000000000000 RBX: ffff880c3d27ce40 RCX: 000000000002f61d"),
        vec![
            ("RAX", 0),
            ("RBX", 0xffff880c3d27ce40_u64.min(i64::MAX as u64)),
            ("RCX", 0x2f61d)
        ]
    );
    assert_eq!(
        regs("RSP: 0018:ffff880c18757e60  EFLAGS: 00010286"),
        vec![("RSP", 0x7fffffffffffffff), ("EFLAGS", 0x10286)]
    );
    // The C parser stops at the first "(…)" group, and cannot read "0010:[<…>]".
    assert_eq!(
        regs("FS:  00007f58b7d7b740(0000) GS:ffff880c4fce0000(0000) knlGS:0"),
        vec![("FS", 0x7f58b7d7b740)]
    );
    assert_eq!(regs("RIP: 0010:[<ffffffff811ab4b0>]  [<ffffffff811ab4b0>] kmem_cache_alloc_trace+0x80/0x1f0"), vec![]);
    assert_eq!(regs("RIP: 0010:kmem_cache_alloc+0x7e/0x1c0"), vec![]);
    assert_eq!(
        regs(" RSP <ffff88022d0639b8>"),
        vec![("RSP", 0x7fffffffffffffff)]
    );
    assert_eq!(regs(" RSP <ffff8802"), vec![]);
    assert_eq!(regs("rdx: 12 rsi: 0"), vec![("RDX", 0x12), ("RSI", 0)]);
    assert_eq!(regs("Hardware name: Dell"), vec![]);
    assert_eq!(regs("CR2: 0000000000000118"), vec![("CR2", 0x118)]);
    assert_eq!(regs("RAX:"), vec![]);
    assert_eq!(regs("RAX: -1"), vec![("RAX", u64::MAX)]);
}

#[test]
fn strtoll_semantics() {
    assert_eq!(strtoll_hex(b"  1f zz", 0), (0x1f, 4));
    assert_eq!(strtoll_hex(b"0x10", 0), (0x10, 4));
    assert_eq!(strtoll_hex(b"0xg", 0), (0, 1));
    assert_eq!(strtoll_hex(b"zz", 0), (0, 0));
    assert_eq!(strtoll_hex(b" +7", 0), (7, 3));
    assert_eq!(
        strtoll_hex(b"-ffffffffffffffffff", 0),
        (i64::MIN as u64, 19)
    );
    assert_eq!(
        strtoll_hex(b"ffffffffffffffffffffffffffff", 0).0,
        i64::MAX as u64
    );
}

#[test]
fn stack_dump_ends_and_payload() {
    check(
        "<4>[ 1.0] BUG: unable to handle kernel NULL pointer dereference at 0000000000000010\n\
         <4>[ 1.0] Modules linked in: e1000e nvme\n\
         <4>[ 1.0] CPU: 3 PID: 42 Comm: kworker/3:1 Not tainted 4.4.0-1 #1 ACME Box\n\
         <4>[ 1.0] RSP: 0018:ffff880000000000  EFLAGS: 00010246\n\
         <4>[ 1.0] RAX: 0000000000000000 RBX: 0000000000000001\n\
         <4>[ 1.0] Call Trace:\n\
         <4>[ 1.0]  [<ffffffff81000001>] alpha+0x1/0x10\n\
         <4>[ 1.0]  [<ffffffff81000002>] ? beta+0x2/0x10 [mod]\n\
         <4>[ 1.0] Code: 48 8b 07\n\
         <4>[ 1.0]  [<ffffffff81000003>] ignored+0x3/0x10\n",
        &[(
            "org.clearlinux/kernel/bug",
            "Crash Report:\n\
             Reason: BUG: unable to handle kernel NULL pointer dereference at 0000000000000010\n\
             Kernel Version : 4.4.0-1 #1 ACME Box\n\
             Tainted : Not tainted\n\
             Modules : e1000e nvme\n\
             Backtrace :\n\
             Register EFLAGS: Non-zero\n\
             Register RSP: Non-zero\n\
             Register RBX: Non-zero\n\
             Register RAX: Zero\n\
             #1 alpha - [kernel]\n\
             #2 ? beta - [kernel]\n",
        )],
    );
}

#[test]
fn register_values_without_privacy_filters() {
    let found = parse_text(b"WARNING: x\nRAX: 00000000000000ab RBX: 0\n");
    let payload = found[0].payload(PayloadOptions {
        register_values: true,
    });
    assert_eq!(
        payload,
        "Crash Report:\nReason: WARNING: x\nRegister RBX: 0\nRegister RAX: ab\n"
    );
}

#[test]
fn back_to_back_oopses_are_all_reported() {
    // A WARNING: line ends the current oops and opens the next one.
    assert_eq!(
        reasons(
            "WARNING: one\n ------------[ cut here ]------------\nWARNING: two\nWARNING: three\n"
        ),
        ["WARNING: one", "WARNING: two", "WARNING: three"]
    );
    // The line ending a stack dump opens the next oops.
    assert_eq!(
        reasons(&klog("BUG: first\nCall Trace:\n [<1>] f+0x1/0x2\nkernel BUG at mm/x.c:1!\nCall Trace:\n g+0x1/0x2\n")),
        ["BUG: first", "kernel BUG at mm/x.c:1!"]
    );
    let found =
        parse_text(klog("BUG: first\nCall Trace:\n [<1>] f+0x1/0x2\nWARNING: x").as_bytes());
    assert_eq!(
        found[0].lines,
        ["BUG: first", "Call Trace:", " [<1>] f+0x1/0x2"]
    );
    assert_eq!(found[1].lines, ["WARNING: x"]);
    // "Unable to handle" ends an oops too; `Unable to handle kernel …` (arm64's fault
    // header) opens the next one.
    assert_eq!(
        reasons("RTNL: assertion failed\nx\nUnable to handle paging request\n"),
        ["RTNL: assertion failed"]
    );
    assert_eq!(
        reasons("RTNL: assertion failed\nx\nUnable to handle kernel paging request\n"),
        [
            "RTNL: assertion failed",
            "Unable to handle kernel paging request"
        ]
    );
}

#[test]
fn modern_traces_keep_their_frames() {
    let found = parse_text(
        klog(
            "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\n\
             Call Trace:\n \
             <TASK>\n \
             ? __warn+0x7d/0xc0\n \
             g+0x1/0x2\n \
             entry_SYSCALL_64_after_hwframe+0x63/0xcd\n \
             RIP: 0033:0x7f8b1c3f1a3b\n \
             Code: Unable to access opcode bytes at 0x7f8b1c3f1a11.\n \
             RSP: 002b:00007ffd4b5f1c28 EFLAGS: 00000246\n",
        )
        .as_bytes(),
    );
    let payload = found[0].payload(PayloadOptions::default());
    assert!(payload.ends_with(
        "Backtrace :\n#1 ? __warn - [kernel]\n#2 g - [kernel]\n#3 entry_SYSCALL_64_after_hwframe - [kernel]\n"
    ), "{payload}");
}

#[test]
fn end_trace_and_pending_oops() {
    assert_eq!(
        reasons("WARNING: a\nx\n---[ end trace 1234 ]---\ny\n"),
        ["WARNING: a"]
    );
    let found = parse_text(b"WARNING: a\nx\n---[ end trace 1234 ]---\n");
    assert_eq!(found[0].lines, ["WARNING: a", "x"]);
    // Input that ends inside an oops still reports it; so does a missing final newline.
    assert_eq!(reasons("noise\nBadness at x\nmore"), ["Badness at x"]);
    assert_eq!(
        parse_text(b"Badness at x\nmore")[0].lines,
        ["Badness at x", "more"]
    );
    assert!(parse_text(b"").is_empty());
    assert!(parse_text(b"nothing to see\n").is_empty());
}

#[test]
fn alsa_collects_through_warnings() {
    let found = parse_text(
        b"ALSA pcm.c:1: BUG: x\nWARNING: at y\nUnable to handle z\n---[ end trace ]---\n",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].classification(), "crash/kernel/bug");
    assert_eq!(found[0].lines.len(), 3);
}

#[test]
fn at_most_max_lines_per_oops() {
    let mut text = String::from("Badness at a\n");
    for i in 0..(MAX_LINES + 20) {
        text.push_str(&format!("line {i}\n"));
    }
    text.push_str("Badness at b\n");
    let found = parse_text(text.as_bytes());
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].lines.len(), MAX_LINES);
    assert_eq!(found[1].reason(), "Badness at b");
}

#[test]
fn bert_reports_hardware_error_lines() {
    check(
        "<6>[ 1.0] BERT: Error records from previous boot:\n\
         <3>[ 1.0] [Hardware Error]: event severity: fatal\n\
         <3>[ 1.0] [Hardware Error]:  Error 0, type: fatal\n\
         <4>[ 1.0] mce: [Hardware Error]: CPU 18: Machine Check: 0 Bank 5: aea0000000000108\n\
         <6>[ 1.1] pci 0000:00:00.0: [8086:1234] type 00\n\
         <3>[ 1.2] [Hardware Error]: not part of it\n",
        &[(
            "org.clearlinux/bert/debug",
            "Crash Report:\n\
             Reason: BERT: Error records from previous boot:\n\
             [Hardware Error]: event severity: fatal\n\
             [Hardware Error]:  Error 0, type: fatal\n\
             mce: [Hardware Error]: CPU 18: Machine Check: 0 Bank 5: aea0000000000108\n",
        )],
    );
}

#[test]
fn payload_is_bounded_at_a_line() {
    let mut text = String::from("WARNING: big\nCall Trace:\n");
    for i in 0..98 {
        text.push_str(&format!(
            " [<ffffffff81000000>] {}{i}+0x1/0x2\n",
            "f".repeat(200)
        ));
    }
    let found = parse_text(klog(&text).as_bytes());
    let payload = found[0].payload(PayloadOptions::default());
    assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
    assert!(payload.len() > MAX_PAYLOAD - 300);
    assert!(payload.ends_with(" - [kernel]\n"));
    assert!(libtelemetry::record::validate_payload(payload.as_bytes()).is_ok());
    // A single line longer than the bound is cut on a character boundary.
    let long = bound_payload(format!("Reason: {}", "é".repeat(MAX_PAYLOAD)));
    assert!(long.len() <= MAX_PAYLOAD && long.len() >= MAX_PAYLOAD - 1);
}

#[test]
fn kmsg_messages_are_not_prefix_stripped() {
    let mut p = OopsParser::new();
    assert!(p
        .push_message(b"BERT: Error records from previous boot:")
        .is_none());
    assert!(p
        .push_message(b"[Hardware Error]: event severity: fatal")
        .is_none());
    let done = p.push_message(b"next").unwrap();
    assert_eq!(done.lines[1], "[Hardware Error]: event severity: fatal");
    assert!(!p.is_collecting());
}

/// One line for each C pattern, in table order, with the C classification and severity.
const C_PATTERN_LINES: [(&str, &str, u32); 22] = [
    (
        "NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "sysctl table check failed: /kernel/foo .1.2 Unknown sysctl binary path",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "IRQ handler type mismatch for IRQ 7",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "ALSA sound/core/pcm_lib.c:154: BUG: stream = 1, pos = 0x1138",
        "crash/kernel/bug",
        2,
    ),
    (
        "irq 16: nobody cared (try booting with the \"irqpoll\" option)",
        "crash/kernel/warning",
        2,
    ),
    (
        "WARNING: CPU: 1 PID: 796 at kernel/sched/core.c:2342 f+0x30/0x70",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "general protection fault: 0000 [#1] SMP",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "BUG: unable to handle kernel NULL pointer dereference at 0000000000000118",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "BUG: soft lockup - CPU#2 stuck for 23s! [kworker/2:1:131]",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "kernel BUG at mm/mmap.c:2156!",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "general protection fault:0000 [#1]",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "do_IRQ: stack overflow: 512",
        "org.clearlinux/kernel/stackoverflow",
        4,
    ),
    (
        "RTNL: assertion failed at net/core/dev.c (4523)",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "Eeek! page_mapcount(page) went negative! (-1)",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "near stack overflow (cur:f2c14000,sp:f2c14180)",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "double fault: 0000 [#3] SMP",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "Badness at drivers/char/tty_ldisc.c:738",
        "org.clearlinux/kernel/bug",
        4,
    ),
    (
        "list_del corruption. next->prev should be ffff8800, but was dead000000200200",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "list_add corruption. prev->next should be next (ffff8800), but was (null).",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "ACPI Error: No handler for Region [EC__] (ffff880) [EmbeddedControl]",
        "org.clearlinux/kernel/warning",
        2,
    ),
    (
        "Kernel panic - not syncing: Fatal exception",
        "org.clearlinux/kernel/panic",
        4,
    ),
    (
        "BERT: Error records from previous boot:",
        "org.clearlinux/bert/debug",
        2,
    ),
];

#[test]
fn c_pattern_lines_keep_their_c_classification() {
    for (i, (line, classification, severity)) in C_PATTERN_LINES.iter().enumerate() {
        let pattern = match_start(line).unwrap_or_else(|| panic!("no match: {line:?}"));
        assert!(std::ptr::eq(pattern, &PATTERNS[i]), "{line:?}");
        assert_eq!(pattern.classification, *classification, "{line:?}");
        assert_eq!(pattern.severity, *severity, "{line:?}");
        assert_eq!(pattern.rules, Rules::C, "{line:?}");
    }
    // Lines that fit a C pattern and an extension pattern keep the C one.
    for line in [
        "BUG: KASAN: slab-use-after-free in nfc_llcp_find_local+0x4e/0x90",
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "BUG: unable to handle page fault for address: ffffc90000a3f000",
        "WARNING: CPU: 0 PID: 1 at kernel/watchdog.c:1 watchdog_overflow_callback+0x1/0x2",
    ] {
        let pattern = match_start(line).unwrap();
        assert!(
            PATTERNS.iter().any(|p| std::ptr::eq(p, pattern)),
            "{line:?}"
        );
    }
}

#[test]
fn extension_lines_match_their_class() {
    const BUG4: (&str, u32) = ("org.clearlinux/kernel/bug", 4);
    const WARN2: (&str, u32) = ("org.clearlinux/kernel/warning", 2);
    let cases: [(&str, usize, (&str, u32)); 25] = [
        (
            "Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI",
            0,
            BUG4,
        ),
        ("Oops: Oops: 0002 [#1] SMP", 0, BUG4),
        ("Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", 0, BUG4),
        (
            "general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] SMP NOPTI",
            1,
            BUG4,
        ),
        (
            "general protection fault, maybe for address 0x0: 0000 [#1] SMP KASAN",
            1,
            BUG4,
        ),
        (
            "watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [kworker/3:1:123]",
            2,
            BUG4,
        ),
        ("watchdog: Watchdog detected hard LOCKUP on cpu 1", 3, BUG4),
        ("watchdog: CPU2: Watchdog detected hard LOCKUP on cpu 1", 3, BUG4),
        (
            "NMI watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [swapper/0:0]",
            4,
            BUG4,
        ),
        ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 2", 5, BUG4),
        (
            "INFO: task kworker/u8:2:123 blocked for more than 122 seconds.",
            6,
            WARN2,
        ),
        ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", 7, WARN2),
        ("rcu: INFO: rcu_sched self-detected stall on CPU", 7, WARN2),
        (
            "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 3-... } 21002 jiffies s: 1234 root: 0x8/.",
            7,
            WARN2,
        ),
        ("INFO: rcu_sched detected stalls on CPUs/tasks:", 8, WARN2),
        ("INFO: rcu_preempt self-detected stall on CPU", 8, WARN2),
        (
            "UBSAN: array-index-out-of-bounds in drivers/foo.c:123:45",
            9,
            WARN2,
        ),
        ("UBSAN: Undefined behaviour in lib/foo.c:12:3", 9, WARN2),
        (
            "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
            10,
            BUG4,
        ),
        (
            "Unable to handle kernel paging request at virtual address ffff800001382ff0",
            10,
            BUG4,
        ),
        (
            "Unable to handle kernel execute from non-executable memory at virtual address ffffbd2fe97a3ba0",
            10,
            BUG4,
        ),
        ("Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP", 11, BUG4),
        ("Internal error: Oops: 96000044 [#1] SMP", 11, BUG4),
        (
            "Internal error: Oops - Undefined instruction: 0000000002000000 [#1] PREEMPT SMP",
            11,
            BUG4,
        ),
        (
            "Internal error: synchronous external abort: 0000000096000210 [#1] SMP",
            11,
            BUG4,
        ),
    ];
    for (line, index, (classification, severity)) in cases {
        let pattern = match_start(line).unwrap_or_else(|| panic!("no match: {line:?}"));
        assert!(
            std::ptr::eq(pattern, &EXTENSION_PATTERNS[index]),
            "{line:?}"
        );
        assert_eq!(pattern.classification, classification, "{line:?}");
        assert_eq!(pattern.severity, severity, "{line:?}");
        assert_ne!(pattern.rules, Rules::C, "{line:?}");
    }
    // Every extension pattern is exercised above.
    let used: std::collections::BTreeSet<usize> = cases.iter().map(|c| c.1).collect();
    assert_eq!(used.len(), EXTENSION_PATTERNS.len());
    for line in [
        // Inside a hung-task report: the task holding the lock, not a new report.
        "INFO: task cat:115 is blocked on a mutex likely owned by task cat:114.",
        "NMI watchdog: enabled on all CPUs, permanently consumes one hw-PMU counter.",
        "watchdog: watchdog0: watchdog did not stop!",
        "rcu: rcu_preempt kthread starved for 10500 jiffies! g781457 f0x0",
        "INFO: rcu_tasks grace period took too long",
        // A user-space fault, not a kernel oops.
        "traps: a.out[123] general protection fault ip:401136 sp:7ffd4 error:0 in a.out",
        "Oops#1 Part1",
        "Oops:0000",
        " Oops: indented",
        "ubsan: lower case",
        "Unable to handle",
        "internal error: lower case",
    ] {
        assert_eq!(match_start(line), None, "{line:?}");
    }
}

#[test]
fn oops_line_after_a_bug_line_stays_in_that_oops() {
    let found = parse_text(
        klog(
            "BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
             #PF: supervisor write access in kernel mode\n\
             #PF: error_code(0x0002) - not-present page\n\
             PGD 0 P4D 0\n\
             Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI\n\
             CPU: 0 UID: 0 PID: 77 Comm: insmod Tainted: G           O       6.12.1 #1\n\
             RIP: 0010:f+0x1/0x2 [m]\n\
             Call Trace:\n \
             <TASK>\n \
             f+0x1/0x2 [m]\n \
             do_one_initcall+0x5a/0x320\n \
             </TASK>\n\
             Modules linked in: m(O)\n\
             CR2: 0000000000000008\n\
             ---[ end trace 0000000000000000 ]---\n",
        )
        .as_bytes(),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].classification(), "org.clearlinux/kernel/bug");
    assert_eq!(found[0].lines[4], "Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI");
    // Without the BUG line (a pstore dump that lost it), the Oops line opens the oops.
    assert_eq!(
        reasons(&klog(
            "PGD 0 P4D 0\nOops: 0000 [#1] SMP\nCPU: 0 PID: 1 Comm: x\n"
        )),
        ["Oops: 0000 [#1] SMP"]
    );
}

#[test]
fn die_reports_keep_what_follows_the_trace() {
    check(
        &klog(
            "Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP\n\
             CPU: 5 PID: 2345 Comm: a.out Tainted: G           OE      6.12.0 #1\n\
             RIP: 0010:g+0x1/0x2\n\
             RSP: 0018:ffffa9a8c1e4fd40 EFLAGS: 00010246\n\
             RAX: dead000000000122 RBX: 0000000000000000\n\
             Call Trace:\n \
             <TASK>\n \
             ? die_addr+0x37/0xa0\n \
             g+0x1/0x2\n \
             entry_SYSCALL_64_after_hwframe+0x77/0x7f\n\
             RIP: 0033:0x7f3c2b27cef9\n\
             Code: ff ff c3 66 2e 0f 1f 84 00\n\
             RSP: 002b:00007f3c2a1fe0c8 EFLAGS: 00000246 ORIG_RAX: 000000000000002e\n\
             RAX: ffffffffffffffda RBX: 00007f3c2b3abf80\n \
             </TASK>\n\
             Modules linked in: m1 m2\n \
             m3 m4\n\
             CR2: 00007f3c2a1fdff8\n\
             ---[ end trace 0000000000000000 ]---\n\
             RIP: 0010:g+0x1/0x2\n",
        ),
        &[(
            "org.clearlinux/kernel/bug",
            "Crash Report:\n\
             Reason: Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP\n\
             Kernel Version : 6.12.0 #1\n\
             Tainted : G           OE  \n\
             Modules : m1 m2\n\
             Backtrace :\n\
             Register EFLAGS: Non-zero\n\
             Register RSP: Non-zero\n\
             Register RBX: Zero\n\
             Register RAX: Non-zero\n\
             #1 ? die_addr - [kernel]\n\
             #2 g - [kernel]\n\
             #3 entry_SYSCALL_64_after_hwframe - [kernel]\n",
        )],
    );
    // Anything else after the trace ends the report.
    let found = parse_text(
        klog("general protection fault, x: 0000 [#1] SMP\nCall Trace:\n g+0x1/0x2\nModules linked in: m\nnext message\n")
            .as_bytes(),
    );
    assert_eq!(
        found[0].lines,
        [
            "general protection fault, x: 0000 [#1] SMP",
            "Call Trace:",
            " g+0x1/0x2",
            "Modules linked in: m"
        ]
    );
}

#[test]
fn a_hung_task_report_is_one_record_per_task() {
    check(
        &klog(
            "INFO: task cat:115 blocked for more than 122 seconds.\n      \
             Not tainted 6.16.0 #5\n\
             \"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.\n\
             task:cat             state:D stack:0     pid:115   tgid:115   ppid:106\n\
             Call Trace:\n \
             <TASK>\n \
             __schedule+0x3c0/0xd50\n \
             __mutex_lock+0x4e9/0x9b0\n \
             </TASK>\n\
             INFO: task cat:115 is blocked on a mutex likely owned by task cat:114.\n\
             task:cat             state:S stack:0     pid:114   tgid:114   ppid:106\n\
             Call Trace:\n \
             <TASK>\n \
             msleep+0x2b/0x40\n \
             </TASK>\n\
             INFO: task dd:200 blocked for more than 122 seconds.\n      \
             Not tainted 6.16.0 #5\n\
             Call Trace:\n \
             io_schedule+0x46/0x70\n",
        ),
        &[
            (
                "org.clearlinux/kernel/warning",
                "Crash Report:\n\
                 Reason: INFO: task cat:115 blocked for more than 122 seconds.\n\
                 Kernel Version : 6.16.0 #5\n\
                 Tainted : Not tainted\n\
                 Backtrace :\n\
                 #1 __schedule - [kernel]\n\
                 #2 __mutex_lock - [kernel]\n",
            ),
            (
                "org.clearlinux/kernel/warning",
                "Crash Report:\n\
                 Reason: INFO: task dd:200 blocked for more than 122 seconds.\n\
                 Kernel Version : 6.16.0 #5\n\
                 Tainted : Not tainted\n\
                 Backtrace :\n\
                 #1 io_schedule - [kernel]\n",
            ),
        ],
    );
}

#[test]
fn an_rcu_stall_with_several_traces_is_one_record() {
    let mut text = String::from(
        "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n\
         rcu: \t2-....: (1 GPs behind) idle=8bc4/1/0x4000000000000000\n\
         NMI backtrace for cpu 2\n\
         CPU: 2 PID: 31702 Comm: fio Not tainted 6.5.0 #14\n\
         Call Trace:\n \
         <NMI>\n \
         ? nmi_cpu_backtrace+0xca/0x130\n \
         </NMI>\n \
         <TASK>\n \
         scsi_queue_rq+0x22f/0x6a0\n \
         </TASK>\n",
    );
    for cpu in 0..40 {
        text.push_str(&format!(
            "NMI backtrace for cpu {cpu}\nCPU: {cpu} PID: 0 Comm: swapper Not tainted 6.5.0 #14\nCall Trace:\n <TASK>\n cpu_idle{cpu}+0x1/0x2\n </TASK>\n"
        ));
    }
    let found = parse_text(klog(&text).as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].lines.len(), 11);
    let payload = found[0].payload(PayloadOptions::default());
    assert!(
        payload.ends_with(
            "Backtrace :\n#1 ? nmi_cpu_backtrace - [kernel]\n#2 scsi_queue_rq - [kernel]\n"
        ),
        "{payload}"
    );
}

#[test]
fn extension_oopses_end_at_the_next_start() {
    // A report cut before its trace does not swallow the next one.
    assert_eq!(
        reasons(&klog(
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]\nModules linked in: m\n\
             Kernel panic - not syncing: softlockup: hung tasks\n"
        )),
        [
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]",
            "Kernel panic - not syncing: softlockup: hung tasks"
        ]
    );
    assert_eq!(
        reasons(&klog(
            "UBSAN: shift-out-of-bounds in x.c:1:2\nshift exponent 64 is too large\nrcu: INFO: rcu_sched self-detected stall on CPU\n"
        )),
        [
            "UBSAN: shift-out-of-bounds in x.c:1:2",
            "rcu: INFO: rcu_sched self-detected stall on CPU"
        ]
    );
    // C patterns keep the C rule: only their end conditions end them.
    assert_eq!(
        reasons(&klog("Badness at x.c:1\nBUG: y\nUBSAN: z\n")),
        ["Badness at x.c:1"]
    );
}

#[test]
fn extension_oopses_are_bounded() {
    // No trace and no end: the 100-line cap.
    let mut text = String::from("rcu: INFO: rcu_sched self-detected stall on CPU\n");
    for i in 0..(MAX_LINES + 50) {
        text.push_str(&format!("rcu: \t{i}-....: (1 GPs behind)\n"));
    }
    let found = parse_text(klog(&text).as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].lines.len(), MAX_LINES);
    // A die() report whose tail never ends.
    let mut text =
        String::from("Oops: 0000 [#1] SMP\nCall Trace:\n f+0x1/0x2\nModules linked in: a\n");
    for i in 0..(MAX_LINES + 50) {
        text.push_str(&format!(" mod{i}\n"));
    }
    let found = parse_text(klog(&text).as_bytes());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].lines.len(), MAX_LINES);
    let payload = found[0].payload(PayloadOptions::default());
    assert!(
        payload.ends_with("Modules : a\nBacktrace :\n#1 f - [kernel]\n"),
        "{payload}"
    );
}

#[test]
fn kmsg_messages_match_extension_patterns() {
    let mut p = OopsParser::new();
    for line in [
        "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [a:1]",
        "CPU: 1 PID: 1 Comm: a Not tainted 6.9.0 #1",
        "Call Trace:",
        " <TASK>",
        " spin+0x1/0x2",
        " </TASK>",
    ] {
        assert!(p.push_message(line.as_bytes()).is_none());
    }
    let done = p.push_message(b"next").unwrap();
    assert_eq!(done.classification(), "org.clearlinux/kernel/bug");
    assert!(done.payload(PayloadOptions::default()).ends_with(
        "Kernel Version : 6.9.0 #1\nTainted : Not tainted\nBacktrace :\n#1 spin - [kernel]\n"
    ));
}

#[test]
fn arm64_register_lines() {
    let regs = |line: &'static str| {
        let mut found = Vec::new();
        let matched = parse_arm64_registers(line, &mut found);
        // Pushed for the caller's final reversal: undo it to read them as printed.
        found.reverse();
        (matched, found)
    };
    use RegisterValue::{Number, Symbol};
    assert_eq!(
        regs("pc : mutex_lock+0x24/0x64"),
        (true, vec![("pc", Symbol("mutex_lock+0x24/0x64"))])
    );
    assert_eq!(
        regs("lr : vc4_atomic_commit_tail+0x6f8/0x920 [vc4]"),
        (
            true,
            vec![("lr", Symbol("vc4_atomic_commit_tail+0x6f8/0x920 [vc4]"))]
        )
    );
    assert_eq!(
        regs("sp : ffffffc00aadbaf0"),
        (true, vec![("sp", Number(0xffffffc00aadbaf0))])
    );
    assert_eq!(
        regs("pstate: 60000005 (nZCv daif -PAN -UAO -TCO -DIT -SSBS BTYPE=--)"),
        (true, vec![("pstate", Number(0x60000005))])
    );
    assert_eq!(
        regs("x11: 0000000000000139 x10: ffffffc009e4ce78 x9 : ffffffc009d9ce78"),
        (
            true,
            vec![
                ("x11", Number(0x139)),
                ("x10", Number(0xffffffc009e4ce78)),
                ("x9", Number(0xffffffc009d9ce78))
            ]
        )
    );
    // 4.x: addresses, several registers on one line.
    assert_eq!(
        regs("pc : [<ffffff8000ef0024>] lr : [<ffffff8000ef0018>] pstate: 40000145"),
        (
            true,
            vec![
                ("pc", Number(0xffffff8000ef0024)),
                ("lr", Number(0xffffff8000ef0018)),
                ("pstate", Number(0x40000145))
            ]
        )
    );
    // Cut short: what was read stays.
    assert_eq!(regs("x2 : 0000000000000"), (true, vec![("x2", Number(0))]));
    for line in [
        "x86: Booting SMP configuration:",
        "x31: 0",
        "x1a: 0",
        "pc: not hex",
        "Hardware name: Raspberry Pi 4 Model B Rev 1.5 (DT)",
        "RAX: 0000000000000000",
        "sp :",
    ] {
        assert_eq!(regs(line), (false, vec![]), "{line:?}");
    }
}

#[test]
fn arm64_fault_and_die_report_is_one_oops() {
    let input = klog(
        "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
Mem abort info:
  ESR = 0x0000000096000006
  EC = 0x25: DABT (current EL), IL = 32 bits
[0000000000000008] pgd=0000000000000000, p4d=0000000000000000
Internal error: Oops: 0000000096000006 [#1] PREEMPT SMP
Modules linked in: foo(O) bar
CPU: 1 PID: 264 Comm: insmod Tainted: G           O       6.6.31 #1
Hardware name: QEMU KVM Virtual Machine, BIOS 0.0.0 02/06/2015
pstate: 60400005 (nZCv daif +PAN -UAO -TCO -DIT -SSBS BTYPE=--)
pc : foo_init+0x24/0x50 [foo]
lr : do_one_initcall+0x4c/0x2d0
sp : ffff800082f3bb70
x1 : 0000000000000000 x0 : 0000000000000008
Call trace:
 foo_init+0x24/0x50 [foo] (P)
 do_one_initcall+0x4c/0x2d0
 el0t_64_sync+0x190/0x198
Code: d2800001 f9400000 (b9400000)
---[ end trace 0000000000000000 ]---
Internal error: Oops: 0000000096000006 [#2] PREEMPT SMP
Call trace:
 bar+0x4/0x8
",
    );
    check(
        &input,
        &[
            (
                "org.clearlinux/kernel/bug",
                "Crash Report:
Reason: Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
Kernel Version : 6.6.31 #1
Tainted : G           O   
Modules : foo(O) bar
Backtrace :
Register pstate: Non-zero
Register pc: foo_init+0x24/0x50 [foo]
Register lr: do_one_initcall+0x4c/0x2d0
Register sp: Non-zero
Register x1: Zero
Register x0: Non-zero
#1 foo_init - [kernel]
#2 do_one_initcall - [kernel]
#3 el0t_64_sync - [kernel]
",
            ),
            (
                "org.clearlinux/kernel/bug",
                "Crash Report:
Reason: Internal error: Oops: 0000000096000006 [#2] PREEMPT SMP
Backtrace :
#1 bar - [kernel]
",
            ),
        ],
    );
}

#[test]
fn arm64_call_trace_opens_the_stack_dump_of_c_patterns() {
    let input = klog(
        "WARNING: CPU: 0 PID: 1 at drivers/foo.c:12 foo+0x10/0x20
CPU: 0 PID: 1 Comm: swapper/0 Not tainted 5.15.0 #1
pc : foo+0x10/0x20
Call trace:
 foo+0x10/0x20
 kernel_init+0x24/0x12c
---[ end trace 1234 ]---
",
    );
    check(
        &input,
        &[(
            "org.clearlinux/kernel/warning",
            "Crash Report:
Reason: WARNING: CPU: 0 PID: 1 at drivers/foo.c:12 foo+0x10/0x20
Kernel Version : 5.15.0 #1
Tainted : Not tainted
Backtrace :
Register pc: foo+0x10/0x20
#1 foo - [kernel]
#2 kernel_init - [kernel]
",
        )],
    );
}
