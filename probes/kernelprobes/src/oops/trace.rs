//! Stack-dump lines: the `Call Trace:` header, where a dump ends, and the function named by
//! a frame line. Both the collection (when an oops ends) and the payload (which lines are
//! frames) read a dump through these, so the two never disagree about it.

use super::registers::is_register_line;
use super::text::is_c_space;

/// `Call Trace:` (x86 and most architectures) or `Call trace:` (arm64).
pub(super) fn is_call_trace_header(line: &str) -> bool {
    line.starts_with("Call Trace:") || line.starts_with("Call trace:")
}

/// In stack-dump mode, the C parser ends the dump at a line that does not start with a
/// space, is shorter than 8 characters, or holds `Code:`/`Instruction Dump::`; a stack
/// marker such as ` <IRQ>` or ` <TASK>` is part of the dump, however short.
pub(super) fn ends_stack_dump(line: &str) -> bool {
    !is_marker_line(line)
        && (!line.starts_with(' ')
            || line.len() < 8
            || line.contains("Code:")
            || line.contains("Instruction Dump::"))
}

/// The function of one frame line: `[<addr>] ? name+0x1/0x2 [module]` → `? name`; also the
/// 4.10+ form without the address, and after a leading `<IRQ>`-style marker. A marker
/// alone on its line, or a line with nothing after the address, is not a frame.
pub(super) fn frame_function(line: &str) -> Option<&str> {
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
