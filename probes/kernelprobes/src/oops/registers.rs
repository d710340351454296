//! Register lines: the C `parse_registers` (x86 names, step for step so payloads stay
//! identical), arm64's `__show_regs` lines, and the C `strtoll` they rely on.
//!
//! Invariant: every parser here only reads the line it is given; registers are pushed in
//! the reverse of their printed order, as the C parser builds its list, and the caller
//! reverses once.

use super::text::is_c_space;

/// A register as the report prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RegisterValue<'a> {
    Number(u64),
    /// arm64 `pc`/`lr` as `symbol+0x24/0x50 [module]`.
    Symbol(&'a str),
}

/// ` RIP: 0033:0x7f…`, ` RSP: 002b:…`: the user-space registers 5.x kernels print inside
/// the call trace.
pub(super) fn is_register_line(s: &str) -> bool {
    let name_end = s.find(':').unwrap_or(0);
    let name = &s[..name_end];
    name_end > 0 && (REGISTERS.contains(&name) || name == "ORIG_RAX")
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
pub(super) fn parse_registers<'a>(line: &str, found: &mut Vec<(&'a str, RegisterValue<'a>)>) {
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
pub(super) fn parse_any_registers<'a>(
    line: &'a str,
    found: &mut Vec<(&'a str, RegisterValue<'a>)>,
) {
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
pub(super) fn parse_arm64_registers<'a>(
    line: &'a str,
    found: &mut Vec<(&'a str, RegisterValue<'a>)>,
) -> bool {
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
pub(super) fn strtoll_hex(b: &[u8], start: usize) -> (u64, usize) {
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
