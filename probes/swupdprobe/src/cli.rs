//! Command line.

use std::path::PathBuf;
use std::time::Duration;

pub use probe_support::cli::{parse_duration, ConfigFileArg};

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "swupdprobe",
    version = libtelemetry::VERSION,
    about = "Send swupd's telemetry files as org.clearlinux/swupd-client/<class> records"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigFileArg,

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
