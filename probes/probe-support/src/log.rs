//! Log setup of the probes and of both daemons (telemprobd, telempostd): the systemd
//! journal when started by systemd (`JOURNAL_STREAM` set and the journald socket
//! reachable), stderr otherwise. `TELEMETRICS_LOG` (an `EnvFilter` directive, default
//! `info`) sets the level.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber once, logging as `name` (the journal's
/// `SYSLOG_IDENTIFIER`); later calls are no-ops.
pub fn init(name: &'static str) {
    let filter =
        EnvFilter::try_from_env("TELEMETRICS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(journald.with_syslog_identifier(name.to_string()))
                .try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}
