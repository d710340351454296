//! A complete [`Oops`] and its crash-report payload: the C `parse_backtrace` (kernel
//! version, taint, module list, registers, frames) for the C patterns, and the first
//! `Call Trace:` block for the extension patterns.
//!
//! Invariant: a payload is at most [`MAX_PAYLOAD`] bytes, cut after a complete line, so the
//! daemon never refuses it.

use libtelemetry::record::MAX_PAYLOAD;

use super::patterns::{Pattern, Rules};
use super::registers::{parse_any_registers, RegisterValue};
use super::text::{
    floor_char_boundary, is_c_space, starts_with_ignore_case, strip_prefix_ignore_case,
};
use super::trace::{ends_stack_dump, frame_function, is_call_trace_header};

/// Characters of taint flags reported after `Tainted: ` (C's `NUM_TAINTED_FLAGS`).
const TAINT_FLAGS_LEN: usize = 16;

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
pub(super) fn bound_payload(mut payload: String) -> String {
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
pub(super) fn parse_cpu_line(line: &str) -> (Option<&str>, Option<&str>) {
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
