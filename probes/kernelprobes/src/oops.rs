//! Kernel oops detection and the crash-report payload. No I/O: callers feed lines and get
//! back complete [`Oops`] values.
//!
//! The start patterns, collection rules and payload format of the C client's
//! `oops_parser.c` (spec §11.4) are kept, so a server sees the same payloads for what the C
//! client reported. Two tables of start patterns are tried in order, the first match
//! winning:
//!
//! * [`PATTERNS`], the 22 patterns of the C client, unchanged and first, so every line the C
//!   client recognised is classified exactly as before, with the C collection rules and the
//!   C payload;
//! * [`EXTENSION_PATTERNS`], the headers of newer kernels that none of those match:
//!   `Oops: ` (6.10+ prefixes every x86 oops header with it) and
//!   `general protection fault, ` (5.x–6.9) as `kernel/bug` 4; `watchdog: BUG:` (soft lockup)
//!   and `watchdog: … Watchdog detected hard LOCKUP` (4.x `NMI watchdog: ` too) as `kernel/bug`
//!   4; hung tasks (`INFO: task … blocked for more than`), RCU stalls (`rcu: INFO: `, 4.18 and
//!   older `INFO: rcu_… stall`) and `UBSAN: ` as `kernel/warning` 2;
//!   arm64's fault and die headers (`Unable to handle kernel …`, `Internal error: …`) as
//!   `kernel/bug` 4.
//!
//! arm64 reports (5.x, 6.x) differ from x86 in three ways the parser knows: the stack dump
//! opens with `Call trace:` (lower-case `t`; accepted for every pattern, so an arm64
//! `WARNING:` or `kernel BUG at` keeps its frames under the C rules too), frames are
//! ` function+0x24/0x50 [module]` (6.14+ may add ` (P)`/` (L)`), and the registers are
//! `pc : symbol+off/size`, `lr : …`, `sp : …`, `pstate: …` and `x29: … x28: …` lines: `pc`
//! and `lr` are reported as their symbol (kernel text, not data), the others as
//! `Zero`/`Non-zero` like the x86 ones. A fault header and the `Internal error: Oops: …`
//! line after it are one oops; the die report ends at its `Code:` line, before the
//! `Kernel panic - not syncing: Oops: Fatal exception` it may cause (a record of its own).
//!
//! An extension oops ends, besides the C end conditions, at any line that opens an oops, so
//! the reports of separate events are never merged. A report of the x86 `die()` path
//! (`Oops: `, `general protection fault, `) goes on after its kernel frames through the
//! user-space registers, `Modules linked in:` and `CR2:` lines the kernel prints there since
//! 5.x, up to `[ end trace`. The payload of an extension oops takes its frames from the first
//! `Call Trace:` block (a hung-task or RCU-stall report may print several; the first is the
//! stalled task or CPU, and the oops ends with it), registers from the lines before it, the
//! kernel version and taint from the first `CPU:`/`PID:` line or the indented
//! `Not tainted`/`Tainted:` line of a hung-task report, and the module list from anywhere.
//! A C pattern keeps the C rules even for newer output: a 5.x+ page fault (`BUG: kernel NULL
//! pointer dereference`, then `Oops: …`) is one oops, but ends at the module list printed
//! after its trace, so its payload has no `Modules` line.
//!
//! Fixes of C behaviour, for both tables:
//!
//! * the line that ends one oops is checked again as the start of the next one, so
//!   back-to-back oopses are all reported (C dropped it, losing the second oops);
//! * an oops still being collected when the input ends is reported by [`OopsParser::finish`]
//!   (C waited forever for a terminating line);
//! * the payload is cut at a line boundary to at most [`MAX_PAYLOAD`] bytes, which the
//!   daemon accepts (C cut to 8191 bytes, which the C daemon still dropped);
//! * stack-boundary markers on a line of their own (`<IRQ>`, `</IRQ>`, `<TASK>`,
//!   `</TASK>`, …) neither end a stack dump (C ended it there, as the line is shorter than
//!   8 characters, so 4.10+ traces lost their frames) nor count as frames, and the
//!   user-space register lines 5.x kernels print inside a trace are not frames;
//! * a syslog-style line loses its `<N>` level and `[ seconds]` timestamp (and a
//!   `[  T123]` caller id) with the space after them, but a bracketed text that is not a
//!   timestamp (such as `[Hardware Error]:`) is kept, and a line without a prefix (a
//!   serial-console capture) keeps its first space, the indent of its arm64 frames;
//! * every line is bounded to [`MAX_LINE_LEN`] bytes and made valid payload text (invalid
//!   UTF-8 and control characters become `?`), so a record is never refused.
//!
//! Architecture Invariant: nothing here reads a file, a clock or the environment; the
//! probes decide where lines come from and where payloads go.

use libtelemetry::record::MAX_PAYLOAD;

/// An oops holds at most this many lines (the C parser's `MAX_LINES`).
pub const MAX_LINES: usize = 100;
/// Bytes kept of one input line; the rest of a longer line is dropped.
pub const MAX_LINE_LEN: usize = 4096;
/// Characters of taint flags reported after `Tainted: ` (C's `NUM_TAINTED_FLAGS`).
const TAINT_FLAGS_LEN: usize = 16;

/// How a start pattern is matched against a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// The line starts with the pattern text (case-sensitive).
    Prefix,
    /// The line starts with the pattern text and, after it, contains this text too
    /// (both case-sensitive).
    PrefixContaining(&'static str),
    /// The C regex `^ALSA (.*): BUG(.*)`, case-insensitive.
    AlsaBug,
    /// The C regex `irq [[:digit:]]+: nobody cared` anywhere in the line, case-insensitive.
    IrqNobodyCared,
}

/// How the lines after the first one are collected, and how the payload reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// The C client's end conditions and payload (every pattern of [`PATTERNS`]).
    C,
    /// The C end conditions, and a line that opens an oops ends this one too; the payload
    /// reads the first `Call Trace:` block (see the module documentation).
    Trace,
    /// [`Rules::Trace`], but what x86 `die()` prints after the kernel frames (user-space
    /// registers, `Modules linked in:`, `CR2:`) still belongs to the oops, up to
    /// `[ end trace`.
    Die,
    /// [`Rules::Trace`] for arm64's `die()`: a fault header (`Unable to handle kernel …`)
    /// keeps the `Internal error: …` line that follows it, so the fault and its die report
    /// are one oops; the stack dump ends at the `Code:` line printed after it.
    Arm64,
}

/// One start pattern: what opens an oops, and how the record is classified.
#[derive(Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern text: as the C client spelled it (the regex source for regex patterns),
    /// or the prefix of an extension pattern.
    pub text: &'static str,
    pub matcher: Matcher,
    pub classification: &'static str,
    pub severity: u32,
    pub rules: Rules,
}

const WARNING: &str = "org.clearlinux/kernel/warning";
const BUG: &str = "org.clearlinux/kernel/bug";

const fn prefix(text: &'static str, classification: &'static str, severity: u32) -> Pattern {
    Pattern {
        text,
        matcher: Matcher::Prefix,
        classification,
        severity,
        rules: Rules::C,
    }
}

/// An extension pattern: `text` starts the line, `containing` (if not empty) follows it.
const fn extension(
    text: &'static str,
    containing: &'static str,
    classification: &'static str,
    severity: u32,
    rules: Rules,
) -> Pattern {
    Pattern {
        text,
        matcher: if containing.is_empty() {
            Matcher::Prefix
        } else {
            Matcher::PrefixContaining(containing)
        },
        classification,
        severity,
        rules,
    }
}

/// The 22 start patterns, tried in this order; the first match wins.
pub static PATTERNS: [Pattern; 22] = [
    prefix("NETDEV WATCHDOG: ", WARNING, 2),
    prefix("sysctl table check failed: ", WARNING, 2),
    prefix("IRQ handler type mismatch for IRQ", WARNING, 2),
    Pattern {
        text: "^ALSA (.*): BUG(.*)",
        matcher: Matcher::AlsaBug,
        classification: "crash/kernel/bug",
        severity: 2,
        rules: Rules::C,
    },
    Pattern {
        text: "irq [[:digit:]]+: nobody cared",
        matcher: Matcher::IrqNobodyCared,
        classification: "crash/kernel/warning",
        severity: 2,
        rules: Rules::C,
    },
    prefix("WARNING: ", WARNING, 2),
    prefix("general protection fault: ", BUG, 4),
    prefix("BUG: unable to handle kernel ", BUG, 4),
    prefix("BUG:", BUG, 4),
    prefix("kernel BUG at", BUG, 4),
    prefix("general protection fault:", BUG, 4),
    prefix(
        "do_IRQ: stack overflow:",
        "org.clearlinux/kernel/stackoverflow",
        4,
    ),
    prefix("RTNL: assertion failed", WARNING, 2),
    prefix("Eeek! page_mapcount(page) went negative!", BUG, 4),
    prefix("near stack overflow (cur:", BUG, 4),
    prefix("double fault", BUG, 4),
    prefix("Badness", BUG, 4),
    prefix("list_del corruption.", WARNING, 2),
    prefix("list_add corruption.", WARNING, 2),
    prefix("ACPI Error:", WARNING, 2),
    prefix(
        "Kernel panic - not syncing:",
        "org.clearlinux/kernel/panic",
        4,
    ),
    prefix(
        "BERT: Error records from previous boot:",
        "org.clearlinux/bert/debug",
        2,
    ),
];

/// Headers of newer kernels that no C pattern matches, tried after [`PATTERNS`].
pub static EXTENSION_PATTERNS: [Pattern; 12] = [
    // x86 die() since 6.10: `Oops: <trap>: <code> [#n]`, e.g. `Oops: Oops: 0002 [#1] SMP`.
    extension("Oops: ", "", BUG, 4, Rules::Die),
    // 5.x to 6.9: `general protection fault, probably for non-canonical address 0x…: 0000`.
    extension("general protection fault, ", "", BUG, 4, Rules::Die),
    // 4.13+ soft lockup: `watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [comm:pid]`.
    extension("watchdog: BUG:", "", BUG, 4, Rules::Trace),
    // `watchdog: Watchdog detected hard LOCKUP on cpu 1`; 6.5+ `watchdog: CPU2: Watchdog …`.
    extension(
        "watchdog: ",
        "Watchdog detected hard LOCKUP",
        BUG,
        4,
        Rules::Trace,
    ),
    // The same two before 4.13.
    extension("NMI watchdog: BUG:", "", BUG, 4, Rules::Trace),
    extension(
        "NMI watchdog: ",
        "Watchdog detected hard LOCKUP",
        BUG,
        4,
        Rules::Trace,
    ),
    // `INFO: task kworker/u8:2:123 blocked for more than 122 seconds.`, but not the
    // `INFO: task x:1 is blocked on a mutex likely owned by task y:2.` inside that report.
    extension(
        "INFO: task ",
        " blocked for more than ",
        WARNING,
        2,
        Rules::Trace,
    ),
    // `rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:`, `… self-detected stall on
    // CPU`, `… detected expedited stalls …`: every `rcu: INFO: ` line is a stall header.
    extension("rcu: INFO: ", "", WARNING, 2, Rules::Trace),
    // The same before 4.19, without the `rcu: ` prefix.
    extension("INFO: rcu_", " stall", WARNING, 2, Rules::Trace),
    // `UBSAN: array-index-out-of-bounds in drivers/foo.c:123:45`.
    extension("UBSAN: ", "", WARNING, 2, Rules::Trace),
    // arm64 faults: `Unable to handle kernel NULL pointer dereference at virtual address …`,
    // `… paging request at …`, `… execute from non-executable memory at …`, `… access to
    // user memory outside uaccess routines at …`; `Internal error: Oops: …` follows.
    extension("Unable to handle kernel ", "", BUG, 4, Rules::Arm64),
    // arm64 die() on its own: `Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP`
    // (5.x prints the ESR with 8 digits), `Internal error: Oops - BUG: …` (after `kernel BUG
    // at`, which the C pattern already holds), `… Oops - Undefined instruction: …`,
    // `Internal error: synchronous external abort: …`, `… SP/PC alignment exception: …`.
    extension("Internal error: ", "", BUG, 4, Rules::Arm64),
];

impl Pattern {
    /// Whether `line` (already stripped of its syslog prefix) opens an oops of this kind.
    pub fn matches(&self, line: &str) -> bool {
        match self.matcher {
            Matcher::Prefix => line.starts_with(self.text),
            Matcher::PrefixContaining(needle) => line
                .strip_prefix(self.text)
                .is_some_and(|rest| rest.contains(needle)),
            Matcher::AlsaBug => {
                starts_with_ignore_case(line, "ALSA ") && find_ignore_case(&line[5..], ": BUG")
            }
            Matcher::IrqNobodyCared => irq_nobody_cared(line),
        }
    }

    /// The ALSA pattern keeps collecting through `WARNING:` lines.
    fn is_alsa(&self) -> bool {
        self.matcher == Matcher::AlsaBug
    }

    /// BERT reports are the `[Hardware Error]:` lines that follow, not a stack dump.
    fn is_bert(&self) -> bool {
        self.text.starts_with("BERT:")
    }
}

/// The first pattern that `line` starts an oops for: the C patterns first, then the
/// extension patterns.
pub fn match_start(line: &str) -> Option<&'static Pattern> {
    PATTERNS
        .iter()
        .chain(EXTENSION_PATTERNS.iter())
        .find(|p| p.matches(line))
}

/// A complete oops: its pattern and its lines (the first is the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oops {
    pub pattern: &'static Pattern,
    pub lines: Vec<String>,
}

/// What goes into a payload beyond the C defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadOptions {
    /// Print register values in hex instead of `Zero`/`Non-zero` (only when the host has
    /// opted out of privacy filters).
    pub register_values: bool,
}

impl Oops {
    /// The first line of the oops.
    pub fn reason(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    pub fn classification(&self) -> &'static str {
        self.pattern.classification
    }

    pub fn severity(&self) -> u32 {
        self.pattern.severity
    }

    /// The crash report sent as the record payload, at most [`MAX_PAYLOAD`] bytes.
    pub fn payload(&self, options: PayloadOptions) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("Crash Report:\n");
        out.push_str("Reason: ");
        out.push_str(self.reason());
        out.push('\n');
        let rest = self.lines.get(1..).unwrap_or_default();
        if self.pattern.is_bert() {
            for line in rest {
                out.push_str(line);
                out.push('\n');
            }
        } else if self.pattern.rules == Rules::C {
            Backtrace::parse(rest).write(&mut out, options);
        } else {
            Backtrace::parse_first_trace(rest).write(&mut out, options);
        }
        bound_payload(out)
    }
}

/// Cut `payload` to at most [`MAX_PAYLOAD`] bytes, after its last complete line that fits.
fn bound_payload(mut payload: String) -> String {
    if payload.len() <= MAX_PAYLOAD {
        return payload;
    }
    let cut = match payload.as_bytes()[..MAX_PAYLOAD]
        .iter()
        .rposition(|&b| b == b'\n')
    {
        Some(nl) => nl + 1,
        None => floor_char_boundary(&payload, MAX_PAYLOAD),
    };
    payload.truncate(cut);
    payload
}

/// Feeds lines, one at a time, and returns each oops once it is complete.
#[derive(Debug, Default)]
pub struct OopsParser {
    current: Option<Collecting>,
}

#[derive(Debug)]
struct Collecting {
    pattern: &'static Pattern,
    lines: Vec<String>,
    stage: Stage,
}

/// Where in an oops the collection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before `Call Trace:` (arm64: `Call trace:`).
    Head,
    /// After `Call Trace:`, in the stack dump.
    StackDump,
    /// [`Rules::Die`] only: the module list and `CR2:` after the stack dump.
    AfterTrace,
}

impl Collecting {
    /// The C end conditions, in their order. `Call Trace:` switches to stack-dump mode.
    /// Extension patterns also end at a line that opens an oops.
    fn ends_at(&mut self, line: &str) -> bool {
        let mut end = false;
        if self.lines.len() >= MAX_LINES || line.contains("[ end trace") {
            end = true;
        } else if self.pattern.is_bert() {
            end = !line.contains("[Hardware Error]:");
        } else {
            match self.stage {
                Stage::Head => {
                    if is_call_trace_header(line) {
                        self.stage = Stage::StackDump;
                    }
                }
                Stage::StackDump => {
                    if ends_stack_dump(line) {
                        if self.pattern.rules == Rules::Die && is_after_trace_line(line) {
                            self.stage = Stage::AfterTrace;
                        } else {
                            end = true;
                        }
                    }
                }
                Stage::AfterTrace => end = !is_after_trace_line(line),
            }
        }
        if (line.contains("WARNING:") || line.contains("Unable to handle"))
            && !self.pattern.is_alsa()
        {
            end = true;
        }
        if self.pattern.rules != Rules::C
            && match_start(line).is_some()
            && !self.is_die_after_fault(line)
        {
            end = true;
        }
        end
    }

    /// `Internal error: …`, the first one, after an arm64 `Unable to handle kernel …` header
    /// and before the stack dump: the die report of that fault, not a new oops.
    fn is_die_after_fault(&self, line: &str) -> bool {
        self.pattern.rules == Rules::Arm64
            && self.pattern.text.starts_with("Unable to handle")
            && self.stage == Stage::Head
            && line.starts_with(ARM64_DIE_HEADER)
            && !self.lines.iter().any(|l| l.starts_with(ARM64_DIE_HEADER))
    }
}

const ARM64_DIE_HEADER: &str = "Internal error: ";

/// `Call Trace:` (x86 and most architectures) or `Call trace:` (arm64).
fn is_call_trace_header(line: &str) -> bool {
    line.starts_with("Call Trace:") || line.starts_with("Call trace:")
}

/// In stack-dump mode, the C parser ends the dump at a line that does not start with a
/// space, is shorter than 8 characters, or holds `Code:`/`Instruction Dump::`; a stack
/// marker such as ` <IRQ>` or ` <TASK>` is part of the dump, however short.
fn ends_stack_dump(line: &str) -> bool {
    !is_marker_line(line)
        && (!line.starts_with(' ')
            || line.len() < 8
            || line.contains("Code:")
            || line.contains("Instruction Dump::"))
}

/// What x86 `die()` prints from the end of the kernel frames to `[ end trace` since 5.x:
/// the user-space registers of a system call (`RIP: 0033:…`, `Code:`, `RSP: 002b:…`, …,
/// ` </TASK>`), the module list (a very long one goes on in records that start with a
/// space) and, for a page fault, `CR2:`.
fn is_after_trace_line(line: &str) -> bool {
    line.starts_with("Modules linked in:")
        || line.starts_with(' ')
        || line.starts_with("Code: ")
        || is_register_line(line)
}

impl OopsParser {
    pub fn new() -> OopsParser {
        OopsParser::default()
    }

    /// Whether an oops is being collected (and [`OopsParser::finish`] would return it).
    pub fn is_collecting(&self) -> bool {
        self.current.is_some()
    }

    /// Feed one line of syslog-style text (`<N>[ seconds] message`, either prefix
    /// optional), as read from a pstore dump or a saved kernel log, without its `\n`.
    pub fn push_syslog_line(&mut self, raw: &[u8]) -> Option<Oops> {
        let line = clean_line(raw);
        self.push_clean(strip_syslog_prefix(&line))
    }

    /// Feed one line of message text without any prefix (a `/dev/kmsg` record's text).
    pub fn push_message(&mut self, text: &[u8]) -> Option<Oops> {
        let line = clean_line(text);
        self.push_clean(&line)
    }

    fn push_clean(&mut self, line: &str) -> Option<Oops> {
        let Some(current) = &mut self.current else {
            self.start(line);
            return None;
        };
        if !current.ends_at(line) {
            current.lines.push(line.to_string());
            return None;
        }
        let done = self.finish();
        // The line that ended one oops may open the next.
        self.start(line);
        done
    }

    fn start(&mut self, line: &str) {
        if let Some(pattern) = match_start(line) {
            self.current = Some(Collecting {
                pattern,
                lines: vec![line.to_string()],
                stage: Stage::Head,
            });
        }
    }

    /// The oops being collected, if any, as complete: the input ended or went quiet.
    pub fn finish(&mut self) -> Option<Oops> {
        self.current.take().map(|c| Oops {
            pattern: c.pattern,
            lines: c.lines,
        })
    }
}

/// Every oops in `text` (syslog-style lines; a missing final newline is fine).
pub fn parse_text(text: &[u8]) -> Vec<Oops> {
    let mut parser = OopsParser::new();
    let mut found = Vec::new();
    let mut lines = crate::lines::LineAssembler::new(MAX_LINE_LEN);
    let mut feed = |line: &[u8]| found.extend(parser.push_syslog_line(line));
    lines.push(text, &mut feed);
    lines.finish(&mut feed);
    found.extend(parser.finish());
    found
}

// --- line preparation -------------------------------------------------------------------

/// C `isspace` in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Bounded, valid payload text: at most [`MAX_LINE_LEN`] bytes, a trailing `\r` dropped,
/// invalid UTF-8 and control characters other than tab replaced by `?`.
pub fn clean_line(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = &raw[..raw.len().min(MAX_LINE_LEN)];
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| {
            if c == '\u{fffd}' || (c.is_control() && c != '\t') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Drop a `<N>` log level, a `[ seconds.micros]` timestamp, an optional `[  T123]` caller
/// id, then (only after such a prefix) one whitespace character.
pub fn strip_syslog_prefix(line: &str) -> &str {
    let mut s = line;
    let mut stripped_level = false;
    if s.starts_with('<') {
        s = s.find('>').map_or("", |i| &s[i + 1..]);
        stripped_level = true;
    }
    let mut stripped_time = false;
    if let Some(rest) = strip_bracket(s, |c| c.is_ascii_digit() || c == '.' || is_c_space(c)) {
        s = rest;
        stripped_time = true;
    }
    if stripped_time {
        if let Some(rest) = strip_bracket(s, |c| c.is_ascii_alphanumeric() || is_c_space(c))
            .filter(|_| is_caller_id(s))
        {
            s = rest;
        }
    }
    // The separator after a prefix; a line without one (a console capture) keeps its
    // indentation, which is what marks the frames of an arm64 `Call trace:`.
    if !(stripped_level || stripped_time) {
        return s;
    }
    match s.chars().next() {
        Some(c) if is_c_space(c) => &s[c.len_utf8()..],
        _ => s,
    }
}

/// `[<chars accepted by ok>]` at the start of `s`: what follows it.
fn strip_bracket(s: &str, ok: impl Fn(char) -> bool) -> Option<&str> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    inner[..close].chars().all(ok).then(|| &inner[close + 1..])
}

/// `[  T123]` or `[ C1]`, as `CONFIG_PRINTK_CALLER` prints.
fn is_caller_id(s: &str) -> bool {
    let Some(close) = s.find(']') else {
        return false;
    };
    let id = s[1..close].trim_matches(is_c_space);
    let mut chars = id.chars();
    matches!(chars.next(), Some('T' | 'C'))
        && !id[1..].is_empty()
        && id[1..].chars().all(|c| c.is_ascii_digit())
}

// --- the backtrace section -------------------------------------------------------------

/// What the C `parse_backtrace` extracts from the lines after the reason.
#[derive(Debug, Default)]
struct Backtrace<'a> {
    kernel_version: Option<&'a str>,
    tainted: Option<&'a str>,
    modules: Option<&'a str>,
    /// Innermost first.
    frames: Vec<&'a str>,
    /// In the C parser's list order (it prepends while scanning lines backwards).
    registers: Vec<(&'a str, RegisterValue<'a>)>,
}

/// A register as the report prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegisterValue<'a> {
    Number(u64),
    /// arm64 `pc`/`lr` as `symbol+0x24/0x50 [module]`.
    Symbol(&'a str),
}

impl<'a> Backtrace<'a> {
    /// Scan `lines` from last to first: the trailing run of lines starting with a space
    /// are frames; `Modules linked in:` and `CPU:`/`PID:` lines give the module list, the
    /// kernel version and taint (the earliest one wins, as in C); the rest may hold
    /// registers.
    fn parse(lines: &'a [String]) -> Backtrace<'a> {
        let mut bt = Backtrace::default();
        let mut frames_rev = Vec::new();
        let mut registers_rev = Vec::new();
        let mut in_trace = true;
        for line in lines.iter().rev() {
            let line = line.as_str();
            if in_trace && line.starts_with(' ') {
                frames_rev.extend(frame_function(line));
                continue;
            }
            in_trace = false;
            if let Some(rest) = strip_prefix_ignore_case(line, "Modules linked in: ") {
                bt.modules = Some(rest);
                continue;
            }
            if is_cpu_line(line) {
                let (version, tainted) = parse_cpu_line(line);
                bt.kernel_version = version.or(bt.kernel_version);
                bt.tainted = tainted.or(bt.tainted);
                continue;
            }
            parse_any_registers(line, &mut registers_rev);
        }
        frames_rev.reverse();
        bt.frames = frames_rev;
        // C prepends each register to a list, so the list order is the reverse of the scan.
        registers_rev.reverse();
        bt.registers = registers_rev;
        bt
    }

    /// The payload of an extension oops: frames of the first `Call Trace:` block only,
    /// registers from the lines before it, the first kernel version, taint and module list
    /// found anywhere (a hung-task report gives version and taint on an indented
    /// `Not tainted …`/`Tainted: …` line).
    fn parse_first_trace(lines: &'a [String]) -> Backtrace<'a> {
        let mut bt = Backtrace::default();
        let trace = lines.iter().position(|l| is_call_trace_header(l));
        let head = &lines[..trace.unwrap_or(lines.len())];
        if let Some(start) = trace {
            bt.frames = lines[start + 1..]
                .iter()
                .take_while(|l| !ends_stack_dump(l))
                .filter_map(|l| frame_function(l))
                .collect();
        }
        let mut registers_rev = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_str();
            if let Some(rest) = strip_prefix_ignore_case(line, "Modules linked in: ") {
                bt.modules = bt.modules.or(Some(rest));
            } else if is_cpu_line(line) || (i < head.len() && is_taint_line(line)) {
                let (version, tainted) = parse_cpu_line(line);
                bt.kernel_version = bt.kernel_version.or(version);
                bt.tainted = bt.tainted.or(tainted);
            }
        }
        // Registers in the C list order: scanned from the last line, then reversed.
        for line in head.iter().rev() {
            let line = line.as_str();
            if strip_prefix_ignore_case(line, "Modules linked in: ").is_none()
                && !is_cpu_line(line)
                && !is_taint_line(line)
            {
                parse_any_registers(line, &mut registers_rev);
            }
        }
        registers_rev.reverse();
        bt.registers = registers_rev;
        bt
    }

    fn write(&self, out: &mut String, options: PayloadOptions) {
        use std::fmt::Write;
        if let Some(v) = self.kernel_version {
            let _ = writeln!(out, "Kernel Version : {v}");
        }
        if let Some(t) = self.tainted {
            let _ = writeln!(out, "Tainted : {t}");
        }
        if let Some(m) = self.modules {
            let _ = writeln!(out, "Modules : {m}");
        }
        if !self.frames.is_empty() {
            out.push_str("Backtrace :\n");
        }
        for (name, value) in &self.registers {
            match *value {
                RegisterValue::Symbol(symbol) => {
                    let _ = writeln!(out, "Register {name}: {symbol}");
                }
                RegisterValue::Number(value) if options.register_values => {
                    let _ = writeln!(out, "Register {name}: {value:x}");
                }
                RegisterValue::Number(value) => {
                    let zero = if value == 0 { "Zero" } else { "Non-zero" };
                    let _ = writeln!(out, "Register {name}: {zero}");
                }
            }
        }
        for (i, function) in self.frames.iter().enumerate() {
            let _ = writeln!(out, "#{} {function} - [kernel]", i + 1);
        }
    }
}

/// The function of one frame line: `[<addr>] ? name+0x1/0x2 [module]` → `? name`; also the
/// 4.10+ form without the address, and after a leading `<IRQ>`-style marker. A marker
/// alone on its line, or a line with nothing after the address, is not a frame.
fn frame_function(line: &str) -> Option<&str> {
    let mut s = line.trim_start_matches(is_c_space);
    let token_end = s.find(is_c_space).unwrap_or(s.len());
    if is_stack_marker(&s[..token_end]) {
        s = s[token_end..].trim_start_matches(is_c_space);
    }
    if is_register_line(s) {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let after = rest.find(is_c_space)?;
        s = rest[after..].trim_start_matches(is_c_space);
    }
    let function = &s[..s.find('+').unwrap_or(s.len())];
    (!function.is_empty()).then_some(function)
}

/// A stack-boundary marker alone on its line, after leading spaces.
fn is_marker_line(line: &str) -> bool {
    let trimmed = line.trim_matches(is_c_space);
    line.starts_with(' ') && is_stack_marker(trimmed)
}

/// `<IRQ>`, `</IRQ>`, `<NMI>`, `<EOI>`, `<<EOE>>`, `<TASK>`, `</TASK>`, `<#DF>`, …
fn is_stack_marker(token: &str) -> bool {
    let inner = token.trim_start_matches('<').trim_end_matches('>');
    let inner = inner.strip_prefix('/').unwrap_or(inner);
    token.starts_with('<')
        && token.ends_with('>')
        && !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '#')
}

/// ` RIP: 0033:0x7f…`, ` RSP: 002b:…`: the user-space registers 5.x kernels print inside
/// the call trace.
fn is_register_line(s: &str) -> bool {
    let name_end = s.find(':').unwrap_or(0);
    let name = &s[..name_end];
    name_end > 0 && (REGISTERS.contains(&name) || name == "ORIG_RAX")
}

/// A line the C parser reads the kernel version and taint from.
fn is_cpu_line(line: &str) -> bool {
    starts_with_ignore_case(line, "CPU: ") || starts_with_ignore_case(line, "PID: ")
}

/// The second line of a hung-task report: `      Not tainted 6.8.0-31-generic #31-Ubuntu`
/// or `      Tainted: G           OE      6.8.0 #1`.
fn is_taint_line(line: &str) -> bool {
    let trimmed = line.trim_start_matches(is_c_space);
    trimmed.len() < line.len()
        && (trimmed.starts_with("Not tainted ") || trimmed.starts_with("Tainted: "))
}

/// `CPU: 2 PID: 0 Comm: swapper/2 Not tainted  3.10.4-100.fc18.x86_64 #1` →
/// (`3.10.4-100.fc18.x86_64 #1`, `Not tainted`); with `Tainted: ` the next 16 characters
/// are the taint. The version is the token before the first `#` and everything after.
fn parse_cpu_line(line: &str) -> (Option<&str>, Option<&str>) {
    let mut tainted = None;
    let mut rest = line;
    if let Some(i) = line.find(" Not tainted ") {
        tainted = Some("Not tainted");
        rest = &line[i + " Not tainted".len()..];
    } else if let Some(i) = line.find("Tainted: ") {
        let flags = &line[i + "Tainted: ".len()..];
        tainted = Some(prefix_chars(flags, TAINT_FLAGS_LEN));
        // C steps over the first flag before looking for the version.
        rest = flags.char_indices().nth(1).map_or("", |(i, _)| &flags[i..]);
    }
    let version = rest.find('#').and_then(|hash| {
        let before = &rest[..hash];
        // C wants whitespace right before the '#'.
        if !before.ends_with(is_c_space) {
            return None;
        }
        let token_end = before.trim_end_matches(is_c_space).len();
        let token_start = before[..token_end].rfind(is_c_space)? + 1;
        (token_start < token_end).then(|| &rest[token_start..])
    });
    (version, tainted)
}

/// The first `n` characters of `s`.
fn prefix_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Register names, tried in this order as case-insensitive prefixes.
const REGISTERS: [&str; 33] = [
    "RIP", "RSP", "CR0", "CR2", "CR3", "CR4", "DR0", "DR1", "DR2", "DR3", "DR6", "DR7", "EFLAGS",
    "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "R08", "R09", "R10", "R11", "R12", "R13",
    "R14", "R15", "FS", "GS", "knlGS", "CS", "ES",
];

/// The C `parse_registers`, step for step, so payloads stay identical: `NAME: value`
/// pairs, `NAME: seg:value`, `NAME: value(...)` (which ends the line's scan), `NAME <value>`
/// and `NAME is at sym+off`. Anything else stops at the first unknown word.
fn parse_registers<'a>(line: &str, found: &mut Vec<(&'a str, RegisterValue<'a>)>) {
    let b = line.as_bytes();
    let at = |p: usize| b.get(p).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while at(p) != 0 && is_c_space(at(p) as char) {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        let Some(name) = REGISTERS.iter().find(|r| {
            b[p..].len() >= r.len() && b[p..p + r.len()].eq_ignore_ascii_case(r.as_bytes())
        }) else {
            break;
        };
        p += name.len();
        if at(p) == b':' {
            p += 1;
        }
        if at(p) != 0 && is_c_space(at(p) as char) {
            p += 1;
        }
        if p >= b.len() {
            break;
        }
        let (mut value, next) = strtoll_hex(b, p);
        p = next;
        if at(p) == b':' {
            (value, p) = strtoll_hex(b, p + 1);
        }
        if at(p) == b'(' {
            match b[p..].iter().position(|&c| c == b')') {
                Some(off) => p += off,
                None => break,
            }
        } else if at(p) == b'<' {
            (value, p) = strtoll_hex(b, p + 1);
            if at(p) != b'>' {
                continue;
            }
            p += 1;
        } else if at(p) == b'[' && at(p + 1) == b'<' {
            (value, p) = strtoll_hex(b, p);
            if at(p) != b'>' && at(p + 1) != b']' {
                continue;
            }
            p += 2;
        } else if b[p..].starts_with(b"is at") {
            while at(p) != 0 && at(p) != b'+' {
                p += 1;
            }
            if at(p) == b'+' {
                (value, _) = strtoll_hex(b, p);
                p = b.len();
            }
        } else if at(p) != 0 && !is_c_space(at(p) as char) {
            continue;
        }
        found.push((name, RegisterValue::Number(value)));
    }
}

/// The registers of one line: arm64's when the line is an arm64 register line, else the C
/// parser's (x86 names).
fn parse_any_registers<'a>(line: &'a str, found: &mut Vec<(&'a str, RegisterValue<'a>)>) {
    // arm64's `Mem abort info:` prints `  FSC = 0x05: level 1 translation fault`, which the
    // x86 names would read as an `FS` register.
    if line.trim_start_matches(is_c_space).starts_with("FSC = ") {
        return;
    }
    if !parse_arm64_registers(line, found) {
        parse_registers(line, found);
    }
}

/// Highest arm64 general-purpose register number printed (`x0`…`x30`).
const ARM64_MAX_X: u32 = 30;

/// An arm64 register name as `__show_regs` prints it: `pc`, `lr`, `sp`, `pstate`, `x0`…`x30`.
fn is_arm64_register(name: &str) -> bool {
    matches!(name, "pc" | "lr" | "sp" | "pstate")
        || name.strip_prefix('x').is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 2
                && n.chars().all(|c| c.is_ascii_digit())
                && n.parse::<u32>().is_ok_and(|n| n <= ARM64_MAX_X)
        })
}

/// An arm64 register line: `pc : mutex_lock+0x24/0x64`, `lr : …`, `sp : ffffffc00aadbaf0`,
/// `pstate: 60000005 (nZCv daif …)`, `x29: ffff… x28: 0000… x27: …`, `x9 : …` (names of one
/// character are padded before the colon); 4.x: `pc : [<ffff…>] lr : [<ffff…>] pstate: …`.
/// Pushes the line's registers so that, after the caller's final reversal, they read in
/// the printed order; false (nothing pushed) when the line is not one.
fn parse_arm64_registers<'a>(line: &'a str, found: &mut Vec<(&'a str, RegisterValue<'a>)>) -> bool {
    let mut parsed = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(is_c_space);
        if rest.is_empty() {
            break;
        }
        let name_end = rest
            .find(|c: char| c == ':' || is_c_space(c))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after_name = rest[name_end..].trim_start_matches(' ');
        let Some(value_text) = after_name.strip_prefix(':') else {
            break;
        };
        if !is_arm64_register(name) {
            break;
        }
        let value_text = value_text.trim_start_matches(is_c_space);
        let token_end = value_text.find(is_c_space).unwrap_or(value_text.len());
        let token = &value_text[..token_end];
        if matches!(name, "pc" | "lr") && token.contains('+') {
            // A symbol, possibly followed by ` [module]`: the rest of the line.
            parsed.push((
                name,
                RegisterValue::Symbol(value_text.trim_end_matches(is_c_space)),
            ));
            break;
        }
        let digits = token
            .strip_prefix("[<")
            .and_then(|t| t.strip_suffix(">]"))
            .unwrap_or(token);
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        let Ok(value) = u64::from_str_radix(digits, 16) else {
            break;
        };
        parsed.push((name, RegisterValue::Number(value)));
        rest = &value_text[token_end..];
        if name == "pstate" {
            // `(nZCv daif -PAN …)`, the flags spelled out, ends the line.
            break;
        }
    }
    if parsed.is_empty() {
        return false;
    }
    found.extend(parsed.into_iter().rev());
    true
}

/// C `strtoll(s, &end, 16)`: leading whitespace, a sign, an optional `0x`, hex digits;
/// saturates on overflow; without digits the value is 0 and the end is the start.
fn strtoll_hex(b: &[u8], start: usize) -> (u64, usize) {
    let mut p = start;
    while p < b.len() && is_c_space(b[p] as char) {
        p += 1;
    }
    let mut negative = false;
    if p < b.len() && (b[p] == b'+' || b[p] == b'-') {
        negative = b[p] == b'-';
        p += 1;
    }
    if p + 1 < b.len()
        && b[p] == b'0'
        && (b[p + 1] | 0x20) == b'x'
        && b.get(p + 2).is_some_and(|c| c.is_ascii_hexdigit())
    {
        p += 2;
    }
    let digits_start = p;
    let mut magnitude: u128 = 0;
    while p < b.len() && b[p].is_ascii_hexdigit() {
        let digit = (b[p] as char).to_digit(16).unwrap_or(0) as u128;
        magnitude = (magnitude * 16 + digit).min(1 << 64);
        p += 1;
    }
    if p == digits_start {
        return (0, start);
    }
    let value: i64 = if negative {
        if magnitude > i64::MAX as u128 + 1 {
            i64::MIN
        } else {
            (magnitude as i128).wrapping_neg() as i64
        }
    } else if magnitude > i64::MAX as u128 {
        i64::MAX
    } else {
        magnitude as i64
    };
    (value as u64, p)
}

// --- small string helpers ---------------------------------------------------------------

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // An ASCII prefix that matches ends on a char boundary.
    starts_with_ignore_case(s, prefix).then(|| &s[prefix.len()..])
}

fn find_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// `irq <digits>: nobody cared`, anywhere, case-insensitive.
fn irq_nobody_cared(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len()).any(|i| {
        let Some(rest) = b
            .get(i..)
            .filter(|r| r.len() >= 4 && r[..4].eq_ignore_ascii_case(b"irq "))
        else {
            return false;
        };
        let rest = &rest[4..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        digits > 0
            && rest[digits..].len() >= 14
            && rest[digits..digits + 14].eq_ignore_ascii_case(b": nobody cared")
    })
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;
