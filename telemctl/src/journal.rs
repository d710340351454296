//! `telemctl journal`: the C `telem_journal`, built in.
//!
//! The text output is byte-identical to the C tool (§6.4): only the last 100 journal lines
//! are considered, each match prints as `printf("%-30s %s %s %s %s\n", classification, time,
//! record_id, event_id, boot_id)` with the time in local time
//! (`strftime("%a %Y-%m-%d %H:%M:%S %Z")`), `-V` adds the header line and
//! `Total records: N`. The journal is read through `libtelemetry::journal`.
//!
//! Journal fields and retained payloads come from local probes, so when the output reaches
//! a terminal ([`JournalOptions::sanitize`]) control characters in them are shown as `?`
//! (JSON: as `\u` escapes), and no probe can send escape sequences to the admin's terminal.
//! Piped output stays raw, byte-identical to the C tool.

use std::borrow::Cow;

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libtelemetry::journal::{read_journal, retention_file, JournalEntry, JOURNAL_RECORD_LIMIT};
use libtelemetry::Paths;

use crate::error::{output, CtlError};
use crate::timefmt::journal_time;

/// Largest retained record copied by `-i` (payloads are ≤ 8 KiB; this only bounds damage).
pub const MAX_RETAINED_SIZE: u64 = 1024 * 1024;

/// Filters; all given ones must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalQuery {
    pub record_id: Option<String>,
    pub event_id: Option<String>,
    /// Exact, or a prefix match when it ends in `/*` (`a/b/*` matches `a/b/<anything>`).
    pub classification: Option<String>,
    pub boot_id: Option<String>,
    /// Only entries at or after this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Only entries at or before this time.
    pub until: Option<i64>,
    /// Keep only the last N matches.
    pub lines: Option<usize>,
}

impl JournalQuery {
    pub fn matches(&self, e: &JournalEntry) -> bool {
        let exact = |want: &Option<String>, have: &str| want.as_deref().map_or(true, |w| w == have);
        exact(&self.record_id, &e.record_id)
            && exact(&self.event_id, &e.event_id)
            && exact(&self.boot_id, &e.boot_id)
            && self
                .classification
                .as_deref()
                .map_or(true, |c| classification_matches(c, &e.classification))
            && self.since.map_or(true, |s| e.timestamp >= s)
            && self.until.map_or(true, |u| e.timestamp <= u)
    }

    /// The entries the C tool would consider (the last 100), filtered, then cut to `lines`.
    pub fn select<'a>(&self, entries: &'a [JournalEntry]) -> Vec<&'a JournalEntry> {
        let window = &entries[entries.len().saturating_sub(JOURNAL_RECORD_LIMIT)..];
        let mut v: Vec<&JournalEntry> = window.iter().filter(|e| self.matches(e)).collect();
        if let Some(n) = self.lines {
            v.drain(..v.len().saturating_sub(n));
        }
        v
    }
}

/// `-c` semantics of the C tool.
pub fn classification_matches(filter: &str, class: &str) -> bool {
    match filter.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => class.starts_with(prefix),
        _ => filter == class,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalFormat {
    /// The C layout; `verbose` adds the header and the total.
    Text { verbose: bool, colour: bool },
    /// One JSON object per line.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    pub query: JournalQuery,
    pub format: JournalFormat,
    /// Also print each record's retained payload copy.
    pub include_record: bool,
    /// Replace control characters from the data (not the layout's own newlines, tabs and
    /// colours) for a terminal.
    pub sanitize: bool,
}

/// `s` with each control character not in `keep` replaced by `?`.
pub fn terminal_safe<'a>(s: &'a str, keep: &[char]) -> Cow<'a, str> {
    let unsafe_char = |c: char| c.is_control() && !keep.contains(&c);
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if unsafe_char(c) { '?' } else { c })
            .collect(),
    )
}

/// A JSON text with the control characters serde_json leaves as they are (DEL, C1) written
/// as `\u` escapes. Outside strings JSON holds only ASCII punctuation, so every such
/// character is inside a string and the escape keeps the value.
fn escape_json_controls(json: &str) -> Cow<'_, str> {
    if !json.chars().any(char::is_control) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Read the journal of `paths` and print the selection.
pub fn run(
    paths: &Paths,
    opts: &JournalOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    let entries = read_journal(&paths.journal_file()).map_err(CtlError::JournalOpen)?;
    render(&entries, opts, &paths.records_dir(), out, err).map_err(output)
}

/// `s` left-aligned in `width` bytes, like printf's `%-Ns` (which counts bytes).
fn pad(s: &str, width: usize) -> String {
    let mut p = String::with_capacity(width.max(s.len()));
    p.push_str(s);
    p.extend(std::iter::repeat(' ').take(width.saturating_sub(s.len())));
    p
}

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub fn render(
    entries: &[JournalEntry],
    opts: &JournalOptions,
    records_dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let selected = opts.query.select(entries);
    // Data fields: nothing of theirs is kept on a terminal. Bodies keep their lines and tabs.
    let field = |v: &'_ str| -> String {
        if opts.sanitize {
            terminal_safe(v, &[]).into_owned()
        } else {
            v.to_string()
        }
    };
    const BODY_KEEP: &[char] = &['\n', '\t'];
    let body_text = |b: &[u8]| -> String {
        let text = String::from_utf8_lossy(b);
        if opts.sanitize {
            terminal_safe(&text, BODY_KEEP).into_owned()
        } else {
            text.into_owned()
        }
    };
    let retained = |e: &JournalEntry, err: &mut dyn Write| -> Option<Vec<u8>> {
        match read_retained(records_dir, &e.record_id) {
            Ok(b) => Some(b),
            Err((path, e2)) => {
                let _ = writeln!(
                    err,
                    "Unable to open retained record {}: {e2}",
                    path.display()
                );
                None
            }
        }
    };
    match opts.format {
        JournalFormat::Text { verbose, colour } => {
            let (b, r) = if colour { (BOLD, RESET) } else { ("", "") };
            if verbose {
                writeln!(
                    out,
                    "{b}{} {} {} {} {}{r}",
                    pad("Classification", 30),
                    pad("Time stamp", 27),
                    pad("Record ID", 32),
                    pad("Event ID", 32),
                    pad("Boot ID", 36)
                )?;
            }
            let mut count = 0usize;
            for e in selected {
                let Some(time) = journal_time(e.timestamp) else {
                    continue;
                };
                writeln!(
                    out,
                    "{} {} {} {} {}",
                    pad(&field(&e.classification), 30),
                    field(&time),
                    field(&e.record_id),
                    field(&e.event_id),
                    field(&e.boot_id)
                )?;
                count += 1;
                if opts.include_record {
                    if let Some(body) = retained(e, err) {
                        if opts.sanitize {
                            out.write_all(body_text(&body).as_bytes())?;
                        } else {
                            // Raw bytes, as the C tool copied them.
                            out.write_all(&body)?;
                        }
                    }
                }
            }
            if verbose {
                writeln!(out, "{b}Total records: {count}{r}")?;
            }
        }
        JournalFormat::Json => {
            for e in selected {
                let mut obj = serde_json::json!({
                    "classification": e.classification,
                    "timestamp": e.timestamp,
                    "time": journal_time(e.timestamp),
                    "record_id": e.record_id,
                    "event_id": e.event_id,
                    "boot_id": e.boot_id,
                });
                if opts.include_record {
                    obj["record"] = match retained(e, err) {
                        Some(b) => String::from_utf8_lossy(&b).into_owned().into(),
                        None => serde_json::Value::Null,
                    };
                }
                let line = obj.to_string();
                if opts.sanitize {
                    writeln!(out, "{}", escape_json_controls(&line))?;
                } else {
                    writeln!(out, "{line}")?;
                }
            }
        }
        JournalFormat::Csv => {
            let mut header = "classification,timestamp,time,record_id,event_id,boot_id".to_string();
            if opts.include_record {
                header.push_str(",record");
            }
            writeln!(out, "{header}")?;
            for e in selected {
                let mut fields = vec![
                    csv_field(&field(&e.classification)),
                    e.timestamp.to_string(),
                    csv_field(&field(&journal_time(e.timestamp).unwrap_or_default())),
                    csv_field(&field(&e.record_id)),
                    csv_field(&field(&e.event_id)),
                    csv_field(&field(&e.boot_id)),
                ];
                if opts.include_record {
                    let body = retained(e, err).unwrap_or_default();
                    fields.push(csv_field(&body_text(&body)));
                }
                writeln!(out, "{}", fields.join(","))?;
            }
        }
    }
    Ok(())
}

/// One CSV field, quoted when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The retained payload copy `records/<record_id>` (raw bytes, as the C tool copied them).
/// The id comes from the journal file, so only plain ids map to a file
/// (`journal::retention_file`); symlinks are not followed.
pub fn read_retained(records_dir: &Path, record_id: &str) -> Result<Vec<u8>, (PathBuf, io::Error)> {
    let Some(path) = retention_file(records_dir, record_id) else {
        return Err((
            records_dir.join(record_id),
            io::Error::new(io::ErrorKind::InvalidInput, "invalid record id"),
        ));
    };
    let read = || -> io::Result<Vec<u8>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let mut buf = Vec::new();
        f.take(MAX_RETAINED_SIZE).read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().map_err(|e| (path.clone(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rid: &str, ts: i64, class: &str) -> JournalEntry {
        JournalEntry {
            record_id: rid.into(),
            timestamp: ts,
            classification: class.into(),
            event_id: "5de9de8d5f3c6a7d445d75ba01cc3322".into(),
            boot_id: "23156fd8-5386-4bfa-ae58-eb2136e72a04".into(),
        }
    }

    fn check(filter: &str, class: &str, expected: bool) {
        assert_eq!(
            classification_matches(filter, class),
            expected,
            "{filter} vs {class}"
        );
    }

    #[test]
    fn classification_filter() {
        check("a/b/c", "a/b/c", true);
        check("a/b/c", "a/b/cd", false);
        check("a/b/*", "a/b/c", true);
        check("a/b/*", "a/b/", true);
        check("a/b/*", "a/bc/d", false);
        check("a/*", "a/b/c", true);
        check("a/b*", "a/b/c", false);
        check("a/b*", "a/b*", true);
    }

    #[test]
    fn selection_window_filters_and_lines() {
        let entries: Vec<JournalEntry> = (0..120)
            .map(|i| {
                entry(
                    &format!("{i:032x}"),
                    1000 + i,
                    if i % 2 == 0 { "x/y/even" } else { "x/y/odd" },
                )
            })
            .collect();
        let all = JournalQuery::default().select(&entries);
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].timestamp, 1020, "only the last 100 lines");
        let q = JournalQuery {
            classification: Some("x/y/odd".into()),
            since: Some(1100),
            until: Some(1110),
            ..Default::default()
        };
        let ts: Vec<i64> = q.select(&entries).iter().map(|e| e.timestamp).collect();
        assert_eq!(ts, [1101, 1103, 1105, 1107, 1109]);
        let q = JournalQuery {
            lines: Some(2),
            ..q
        };
        let ts: Vec<i64> = q.select(&entries).iter().map(|e| e.timestamp).collect();
        assert_eq!(ts, [1107, 1109]);
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }

    /// Output of `render` for `entries` in `format`, with or without sanitizing; `-i` reads
    /// `records/<rid>` from `bodies`.
    fn rendered(
        entries: &[JournalEntry],
        bodies: &[(&str, &[u8])],
        format: JournalFormat,
        sanitize: bool,
    ) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        for (rid, body) in bodies {
            std::fs::write(d.path().join(rid), body).unwrap();
        }
        let opts = JournalOptions {
            query: JournalQuery::default(),
            format,
            include_record: !bodies.is_empty(),
            sanitize,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        render(entries, &opts, d.path(), &mut out, &mut err).unwrap();
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
        out
    }

    #[test]
    fn control_characters_reach_a_terminal_only_as_question_marks() {
        const RID: &str = "57b918ce6644c4b2ab11a25310871fb8";
        let mut e = entry(
            RID,
            1522691281,
            "org.evil/\x1b]0;owned\x07/\x1b[2J\r\u{9b}x",
        );
        e.boot_id = "boot\x1b[31m".into();
        let entries = [e];
        let body: &[u8] = b"line\tone\n\x1b[31mred\r\x7f\xc2\x9b\xff\n";
        let text = JournalFormat::Text {
            verbose: true,
            colour: true,
        };
        // Whatever the process's time zone makes of it.
        let time = &journal_time(1522691281).unwrap();
        let eid = "5de9de8d5f3c6a7d445d75ba01cc3322";
        let header_and = |class: &str, boot: &str, body: &[u8]| -> Vec<u8> {
            let mut v = format!(
                "{BOLD}{} {} {} {} {}{RESET}\n{} {time} {RID} {eid} {boot}\n",
                pad("Classification", 30),
                pad("Time stamp", 27),
                pad("Record ID", 32),
                pad("Event ID", 32),
                pad("Boot ID", 36),
                pad(class, 30)
            )
            .into_bytes();
            v.extend_from_slice(body);
            v.extend_from_slice(format!("{BOLD}Total records: 1{RESET}\n").as_bytes());
            v
        };
        // (format, sanitize, expected output)
        let cases: Vec<(JournalFormat, bool, Vec<u8>)> = vec![
            // Piped: raw, byte for byte (the C layout counts bytes for %-30s).
            (
                text,
                false,
                header_and(
                    "org.evil/\x1b]0;owned\x07/\x1b[2J\r\u{9b}x",
                    "boot\x1b[31m",
                    body,
                ),
            ),
            // Terminal: data control characters are '?', the layout's own escapes stay,
            // bodies keep their newlines and tabs; invalid UTF-8 shows as U+FFFD.
            (
                text,
                true,
                header_and(
                    "org.evil/?]0;owned?/?[2J??x",
                    "boot?[31m",
                    "line\tone\n?[31mred???\u{fffd}\n".as_bytes(),
                ),
            ),
            (
                JournalFormat::Csv,
                true,
                format!(
                    "classification,timestamp,time,record_id,event_id,boot_id,record\n\
                     org.evil/?]0;owned?/?[2J??x,1522691281,{time},{RID},{eid},boot?[31m,\
                     \"line\tone\n?[31mred???\u{fffd}\n\"\n"
                )
                .into_bytes(),
            ),
            (
                JournalFormat::Csv,
                false,
                format!(
                    "classification,timestamp,time,record_id,event_id,boot_id,record\n\
                     \"org.evil/\x1b]0;owned\x07/\x1b[2J\r\u{9b}x\",1522691281,{time},{RID},{eid},boot\x1b[31m,\
                     \"line\tone\n\x1b[31mred\r\x7f\u{9b}\u{fffd}\n\"\n"
                )
                .into_bytes(),
            ),
        ];
        for (format, sanitize, expected) in cases {
            let got = rendered(&entries, &[(RID, body)], format, sanitize);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{format:?} sanitize={sanitize}"
            );
            assert_eq!(got, expected, "{format:?} sanitize={sanitize}");
        }
        // JSON: the same values either way; on a terminal no raw control character at all.
        for sanitize in [false, true] {
            let got = rendered(&entries, &[(RID, body)], JournalFormat::Json, sanitize);
            let line = String::from_utf8(got).unwrap();
            assert_eq!(
                line.chars().any(|c| c.is_control() && c != '\n'),
                !sanitize,
                "{line:?}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["classification"], entries[0].classification.as_str());
            assert_eq!(v["boot_id"], "boot\x1b[31m");
            assert_eq!(v["record"], String::from_utf8_lossy(body).as_ref());
        }
    }

    #[test]
    fn terminal_safe_keeps_what_it_is_told_to() {
        for (input, keep, expected) in [
            ("plain", &[][..], "plain"),
            ("a\tb\nc", &[][..], "a?b?c"),
            ("a\tb\nc\r", &['\n', '\t'][..], "a\tb\nc?"),
            ("\u{85}\u{9f}\u{a0}\u{e9}", &[][..], "??\u{a0}\u{e9}"),
        ] {
            assert_eq!(terminal_safe(input, keep), expected, "{input:?}");
        }
    }

    #[test]
    fn retained_ids_must_be_plain_names() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_retained(d.path(), "../etc").is_err());
        assert!(read_retained(d.path(), "").is_err());
        assert!(read_retained(d.path(), "ABC123").is_err());
        let id = "57b918ce6644c4b2ab11a25310871fb8";
        std::fs::write(d.path().join(id), "body\n\n").unwrap();
        assert_eq!(read_retained(d.path(), id).unwrap(), b"body\n\n");
    }
}
