//! Command line (clap). The top-level usage text is the C client's, with `status` added.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "telemctl",
    version,
    disable_help_subcommand = true,
    about = "Control actions for telemetry services"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Stops all running telemetry services
    Stop,
    /// Starts all telemetry services
    Start,
    /// Restarts all telemetry services
    Restart,
    /// Checks if telemprobd and telempostd are active
    IsActive,
    /// Opts in to telemetry, and starts telemetry services
    OptIn,
    /// Opts out of telemetry, and stops telemetry services
    OptOut,
    /// Prints telemetry journal contents
    Journal(JournalArgs),
    /// Reports the state of the telemetry services
    Status(StatusArgs),
    /// Lists crash signatures with their counts (crash-loop control)
    Crashes(CrashesArgs),
}

/// The C `telem_journal` options (long forms with underscores as in C, dashes accepted too)
/// plus output and time filters.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub struct JournalArgs {
    /// Print only the entry with this record id
    #[arg(
        short = 'r',
        long = "record_id",
        visible_alias = "record-id",
        value_name = "record_id"
    )]
    pub record_id: Option<String>,
    /// Print only entries with this event id
    #[arg(
        short = 'e',
        long = "event_id",
        visible_alias = "event-id",
        value_name = "event_id"
    )]
    pub event_id: Option<String>,
    /// Print only entries of this classification; `a/b/*` matches every `a/b/...`
    #[arg(short = 'c', long = "classification", value_name = "classification")]
    pub classification: Option<String>,
    /// Print only entries of this boot
    #[arg(
        short = 'b',
        long = "boot_id",
        visible_alias = "boot-id",
        value_name = "boot_id"
    )]
    pub boot_id: Option<String>,
    /// Print each record's retained payload after its entry
    #[arg(short = 'i', long = "include_record", visible_alias = "include-record")]
    pub include_record: bool,
    /// Print a header line and the number of records
    #[arg(short = 'V', long = "verbose")]
    pub verbose: bool,
    /// Entries at or after this time (YYYY-MM-DD[ HH:MM[:SS]], @EPOCH, today, yesterday, 2h, 30min, ...)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Entries at or before this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print only the last N matching entries
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// One JSON object per entry and line
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header row
    #[arg(long)]
    pub csv: bool,
    /// Do not pipe the output into a pager
    #[arg(long)]
    pub no_pager: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CrashesArgs {
    /// Print the signatures as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// Width of the command column in the usage text (C: `"  %-9s %s\n"`).
const COMMAND_WIDTH: usize = 9;

/// The top-level usage text, in the C client's layout.
pub fn usage(argv0: &str) -> String {
    let mut s = format!("{argv0} - Control actions for telemetry services\n\n");
    let lines: &[(&str, &str)] = &[
        ("stop", "Stops all running telemetry services"),
        ("start", "Starts all telemetry services"),
        ("restart", "Restarts all telemetry services"),
        ("is-active", "Checks if telemprobd and telempostd are active"),
        ("opt-in", "Opts in to telemetry, and starts telemetry services"),
        ("opt-out", "Opts out of telemetry, and stops telemetry services"),
        (
            "journal",
            "Prints telemetry journal contents. Use -h argument for journal\n            command for more options",
        ),
        ("status", "Reports the state of the telemetry services (--json)"),
        ("crashes", "Lists crash signatures with their counts (--json)"),
    ];
    for (cmd, text) in lines {
        s.push_str(&format!("  {cmd:<COMMAND_WIDTH$} {text}\n"));
    }
    s
}

/// `journal -h`, in the C tool's layout.
pub fn journal_usage() -> String {
    r#"Usage:
  telemctl journal [-Vi] [-r <record_id>] [-e <event_id>] [-c <classification>] [-b <boot_id>]
                   [--since <time>] [--until <time>] [-n <N>] [--json|--csv] [--no-pager]

Where:
  -r, --record_id       Print record with specific record_id
  -e, --event_id        Print records with specific event_id
  -c, --classification  Print records with specific classification (a/b/* matches a prefix)
  -b, --boot_id         Print records with specific boot_id
  -i, --include_record  Include the retained record payload in the output
  -V, --verbose         Print a header and the number of records
  -h, --help            Display this help message
      --since <time>    Records at or after <time>: YYYY-MM-DD[ HH:MM[:SS]], @EPOCH,
                        now, today, yesterday, or an age such as 2h, 30min, 1d12h
      --until <time>    Records at or before <time> (same forms)
  -n, --lines <N>       Print only the last N matching records
      --json            One JSON object per record and line
      --csv             CSV with a header row
      --no-pager        Do not pipe the output into a pager
"#
    .to_string()
}
