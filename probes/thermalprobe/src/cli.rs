//! Command line.

use std::path::PathBuf;
use std::time::Duration;

pub use probe_support::cli::{parse_duration, ConfigFileArg};

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "thermalprobe",
    version = libtelemetry::VERSION,
    about = "Report CPU thermal throttling as org.clearlinux/mce/thermal telemetry records"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigFileArg,

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
