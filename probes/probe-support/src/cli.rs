//! Options and option syntax shared by the probes' command lines.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// `-f FILE`: the configuration [`crate::deliver::Sender::new`] loads, passed on in each
/// frame's `CFG:` field. Flattened first into each probe's command line.
#[derive(Debug, Clone, Args)]
pub struct ConfigFileArg {
    /// Configuration file (default: the standard telemetrics.conf selection).
    #[arg(short = 'f', long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

/// A positive duration: `N` (seconds), `Nms`, `Ns`, `Nm` (or `Nmin`) or `Nh`.
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
