//! The INI dialect of `telemetrics.conf`, as libnica (the C client's INI reader) parses it:
//! whole-line `#`/`;` comments, `[section]` headers, `key=value` split at the first `=`,
//! `\s` for a space in values, the last occurrence of a key winning.
//!
//! A compatibility contract with existing configuration files: hand-written on purpose,
//! since an INI crate would bring its own rules (inline comments, quoting, escapes) and
//! read some files differently from the C client.

/// A line the dialect does not allow. The caller adds the file name
/// (`ConfigError::Syntax`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    /// 1-based line number.
    pub line: usize,
    pub message: &'static str,
}

/// One `key=value` line of an INI file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A parsed INI file: entries in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    pub entries: Vec<IniEntry>,
}

impl Ini {
    /// Entries of section `[settings]` in file order (repeated sections merge).
    pub fn settings(&self) -> impl Iterator<Item = &IniEntry> {
        self.entries.iter().filter(|e| e.section == "settings")
    }

    /// Last value of `key` in `section`.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
            .map(|e| e.value.as_str())
    }
}

/// The libnica INI dialect: trimmed lines, `#`/`;` comments (whole lines only), `[section]`,
/// `key=value` split at the first `=` with both sides trimmed, `\s` → space and `\x` → `x`
/// in values. A key before any section, an empty key, a line without `=`, or a section
/// header without `]` is an error.
pub fn parse_ini(text: &str) -> Result<Ini, IniError> {
    let mut ini = Ini::default();
    let mut section: Option<String> = None;
    let err = |line: usize, message: &'static str| IniError { line, message };
    for (idx, raw_line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw_line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err(line_no, "section header must end with ']'"))?;
            section = Some(name.to_string());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err(line_no, "expected key=value"))?;
        let key = key.trim_matches(|c| c == ' ' || c == '\t');
        if key.is_empty() {
            return Err(err(line_no, "empty key"));
        }
        let section = section
            .clone()
            .ok_or_else(|| err(line_no, "key=value before any [section]"))?;
        ini.entries.push(IniEntry {
            section,
            key: key.to_string(),
            value: unescape(value.trim_matches(|c| c == ' ' || c == '\t')),
            line: line_no,
        });
    }
    Ok(ini)
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('s') => out.push(' '),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}
