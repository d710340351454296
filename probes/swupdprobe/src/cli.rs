//! Command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "swupdprobe",
    version = libtelemetry::VERSION,
    about = "Send swupd's telemetry files as org.clearlinux/swupd-client/<class> records"
)]
pub struct Cli {
    /// Configuration file (default: the standard telemetrics.conf selection).
    #[arg(short = 'f', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Keep running and deliver files as they appear (default: empty the directory, exit).
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// swupd's drop directory (default: /var/lib/swupd/telemetry under TELEMETRICS_ROOT).
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Failed delivery attempts after which a file is quarantined.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tries: u32,

    /// Where invalid and repeatedly failing files go (default: .quarantine in the drop
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub quarantine_dir: Option<PathBuf>,

    /// Failure-count file (default: .swupdprobe-tries in the drop directory).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Longest wait between retries of undelivered files.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub retry_interval: Duration,

    /// Drain mode: how long to keep retrying before exiting with files left.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub retry_for: Duration,

    /// Drain mode: when only ignored entries (temporary files) remain, wait this long for
    /// them to be renamed into place before exiting.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Print the records instead of sending them; nothing is deleted or moved.
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
