//! Line preparation: what every input line goes through before it is matched or kept
//! (bounded, valid payload text; the syslog prefix dropped), and the small C-locale string
//! tests the other parts of the parser share.
//!
//! Invariant: a line that leaves [`clean_line`] is at most [`MAX_LINE_LEN`] bytes of valid
//! UTF-8 without control characters other than tab. This module uses no other part of the
//! parser.

/// Bytes kept of one input line; the rest of a longer line is dropped.
pub const MAX_LINE_LEN: usize = 4096;

/// C `isspace` in the "C" locale.
pub(super) fn is_c_space(c: char) -> bool {
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

pub(super) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // An ASCII prefix that matches ends on a char boundary.
    starts_with_ignore_case(s, prefix).then(|| &s[prefix.len()..])
}

pub(super) fn find_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

pub(super) fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
