//! What a record header value may hold, shared by the [`record`](crate::record) model,
//! which refuses other values, and [`hostinfo`](crate::hostinfo), which cleans host facts
//! before they become header values. A leaf, so neither has to import the other.

/// Whether `c` may not appear in a header value: every control character (C0, DEL, C1)
/// except tab. A value is sent verbatim as an HTTP header in the v2 format, where only
/// HTAB, SP and visible characters are allowed (a `\r` or `\n` would also end the header),
/// and the backend collector accepts whitespace including tab. The C client checked none
/// of this.
pub fn is_forbidden_header_char(c: char) -> bool {
    c.is_control() && c != '\t'
}
