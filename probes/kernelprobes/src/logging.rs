//! Log setup for the probes: stderr, which systemd puts in the journal under the unit's
//! name. `TELEMETRICS_LOG` (an `EnvFilter` directive, default `info`) sets the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once; later calls are no-ops.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("TELEMETRICS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}
