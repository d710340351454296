//! The crash record: classification, severity and the payload text of the C probe.
//!
//! ```text
//! Process: <path with '!' -> '/', or the -p name>
//! PID: <pid from the core>
//! [Signal: <n>]                                   when -s >= 0
//! [Too many frames. Backtrace truncated.]         when a thread reached 64 frames
//! [Error: <message>]                              crash/error records only
//!
//! Backtrace (TID <tid>):
//! #<n> <function>() - [<module>][ - <file>:<line>]
//! #<n> ??? - [<module>] - offset 0x<offset>, <build-id <hex> | file not verified | file unreadable>
//!                                                 (rich style: #<n> <module>+0x<offset>() - ...)
//! [Stack memory beyond this frame was not kept. Backtrace truncated.]
//! ```
//!
//! The payload never exceeds [`MAX_PAYLOAD`]: it is cut before the first frame line that
//! does not fit, and [`SIZE_MARKER`] says so.

use libtelemetry::record::MAX_PAYLOAD;

use crate::modules::{build_id_hex, FrameStyle, FrameSymbol, Unusable};

pub const CLASS_CLR: &str = "org.clearlinux/crash/clr";
pub const CLASS_ERROR: &str = "org.clearlinux/crash/error";
pub const CLASS_CLR_BUILD: &str = "org.clearlinux/crash/clr-build";
pub const CLASS_UNKNOWN: &str = "org.clearlinux/crash/unknown";
pub const SEVERITY_CLR: u32 = 3;
pub const SEVERITY_ERROR: u32 = 4;
pub const SEVERITY_FILTERED: u32 = 2;
pub const PAYLOAD_FORMAT_VERSION: u32 = 1;

pub const TOO_MANY_FRAMES: &str = "Too many frames. Backtrace truncated.\n";
/// Ends a thread's frames when its unwind reached stack memory the probe did not keep.
pub const STACK_NOT_KEPT: &str =
    "Stack memory beyond this frame was not kept. Backtrace truncated.\n";
/// Appended when the payload size limit cut the backtraces.
pub const SIZE_MARKER: &str = "Payload size limit reached. Backtrace truncated.\n";
pub const CLR_BUILD_PAYLOAD: &str = "Crash from Clear package build\n";
pub const THIRD_PARTY_PAYLOAD: &str = "Crash from third party\n";
/// Longest function name or path printed.
const MAX_NAME: usize = 1024;

/// Outcome of the privacy filters (applied only when `-E` is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtered {
    /// A package build root (`/builddir/build/BUILD/`).
    ClrBuild,
    /// Outside `/usr/`, or under `/usr/local/`.
    ThirdParty,
}

impl Filtered {
    pub fn classification(self) -> &'static str {
        match self {
            Filtered::ClrBuild => CLASS_CLR_BUILD,
            Filtered::ThirdParty => CLASS_UNKNOWN,
        }
    }

    pub fn payload(self) -> &'static str {
        match self {
            Filtered::ClrBuild => CLR_BUILD_PAYLOAD,
            Filtered::ThirdParty => THIRD_PARTY_PAYLOAD,
        }
    }
}

/// The C probe's filters on the `-E` path (which uses `!` or `/` as separators).
pub fn privacy_filter(process_path: &str) -> Option<Filtered> {
    let p = process_path;
    if p.starts_with("/builddir/build/BUILD/") || p.starts_with("!builddir!build!BUILD!") {
        return Some(Filtered::ClrBuild);
    }
    let in_usr = p.starts_with("/usr/") || p.starts_with("!usr!");
    let in_local = p.starts_with("/usr/local/") || p.starts_with("!usr!local!");
    if !in_usr || in_local {
        return Some(Filtered::ThirdParty);
    }
    None
}

/// The `Process:` value: the `-E` path with `!` turned into `/`, else the `-p` name.
pub fn process_label(process_path: Option<&str>, process_name: &str) -> String {
    match process_path {
        Some(p) => p.replace('!', "/"),
        None => process_name.to_string(),
    }
}

/// Header lines up to (not including) the first backtrace block.
pub fn header(
    process: &str,
    pid: Option<u32>,
    signal: Option<i64>,
    too_many_frames: bool,
    error: Option<&str>,
) -> String {
    let mut h = format!("Process: {}\n", clean(process));
    if let Some(pid) = pid {
        h.push_str(&format!("PID: {pid}\n"));
    }
    if let Some(sig) = signal.filter(|s| *s >= 0) {
        h.push_str(&format!("Signal: {sig}\n"));
    }
    if too_many_frames {
        h.push_str(TOO_MANY_FRAMES);
    }
    if let Some(e) = error {
        h.push_str(&format!("Error: {}\n", clean(e)));
    }
    h
}

/// The lines of one unwound frame (several when calls were inlined), numbered from `*n`.
///
/// A module whose file is not used (missing, replaced, unproven) gives no function name.
/// In the compatible style that is `???`, as the C probe printed for frames without a
/// symbol (the backend ranks those below named frames), with the offset and the reason
/// after the module; in the rich style `<module>+0x<offset>()`.
pub fn frame_lines(n: &mut usize, sym: &FrameSymbol, style: FrameStyle) -> Vec<String> {
    let mut out = Vec::new();
    match sym {
        FrameSymbol::NoModule => {
            out.push(format!("#{n} (no symbols)\n"));
            *n += 1;
        }
        FrameSymbol::Unverified {
            module,
            offset,
            build_id,
            why,
        } => {
            let module = clean(module);
            let reason = match (build_id, why) {
                (Some(id), _) => format!("build-id {}", build_id_hex(id)),
                (None, Unusable::Unproven) => "file not verified".to_string(),
                (None, _) => "file unreadable".to_string(),
            };
            let mut line = match style {
                FrameStyle::Compatible => {
                    format!("#{n} ??? - [{module}] - offset {offset:#x}, {reason}")
                }
                FrameStyle::Rich => format!("#{n} {module}+{offset:#x}() - [{module}] - {reason}"),
            };
            line.push('\n');
            out.push(line);
            *n += 1;
        }
        FrameSymbol::Resolved { module, frames } => {
            let module = clean(module);
            for f in frames {
                let mut line = match &f.function {
                    Some(func) => format!("#{n} {}() - [{module}]", clean(func)),
                    None => format!("#{n} ??? - [{module}]"),
                };
                if let (Some(_), Some((file, l))) = (&f.function, &f.location) {
                    line.push_str(&format!(" - {}:{l}", clean(file)));
                }
                line.push('\n');
                out.push(line);
                *n += 1;
            }
        }
    }
    out
}

/// Builds a payload that never exceeds [`MAX_PAYLOAD`] bytes.
pub struct PayloadBuilder {
    text: String,
    full: bool,
}

impl PayloadBuilder {
    pub fn new(header: String) -> PayloadBuilder {
        let mut b = PayloadBuilder {
            text: String::new(),
            full: false,
        };
        if header.len() + SIZE_MARKER.len() <= MAX_PAYLOAD {
            b.text = header;
        } else {
            b.text =
                header[..floor_char_boundary(&header, MAX_PAYLOAD - SIZE_MARKER.len())].to_string();
            b.finish_full();
        }
        b
    }

    /// Room left for more lines.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Append `piece` if it fits with room for the marker; otherwise mark the payload full.
    pub fn push(&mut self, piece: &str) -> bool {
        if self.full {
            return false;
        }
        if self.text.len() + piece.len() + SIZE_MARKER.len() > MAX_PAYLOAD {
            self.finish_full();
            return false;
        }
        self.text.push_str(piece);
        true
    }

    fn finish_full(&mut self) {
        self.full = true;
        self.text.push_str(SIZE_MARKER);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Make untrusted text (symbol names, paths) safe for a payload line.
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > MAX_NAME {
        out.truncate(floor_char_boundary(&out, MAX_NAME));
        out.push_str("...");
    }
    out
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::SymFrame;

    #[test]
    fn filters() {
        let check = |p: &str, want: Option<Filtered>| assert_eq!(privacy_filter(p), want, "{p}");
        check("!usr!bin!foo", None);
        check("/usr/bin/foo", None);
        check("!usr!local!bin!foo", Some(Filtered::ThirdParty));
        check("/home/u/a.out", Some(Filtered::ThirdParty));
        check("!builddir!build!BUILD!x!y", Some(Filtered::ClrBuild));
        check("/builddir/build/BUILD/x", Some(Filtered::ClrBuild));
        assert_eq!(process_label(Some("!usr!bin!foo"), "foo"), "/usr/bin/foo");
        assert_eq!(process_label(None, "foo"), "foo");
    }

    #[test]
    fn frame_formats() {
        let check = |sym: FrameSymbol, want: &[&str]| {
            let mut n = 3;
            assert_eq!(frame_lines(&mut n, &sym, FrameStyle::Rich), want);
        };
        check(FrameSymbol::NoModule, &["#3 (no symbols)\n"]);
        check(
            FrameSymbol::Resolved {
                module: "libc.so.6".into(),
                frames: vec![
                    SymFrame {
                        function: Some("inner".into()),
                        location: Some(("/src/a.c".into(), 3)),
                    },
                    SymFrame {
                        function: None,
                        location: None,
                    },
                ],
            },
            &[
                "#3 inner() - [libc.so.6] - /src/a.c:3\n",
                "#4 ??? - [libc.so.6]\n",
            ],
        );
        check(
            FrameSymbol::Unverified {
                module: "libfoo.so.1".into(),
                offset: 0x1a2b,
                build_id: Some(vec![0xab, 0x01]),
                why: Unusable::BuildIdMismatch,
            },
            &["#3 libfoo.so.1+0x1a2b() - [libfoo.so.1] - build-id ab01\n"],
        );
        check(
            FrameSymbol::Unverified {
                module: "/opt/x".into(),
                offset: 0x10,
                build_id: None,
                why: Unusable::Unproven,
            },
            &["#3 /opt/x+0x10() - [/opt/x] - file not verified\n"],
        );
        check(
            FrameSymbol::Unverified {
                module: "/opt/x".into(),
                offset: 0x10,
                build_id: None,
                why: Unusable::Missing,
            },
            &["#3 /opt/x+0x10() - [/opt/x] - file unreadable\n"],
        );
        let mut n = 0;
        let unproven = FrameSymbol::Unverified {
            module: "/opt/x".into(),
            offset: 0x10,
            build_id: None,
            why: Unusable::Unproven,
        };
        assert_eq!(
            frame_lines(&mut n, &unproven, FrameStyle::Compatible),
            ["#0 ??? - [/opt/x] - offset 0x10, file not verified\n"]
        );
        let updated = FrameSymbol::Unverified {
            module: "libfoo.so.1".into(),
            offset: 0x1a2b,
            build_id: Some(vec![0xab, 0x01]),
            why: Unusable::BuildIdMismatch,
        };
        assert_eq!(
            frame_lines(&mut n, &updated, FrameStyle::Compatible),
            ["#1 ??? - [libfoo.so.1] - offset 0x1a2b, build-id ab01\n"]
        );
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            header("/usr/bin/x", Some(7), Some(11), true, Some("bad\ncore")),
            "Process: /usr/bin/x\nPID: 7\nSignal: 11\nToo many frames. Backtrace truncated.\nError: bad?core\n"
        );
        assert_eq!(header("x", None, Some(-1), false, None), "Process: x\n");
    }

    #[test]
    fn payload_is_cut_at_a_line() {
        let mut b = PayloadBuilder::new(header("x", Some(1), None, false, None));
        b.push("\nBacktrace (TID 1):\n");
        let line = "#0 f() - [m]\n";
        while b.push(line) {}
        let p = b.finish();
        assert!(p.len() <= MAX_PAYLOAD);
        assert!(p.ends_with(&format!("{line}{SIZE_MARKER}")));
    }
}
