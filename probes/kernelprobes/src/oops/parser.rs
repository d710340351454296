//! The collection of an oops: [`OopsParser`] takes lines one at a time, opens an oops at a
//! start pattern, keeps its lines under the pattern's [`Rules`], and hands back the
//! complete [`Oops`] at the line that ends it (which may open the next one).
//!
//! Invariant: an oops holds at most [`MAX_LINES`] lines of at most
//! [`MAX_LINE_LEN`] bytes each, so memory is bounded whatever the input.

use super::patterns::{match_start, Pattern, Rules};
use super::registers::is_register_line;
use super::report::Oops;
use super::text::{clean_line, strip_syslog_prefix, MAX_LINE_LEN};
use super::trace::{ends_stack_dump, is_call_trace_header};

/// An oops holds at most this many lines (the C parser's `MAX_LINES`).
pub const MAX_LINES: usize = 100;

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
