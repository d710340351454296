//! Command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "thermalprobe",
    version = libtelemetry::VERSION,
    about = "Report CPU thermal throttling as org.clearlinux/mce/thermal telemetry records"
)]
pub struct Cli {
    /// Configuration file (default: the standard telemetrics.conf selection).
    #[arg(short = 'f', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Poll once, report, and exit (default: poll every --interval until stopped).
    #[arg(short = '1', long)]
    pub once: bool,

    /// Time between polls; at most one record per package is sent per interval
    /// (e.g. 60s, 5m, 500ms).
    #[arg(short = 'i', long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,

    /// The sysfs mount (default: /sys under TELEMETRICS_HOST_ROOT).
    #[arg(long, value_name = "DIR")]
    pub sysfs: Option<PathBuf>,

    /// State file (default: thermalprobe.state in /var/lib/telemetry under TELEMETRICS_ROOT).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Print the records instead of sending them (the state file is not updated).
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `N`, `Ns`, `Nms`, `Nm` or `Nh`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if d.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(d)
}
