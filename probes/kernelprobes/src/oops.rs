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
//! * the payload is cut at a line boundary to at most
//!   [`MAX_PAYLOAD`](libtelemetry::record::MAX_PAYLOAD) bytes, which the daemon accepts
//!   (C cut to 8191 bytes, which the C daemon still dropped);
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
//!
//! The parts, each using only those listed before it:
//!
//! * `text`: line preparation (bounds, valid text, syslog prefix) and C-locale string tests;
//! * `patterns`: the start-pattern tables and their matching;
//! * `registers`: x86 and arm64 register lines;
//! * `trace`: stack-dump lines (the `Call Trace:` header, its end, frame functions);
//! * `report`: [`Oops`] and its payload;
//! * `parser`: [`OopsParser`], which collects lines into [`Oops`] values.

mod parser;
mod patterns;
mod registers;
mod report;
mod text;
mod trace;

pub use parser::{parse_text, OopsParser, MAX_LINES};
pub use patterns::{match_start, Matcher, Pattern, Rules, EXTENSION_PATTERNS, PATTERNS};
pub use report::{Oops, PayloadOptions};
pub use text::{clean_line, strip_syslog_prefix, MAX_LINE_LEN};

// The unit tests check the parts' private steps against the C parser's behaviour.
#[cfg(test)]
use {
    registers::{parse_arm64_registers, parse_registers, strtoll_hex, RegisterValue},
    report::{bound_payload, parse_cpu_line},
    trace::frame_function,
};

#[cfg(test)]
mod tests;
