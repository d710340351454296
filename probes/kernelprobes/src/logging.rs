//! Log setup for the probes: stderr, which systemd puts in the journal under the unit's
//! name. `TELEMETRICS_LOG` (a `tracing_subscriber::filter::Targets` directive, default
//! `info`) sets the level.

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Install the global subscriber once; later calls are no-ops.
pub fn init() {
    let filter = std::env::var("TELEMETRICS_LOG")
        .ok()
        .and_then(|v| Targets::from_str(v.trim()).ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    // The builder's own level filter (INFO by default) opened fully: `filter` decides.
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .finish()
        .with(filter)
        .try_init();
}
