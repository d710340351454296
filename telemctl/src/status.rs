//! `telemctl status`: a live report of the suite's state, as text or JSON.
//!
//! Everything is read, nothing is changed: the opt-in file, the configuration in effect, the
//! daemons' status files (`libtelemetry::status`), their processes and units, the spool,
//! the quarantine and the journal. A part that cannot be read is reported as such; the
//! report itself never fails.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libtelemetry::journal::read_journal;
use libtelemetry::status::{
    now_secs, read_status, status_file, LastDelivery, COUNTER_DELIVERED, COUNTER_DROPPED,
    COUNTER_EVICTED, COUNTER_EXPIRED, COUNTER_FAILED_ATTEMPTS, COUNTER_QUARANTINED,
    COUNTER_REJECTED, COUNTER_SPOOLED, COUNTER_STAGED,
};
use libtelemetry::{Config, ConfigSource, Paths};
use serde::Serialize;

use crate::services::Services;
use crate::timefmt::journal_time;

pub use libtelemetry::paths::QUARANTINE_DIR;

/// Counters always shown, in this order (others found in status files follow).
pub const REPORTED_COUNTERS: &[&str] = &[
    COUNTER_DELIVERED,
    COUNTER_SPOOLED,
    COUNTER_EXPIRED,
    COUNTER_EVICTED,
    COUNTER_REJECTED,
    COUNTER_DROPPED,
    COUNTER_QUARANTINED,
    COUNTER_STAGED,
    COUNTER_FAILED_ATTEMPTS,
];

/// Daemons and the units that activate them.
const DAEMONS: &[(&str, &[&str])] = &[
    ("telemprobd", &["telemprobd.socket", "telemprobd.service"]),
    ("telempostd", &["telempostd.path", "telempostd.service"]),
];

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: String,
    /// `TELEMETRICS_ROOT` when relocated.
    pub root: Option<PathBuf>,
    pub time: i64,
    pub boot_id: Option<String>,
    pub opted_in: bool,
    pub opt_in_file: PathBuf,
    pub config: ConfigReport,
    pub daemons: Vec<DaemonReport>,
    pub spool: SpoolReport,
    pub journal: JournalReport,
    pub last_delivery: Option<LastDelivery>,
    /// Sum over both daemons' status files.
    pub counters: BTreeMap<String, u64>,
    /// The parts this user may not read (root may): the report leaves them out rather than
    /// showing them empty.
    pub needs_root: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ConfigReport {
    /// The file in effect, `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    /// `explicit`, `etc`, `distribution` or `built-in`.
    pub source: &'static str,
    /// Set when the file cannot be used; the values below are then the built-in defaults.
    pub error: Option<String>,
    pub server: String,
    pub delivery_mode: &'static str,
    pub effective_delivery_mode: &'static str,
    pub socket_path: PathBuf,
    pub spool_dir: PathBuf,
    pub record_server_delivery_enabled: bool,
    pub record_retention_enabled: bool,
    pub rate_limit_enabled: bool,
    pub rate_limit_strategy: &'static str,
    /// −1: the file's value was negative (telempostd refuses it).
    pub record_expiry_minutes: i64,
    /// −1: unlimited.
    pub spool_max_size_kib: i64,
    pub daemon_recycling_enabled: bool,
}

#[derive(Debug, Serialize)]
pub struct DaemonReport {
    pub name: String,
    pub status_file: PathBuf,
    /// Set when the status file exists but cannot be read.
    pub status_error: Option<String>,
    /// The status file exists but this user may not read it (the daemons write it 0600).
    pub status_needs_root: bool,
    pub version: Option<String>,
    pub pid: Option<u32>,
    /// The recorded pid is alive and is this daemon; without a readable status file, a
    /// process of this name was found (outside a relocated root only).
    pub running: bool,
    pub started: Option<i64>,
    pub updated: Option<i64>,
    /// `systemctl is-active` per unit, when services are managed.
    pub units: BTreeMap<String, String>,
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct SpoolReport {
    pub dir: PathBuf,
    pub error: Option<String>,
    /// This user may not list the spool directory.
    pub needs_root: bool,
    pub records: u64,
    pub bytes: u64,
    pub oldest_age_seconds: Option<i64>,
    pub quarantined: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct JournalReport {
    pub file: PathBuf,
    pub error: Option<String>,
    /// This user may not read the journal.
    pub needs_root: bool,
    pub bytes: u64,
    pub entries: u64,
    pub last_entry_time: Option<i64>,
}

fn config_report(paths: &Paths) -> ConfigReport {
    let (cfg, source, error) = match Config::load(paths, None) {
        Ok((cfg, source)) => (cfg, source, None),
        Err(e) => (
            Config::defaults(paths),
            libtelemetry::config::select_config_file(paths, None),
            Some(e.to_string()),
        ),
    };
    // The numbers the C client showed: −1 for unlimited or a negative value in the file.
    let c_numbers = cfg.c_numbers();
    ConfigReport {
        file: source.path().map(Path::to_path_buf),
        source: match source {
            ConfigSource::Explicit(_) => "explicit",
            ConfigSource::Etc(_) => "etc",
            ConfigSource::Distribution(_) => "distribution",
            ConfigSource::BuiltIn => "built-in",
        },
        error,
        delivery_mode: cfg.delivery_mode.as_str(),
        effective_delivery_mode: cfg.effective_delivery_mode().as_str(),
        server: cfg.server,
        socket_path: cfg.socket_path,
        spool_dir: cfg.spool_dir,
        record_server_delivery_enabled: cfg.record_server_delivery_enabled,
        record_retention_enabled: cfg.record_retention_enabled,
        rate_limit_enabled: cfg.rate_limit_enabled,
        rate_limit_strategy: cfg.rate_limit_strategy.as_str(),
        record_expiry_minutes: c_numbers.record_expiry,
        spool_max_size_kib: c_numbers.spool_max_size,
        daemon_recycling_enabled: cfg.daemon_recycling_enabled,
    }
}

/// Whether `pid` is alive and its command name is `name` (a stale status file may name a
/// pid reused by another process).
pub fn process_is(pid: u32, name: &str) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    if !alive {
        return false;
    }
    // /proc of this machine, not the host-facts root: the pid is a live one.
    match std::fs::read_to_string(format!("/proc/{raw}/comm")) {
        Ok(comm) => {
            let comm = comm.trim_end();
            // comm is cut to 15 bytes.
            !comm.is_empty() && name.starts_with(comm)
        }
        Err(_) => true,
    }
}

/// Whether an error means "this user may not read it" (root may).
fn denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

/// The pid of a live process named `name`, from /proc (command names are world-readable
/// unless /proc is mounted with hidepid).
fn find_process(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| process_is(*pid, name))
}

fn daemon_report(paths: &Paths, services: &Services, name: &str, units: &[&str]) -> DaemonReport {
    let file = status_file(paths, name);
    let (status, status_error, status_needs_root) = match read_status(&file) {
        Ok(s) => (s, None, false),
        Err(e) => (None, Some(e.to_string()), denied(&e)),
    };
    let units = units
        .iter()
        .filter_map(|u| services.is_active(u).map(|s| (u.to_string(), s)))
        .collect();
    // Without the status file the pid comes from /proc; in a relocated root a process of
    // that name may serve another root, so nothing is claimed there.
    let found = match (&status, status_needs_root) {
        (None, true) if !paths.is_relocated() => find_process(name),
        _ => None,
    };
    DaemonReport {
        name: name.to_string(),
        status_file: file,
        status_error,
        status_needs_root,
        running: found.is_some() || status.as_ref().is_some_and(|s| process_is(s.pid, name)),
        version: status.as_ref().map(|s| s.version.clone()),
        pid: found.or(status.as_ref().map(|s| s.pid)),
        started: status.as_ref().map(|s| s.started),
        updated: status.as_ref().map(|s| s.updated),
        counters: status.map(|s| s.counters).unwrap_or_default(),
        units,
    }
}

/// Regular, non-hidden files directly in `dir`: (count, bytes, oldest mtime).
fn scan_files(dir: &Path) -> io::Result<(u64, u64, Option<i64>)> {
    let mut count = 0;
    let mut bytes = 0;
    let mut oldest: Option<i64> = None;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if libtelemetry::fsutil::is_hidden_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(md) = e.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        count += 1;
        bytes += md.len();
        oldest = Some(oldest.map_or(md.mtime(), |o| o.min(md.mtime())));
    }
    Ok((count, bytes, oldest))
}

fn spool_report(dir: &Path, now: i64) -> SpoolReport {
    let mut r = SpoolReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    match scan_files(dir) {
        Ok((n, b, oldest)) => {
            r.records = n;
            r.bytes = b;
            r.oldest_age_seconds = oldest.map(|t| (now - t).max(0));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => r.error = Some("not created yet".into()),
        Err(e) => {
            r.needs_root = denied(&e);
            r.error = Some(e.to_string());
        }
    }
    if let Ok((n, _, _)) = scan_files(&dir.join(QUARANTINE_DIR)) {
        r.quarantined = n;
    }
    r
}

fn journal_report(file: &Path) -> JournalReport {
    let mut r = JournalReport {
        file: file.to_path_buf(),
        ..Default::default()
    };
    match std::fs::metadata(file).and_then(|md| Ok((md.len(), read_journal(file)?))) {
        Ok((len, entries)) => {
            r.bytes = len;
            r.entries = entries.len() as u64;
            r.last_entry_time = entries.last().map(|e| e.timestamp);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            r.needs_root = denied(&e);
            r.error = Some(e.to_string());
        }
    }
    r
}

/// Gather the report.
pub fn collect(paths: &Paths, services: &Services) -> StatusReport {
    let now = now_secs();
    let config = config_report(paths);
    let daemons: Vec<DaemonReport> = DAEMONS
        .iter()
        .map(|(name, units)| daemon_report(paths, services, name, units))
        .collect();
    let mut counters: BTreeMap<String, u64> = REPORTED_COUNTERS
        .iter()
        .map(|c| (c.to_string(), 0))
        .collect();
    for d in &daemons {
        for (k, v) in &d.counters {
            *counters.entry(k.clone()).or_default() += v;
        }
    }
    let last_delivery = read_status(&status_file(paths, "telempostd"))
        .ok()
        .flatten()
        .and_then(|s| s.last_delivery);
    let spool = spool_report(&config.spool_dir, now);
    let journal = journal_report(&paths.journal_file());
    let mut needs_root: Vec<String> = daemons
        .iter()
        .filter(|d| d.status_needs_root)
        .map(|d| format!("{}'s status file {}", d.name, d.status_file.display()))
        .collect();
    if spool.needs_root {
        needs_root.push(format!("the spool {}", spool.dir.display()));
    }
    if journal.needs_root {
        needs_root.push(format!("the journal {}", journal.file.display()));
    }
    StatusReport {
        version: libtelemetry::VERSION.to_string(),
        root: paths.is_relocated().then(|| paths.root().to_path_buf()),
        time: now,
        boot_id: libtelemetry::journal::read_boot_id(paths).ok(),
        opted_in: paths.opt_in_file().exists(),
        opt_in_file: paths.opt_in_file(),
        spool,
        journal,
        config,
        daemons,
        last_delivery,
        counters,
        needs_root,
    }
}

/// `90` → `1m 30s`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(t: i64, now: i64) -> String {
    let time = journal_time(t).unwrap_or_else(|| t.to_string());
    format!("{time} ({} ago)", human_age(now - t))
}

/// The text form.
pub fn write_text(r: &StatusReport, out: &mut dyn Write) -> io::Result<()> {
    let now = r.time;
    writeln!(out, "telemetrics {}", r.version)?;
    if let Some(root) = &r.root {
        writeln!(out, "Root:           {} (TELEMETRICS_ROOT)", root.display())?;
    }
    if let Some(b) = &r.boot_id {
        writeln!(out, "Boot ID:        {b}")?;
    }
    writeln!(
        out,
        "Opt-in:         {} ({})",
        if r.opted_in { "yes" } else { "no" },
        r.opt_in_file.display()
    )?;
    let c = &r.config;
    match &c.file {
        Some(f) => writeln!(out, "Config:         {} ({})", f.display(), c.source)?,
        None => writeln!(out, "Config:         built-in defaults")?,
    }
    if let Some(e) = &c.error {
        writeln!(out, "  error:        {e} (showing the built-in defaults)")?;
    }
    let mode = if c.delivery_mode == c.effective_delivery_mode {
        c.delivery_mode.to_string()
    } else {
        format!("{} → {}", c.delivery_mode, c.effective_delivery_mode)
    };
    writeln!(out, "  server:       {} (delivery {mode})", c.server)?;
    writeln!(out, "  socket_path:  {}", c.socket_path.display())?;
    writeln!(out, "  spool_dir:    {}", c.spool_dir.display())?;
    writeln!(
        out,
        "  delivery:     {}, retention {}, rate limit {} ({}), expiry {} min, spool max {} KiB",
        if c.record_server_delivery_enabled {
            "enabled"
        } else {
            "disabled (local only)"
        },
        if c.record_retention_enabled {
            "on"
        } else {
            "off"
        },
        if c.rate_limit_enabled { "on" } else { "off" },
        c.rate_limit_strategy,
        c.record_expiry_minutes,
        c.spool_max_size_kib
    )?;
    writeln!(out, "Daemons:")?;
    for d in &r.daemons {
        let state = match (d.running, d.pid, d.status_needs_root) {
            (true, Some(pid), false) => format!("running (pid {pid})"),
            (true, Some(pid), true) => {
                format!("running (pid {pid}); its status file needs root")
            }
            (false, Some(pid), _) => format!("not running (last pid {pid})"),
            // Never "not running" from a file this user may not read.
            (_, _, true) => format!("unknown: needs root to read {}", d.status_file.display()),
            _ => "not running (no status file)".to_string(),
        };
        write!(out, "  {:<13} {state}", format!("{}:", d.name))?;
        if let Some(v) = &d.version {
            write!(out, ", version {v}")?;
        }
        writeln!(out)?;
        if let Some(t) = d.started {
            writeln!(out, "                started {}", when(t, now))?;
        }
        if let Some(t) = d.updated {
            writeln!(out, "                updated {}", when(t, now))?;
        }
        if !d.units.is_empty() {
            let units: Vec<String> = d.units.iter().map(|(u, s)| format!("{u} {s}")).collect();
            writeln!(out, "                units: {}", units.join(", "))?;
        }
        if let Some(e) = d.status_error.as_ref().filter(|_| !d.status_needs_root) {
            writeln!(out, "                status file unreadable: {e}")?;
        }
    }
    let s = &r.spool;
    match &s.error {
        Some(_) if s.needs_root => writeln!(
            out,
            "Spool:          needs root to read {}",
            s.dir.display()
        )?,
        Some(e) => writeln!(out, "Spool:          {e} ({})", s.dir.display())?,
        None => {
            let noun = if s.records == 1 { "record" } else { "records" };
            write!(
                out,
                "Spool:          {} {noun}, {} bytes",
                s.records, s.bytes
            )?;
            if let Some(age) = s.oldest_age_seconds {
                write!(out, ", oldest {}", human_age(age))?;
            }
            writeln!(out, " ({})", s.dir.display())?;
        }
    }
    if s.needs_root {
        writeln!(out, "Quarantined:    needs root")?;
    } else {
        writeln!(out, "Quarantined:    {}", s.quarantined)?;
    }
    let j = &r.journal;
    match &j.error {
        Some(_) if j.needs_root => writeln!(
            out,
            "Journal:        needs root to read {}",
            j.file.display()
        )?,
        Some(e) => writeln!(
            out,
            "Journal:        unreadable: {e} ({})",
            j.file.display()
        )?,
        None => {
            let noun = if j.entries == 1 { "entry" } else { "entries" };
            write!(
                out,
                "Journal:        {} {noun}, {} bytes",
                j.entries, j.bytes
            )?;
            if let Some(t) = j.last_entry_time {
                write!(out, ", last {}", when(t, now))?;
            }
            writeln!(out, " ({})", j.file.display())?;
        }
    }
    let postd_needs_root = r
        .daemons
        .iter()
        .any(|d| d.name == "telempostd" && d.status_needs_root);
    match &r.last_delivery {
        None if postd_needs_root => {
            writeln!(out, "Last delivery:  needs root (telempostd's status file)")?
        }
        Some(ld) => writeln!(
            out,
            "Last delivery:  {}, {}, {}",
            if ld.ok { "ok" } else { "failed" },
            // It may quote a server's answer: never let it drive the terminal.
            crate::journal::terminal_safe(&ld.detail, &[]),
            when(ld.time, now)
        )?,
        None => writeln!(out, "Last delivery:  none")?,
    }
    let mut names: Vec<&str> = REPORTED_COUNTERS.to_vec();
    names.extend(
        r.counters
            .keys()
            .map(String::as_str)
            .filter(|k| !REPORTED_COUNTERS.contains(k)),
    );
    let counters: Vec<String> = names
        .iter()
        .map(|k| format!("{k} {}", r.counters.get(*k).copied().unwrap_or(0)))
        .collect();
    if r.daemons.iter().any(|d| d.status_needs_root) {
        writeln!(
            out,
            "Counters:       needs root (the daemons' status files)"
        )?;
    } else {
        writeln!(out, "Counters:       {}", counters.join(", "))?;
    }
    if !r.needs_root.is_empty() {
        writeln!(out, "Needs root:     {}", r.needs_root.join("; "))?;
    }
    Ok(())
}

/// The JSON form (one pretty-printed object).
pub fn write_json(r: &StatusReport, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, r).map_err(io::Error::other)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        for (s, want) in [
            (0, "0s"),
            (59, "59s"),
            (90, "1m 30s"),
            (7260, "2h 1m"),
            (90_000, "1d 1h"),
            (-5, "0s"),
        ] {
            assert_eq!(human_age(s), want);
        }
    }

    #[test]
    fn own_process_is_recognised() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(process_is(me, comm.trim_end()));
        assert!(!process_is(me, "telempostd-not-me"));
        assert!(!process_is(0, "x"));
        assert!(!process_is(u32::MAX, "x"));
    }
}
