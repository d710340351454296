//! The state file: the counters last reported, with the boot they belong to. A restart in
//! the same boot continues from them (nothing is reported twice); after a reboot the
//! kernel's counters start at 0 again and so does the baseline.
//!
//! ```text
//! boot_id=23156fd8-5386-4bfa-ae58-eb2136e72a04
//! core <cpu> <core_throttle_count> <core_throttle_total_time_ms>
//! package <id> <package_throttle_count> <package_throttle_total_time_ms>
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use thiserror::Error;

use crate::sysfs::MAX_CPUS;

/// Largest state file read.
pub const MAX_STATE_FILE: u64 = 1024 * 1024;

/// A counter and its time total as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Baseline {
    pub count: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub boot_id: String,
    pub cores: BTreeMap<u32, Baseline>,
    pub packages: BTreeMap<u32, Baseline>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    #[error("line {0}: {1}")]
    Syntax(usize, String),
    #[error("more than {0} entries")]
    TooMany(usize),
    #[error("no boot_id line")]
    NoBootId,
}

impl State {
    /// A fresh state for `boot_id`: every baseline 0.
    pub fn fresh(boot_id: &str) -> State {
        State {
            boot_id: boot_id.to_string(),
            ..State::default()
        }
    }

    pub fn parse(text: &str) -> Result<State, StateError> {
        let mut st = State::default();
        let mut seen_boot = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(id) = line.strip_prefix("boot_id=") {
                st.boot_id = id.trim().to_string();
                seen_boot = true;
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kind, id, count, total] = parts[..] else {
                return Err(StateError::Syntax(n, format!("{line:?}")));
            };
            let num = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| StateError::Syntax(n, format!("bad number {s:?}")))
            };
            let id = u32::try_from(num(id)?)
                .map_err(|_| StateError::Syntax(n, format!("bad id {id:?}")))?;
            let b = Baseline {
                count: num(count)?,
                total_ms: num(total)?,
            };
            let map = match kind {
                "core" => &mut st.cores,
                "package" => &mut st.packages,
                other => return Err(StateError::Syntax(n, format!("unknown entry {other:?}"))),
            };
            map.insert(id, b);
            if st.cores.len() + st.packages.len() > 2 * MAX_CPUS {
                return Err(StateError::TooMany(2 * MAX_CPUS));
            }
        }
        if !seen_boot {
            return Err(StateError::NoBootId);
        }
        Ok(st)
    }

    pub fn render(&self) -> String {
        let mut s = format!("boot_id={}\n", self.boot_id);
        for (cpu, b) in &self.cores {
            s.push_str(&format!("core {cpu} {} {}\n", b.count, b.total_ms));
        }
        for (p, b) in &self.packages {
            s.push_str(&format!("package {p} {} {}\n", b.count, b.total_ms));
        }
        s
    }

    /// The state to continue from: the file's when it belongs to `boot_id`, else fresh.
    pub fn load(path: &Path, boot_id: &str) -> State {
        let mut text = String::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_STATE_FILE).read_to_string(&mut text));
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::fresh(boot_id),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; starting from zero", path.display());
                State::fresh(boot_id)
            }
            Ok(_) => match State::parse(&text) {
                Ok(st) if st.boot_id == boot_id => st,
                Ok(_) => {
                    tracing::info!("new boot: throttle counters restart from zero");
                    State::fresh(boot_id)
                }
                Err(e) => {
                    tracing::warn!("ignoring malformed {}: {e}", path.display());
                    State::fresh(boot_id)
                }
            },
        }
    }

    /// Write durably (temp, fsync, rename, fsync dir).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        libtelemetry::fsutil::write_atomic(path, self.render().as_bytes(), 0o644)
    }
}
