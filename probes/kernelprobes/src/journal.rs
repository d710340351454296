//! journalprobe: failed services of this boot, from `journalctl -o json --follow`.
//!
//! The journal is read through the `journalctl` program (no libsystemd linking), started
//! with an argument vector (never a shell). Its matches select this boot's entries with
//! `EXIT_CODE=exited` (and, when the host opted out of privacy filters, entries of
//! priority 0–3 too), and every entry is checked again here before it is sent.
//!
//! One record per entry: `org.clearlinux/journal/error`, severity 2, payload version 1,
//! payload `MESSAGE=<message>\n` (spec §11.3).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libtelemetry::record::MAX_PAYLOAD;
use serde_json::Value;

use crate::error::ProbeError;
use crate::lines::LineAssembler;

pub const CLASSIFICATION: &str = "org.clearlinux/journal/error";
pub const SEVERITY: u32 = 2;
/// Default program; `--journalctl` or `TELEMETRICS_JOURNALCTL` replace it.
pub const DEFAULT_JOURNALCTL: &str = "/usr/bin/journalctl";
pub const JOURNALCTL_ENV: &str = "TELEMETRICS_JOURNALCTL";
/// A JSON line longer than this is skipped.
pub const MAX_JSON_LINE: usize = 1024 * 1024;

/// Which entries are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFilter {
    /// This boot, as the journal spells it: 32 lowercase hex digits.
    pub boot_id: String,
    /// Also report entries of priority 0..=3 (only without privacy filters).
    pub error_priorities: bool,
}

impl EntryFilter {
    /// `boot_id` as in `/proc/sys/kernel/random/boot_id` (dashes allowed).
    pub fn new(boot_id: &str, error_priorities: bool) -> EntryFilter {
        EntryFilter {
            boot_id: boot_id
                .trim()
                .chars()
                .filter(|c| *c != '-')
                .collect::<String>()
                .to_ascii_lowercase(),
            error_priorities,
        }
    }

    /// journalctl's match arguments: terms of different fields are ANDed, `+` separates
    /// alternatives.
    pub fn match_args(&self) -> Vec<String> {
        let boot = format!("_BOOT_ID={}", self.boot_id);
        let mut args = vec![boot.clone(), "EXIT_CODE=exited".to_string()];
        if self.error_priorities {
            args.push("+".into());
            args.push(boot);
            args.extend((0..=3).map(|p| format!("PRIORITY={p}")));
        }
        args
    }

    fn accepts(&self, entry: &serde_json::Map<String, Value>) -> bool {
        let text = |key: &str| entry.get(key).and_then(field_bytes);
        let boot_ok = text("_BOOT_ID")
            .is_some_and(|b| String::from_utf8_lossy(&b).eq_ignore_ascii_case(&self.boot_id));
        let exited = text("EXIT_CODE").is_some_and(|v| v == b"exited");
        let error_priority = self.error_priorities
            && text("PRIORITY").is_some_and(|v| matches!(v.as_slice(), b"0" | b"1" | b"2" | b"3"));
        boot_ok && (exited || error_priority)
    }
}

/// The full journalctl argument vector. Without `tail`, every matching entry of this boot
/// is read first; with it, only entries logged from now on.
pub fn journalctl_args(filter: &EntryFilter, tail: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--output=json",
        "--all",
        "--follow",
        "--no-pager",
        "--quiet",
        "--output-fields=MESSAGE,_BOOT_ID,EXIT_CODE,PRIORITY",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(if tail { "--lines=0" } else { "--no-tail" }.into());
    args.extend(filter.match_args().into_iter().map(OsString::from));
    args
}

/// The payload for one JSON line, or `None` when the entry is not reported (filtered out,
/// no `MESSAGE`, not JSON).
pub fn entry_payload(line: &[u8], filter: &EntryFilter) -> Option<String> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("skipping a journal line that is not JSON: {e}");
            return None;
        }
    };
    let entry = value.as_object()?;
    if !filter.accepts(entry) {
        return None;
    }
    let message = entry.get("MESSAGE").and_then(field_bytes)?;
    Some(message_payload(&message))
}

/// `MESSAGE=<text>\n`, made valid payload text and cut to [`MAX_PAYLOAD`] bytes.
pub fn message_payload(message: &[u8]) -> String {
    let mut payload = String::with_capacity(message.len() + 9);
    payload.push_str("MESSAGE=");
    for c in String::from_utf8_lossy(message).chars() {
        let ok = !c.is_control() || matches!(c, '\t' | '\n');
        payload.push(if ok && c != '\u{fffd}' { c } else { '?' });
    }
    let mut cut = payload.len().min(MAX_PAYLOAD - 1);
    while !payload.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.truncate(cut);
    payload.push('\n');
    payload
}

/// A journal field in journalctl's JSON: a string, an array of byte values (binary data),
/// or an array of those when the field occurs more than once (the first is used).
fn field_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(items) if items.iter().all(Value::is_u64) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        Value::Array(items) => items.first().and_then(field_bytes),
        _ => None,
    }
}

/// The journalctl program: the flag, else `TELEMETRICS_JOURNALCTL`, else the default.
pub fn journalctl_program(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(JOURNALCTL_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNALCTL))
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowSummary {
    pub entries: usize,
    pub delivered: usize,
}

/// Run `program args`, and hand the payload of each accepted entry to `report` (true =
/// delivered) until journalctl ends. A failed delivery is logged and following goes on.
pub fn follow(
    program: &Path,
    args: &[OsString],
    filter: &EntryFilter,
    mut report: impl FnMut(&str) -> bool,
) -> Result<FollowSummary, ProbeError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it makes
    // journalctl exit with the probe instead of following the journal forever.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |source| ProbeError::Spawn {
        program: program.to_path_buf(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_err)?;
    let mut stdout = child.stdout.take().ok_or_else(|| {
        spawn_err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "no stdout pipe",
        ))
    })?;
    let mut summary = FollowSummary::default();
    let mut lines = LineAssembler::new(MAX_JSON_LINE);
    let mut handle = |line: &[u8]| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if let Some(payload) = entry_payload(line, filter) {
            summary.entries += 1;
            if report(&payload) {
                summary.delivered += 1;
            }
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let read_result = loop {
        match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => lines.push(&buf[..n], &mut handle),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    lines.finish(&mut handle);
    drop(stdout);
    if let Err(e) = read_result {
        let _ = child.kill();
        let _ = child.wait();
        return Err(spawn_err(e));
    }
    let status = child.wait().map_err(spawn_err)?;
    if !status.success() {
        return Err(ProbeError::ChildFailed {
            program: program.to_path_buf(),
            status,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "23156fd8-5386-4bfa-ae58-eb2136e72a04";

    fn check(line: &str, priorities: bool, expected: Option<&str>) {
        let f = EntryFilter::new(BOOT, priorities);
        assert_eq!(
            entry_payload(line.as_bytes(), &f).as_deref(),
            expected,
            "{line}"
        );
    }

    #[test]
    fn entries_and_payloads() {
        let boot = "23156fd853864bfaae58eb2136e72a04";
        check(
            &format!(
                r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":"exited","MESSAGE":"a.service: Main process exited"}}"#
            ),
            false,
            Some("MESSAGE=a.service: Main process exited\n"),
        );
        // Other boots, other exit codes, and priorities without the override are ignored.
        check(
            &format!(
                r#"{{"_BOOT_ID":"{}","EXIT_CODE":"exited","MESSAGE":"x"}}"#,
                "0".repeat(32)
            ),
            false,
            None,
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":"killed","MESSAGE":"x"}}"#),
            false,
            None,
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","PRIORITY":"3","MESSAGE":"err"}}"#),
            false,
            None,
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","PRIORITY":"3","MESSAGE":"err"}}"#),
            true,
            Some("MESSAGE=err\n"),
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","PRIORITY":"4","MESSAGE":"err"}}"#),
            true,
            None,
        );
        // Binary messages, repeated fields, control characters, missing messages, junk.
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":"exited","MESSAGE":[104,105,27,255]}}"#),
            false,
            Some("MESSAGE=hi??\n"),
        );
        check(
            &format!(
                r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":["exited","x"],"MESSAGE":["one","two"]}}"#
            ),
            false,
            Some("MESSAGE=one\n"),
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":"exited","MESSAGE":null}}"#),
            false,
            None,
        );
        check(
            &format!(r#"{{"_BOOT_ID":"{boot}","EXIT_CODE":"exited"}}"#),
            false,
            None,
        );
        check("not json", false, None);
        check("[1,2]", false, None);
    }

    #[test]
    fn payload_is_bounded() {
        let p = message_payload(&vec![b'x'; 3 * MAX_PAYLOAD]);
        assert_eq!(p.len(), MAX_PAYLOAD);
        assert!(p.starts_with("MESSAGE=xxx") && p.ends_with("x\n"));
        let p = message_payload("é".repeat(MAX_PAYLOAD).as_bytes());
        assert!(p.len() <= MAX_PAYLOAD && p.ends_with('\n'));
    }

    #[test]
    fn argument_vector() {
        let f = EntryFilter::new(BOOT, false);
        let args: Vec<String> = journalctl_args(&f, true)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(args.contains(&"--lines=0".to_string()));
        assert!(args.ends_with(&[
            "_BOOT_ID=23156fd853864bfaae58eb2136e72a04".to_string(),
            "EXIT_CODE=exited".to_string()
        ]));
        let f = EntryFilter::new(BOOT, true);
        let m = f.match_args();
        assert_eq!(m[2], "+");
        assert_eq!(m.len(), 8);
        assert!(journalctl_args(&f, false).contains(&OsString::from("--no-tail")));
    }
}
