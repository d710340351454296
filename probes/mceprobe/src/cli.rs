//! Command line.

use std::path::PathBuf;
use std::time::Duration;

pub use probe_support::cli::{parse_duration, ConfigFileArg};

use clap::{Parser, ValueEnum};

/// Where machine-check records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// `/dev/mcelog` when it exists, else the tracepoint.
    Auto,
    /// `/dev/mcelog` only.
    Mcelog,
    /// The `mce:mce_record` tracepoint only.
    Tracefs,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mceprobe",
    version = libtelemetry::VERSION,
    about = "Report machine-check events as org.clearlinux/mce/<class> telemetry records"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigFileArg,

    /// Read what is pending now, send it and exit (default: follow, as a daemon).
    #[arg(short = '1', long)]
    pub once: bool,

    /// Record source.
    #[arg(short = 's', long, value_enum, default_value_t = SourceKind::Auto)]
    pub source: SourceKind,

    /// The mcelog device (default: /dev/mcelog under TELEMETRICS_HOST_ROOT).
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// The tracefs mount (default: /sys/kernel/tracing, then /sys/kernel/debug/tracing,
    /// under TELEMETRICS_HOST_ROOT).
    #[arg(long, value_name = "DIR")]
    pub tracefs: Option<PathBuf>,

    /// Name of the private tracefs instance.
    #[arg(long, value_name = "NAME", default_value = "mceprobe")]
    pub instance: String,

    /// Replay raw `struct mce` records from FILE (one-shot), e.g. saved from /dev/mcelog.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "device", "tracefs"])]
    pub from_file: Option<PathBuf>,

    /// Record length of --from-file data and of a --device that is not the kernel device.
    #[arg(long, value_name = "BYTES", default_value_t = crate::mce::MCE_STRUCT_SIZE)]
    pub record_len: usize,

    /// How often sources that cannot be polled are re-read, and undelivered records
    /// retried (e.g. 3s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Print the records instead of sending them.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}
