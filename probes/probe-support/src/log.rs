//! Log setup of the probes and of both daemons (telemprobd, telempostd): the systemd
//! journal when started by systemd (`JOURNAL_STREAM` set and the journald socket
//! reachable), stderr otherwise. `TELEMETRICS_LOG` sets the level: a level (`debug`) or
//! comma-separated `target=level` directives with an optional default level
//! (`postd=debug,warn`), as `tracing_subscriber::filter::Targets` reads them;
//! default (and when unreadable) `info`.

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable holding the log filter.
pub const LOG_ENV: &str = "TELEMETRICS_LOG";

/// The filter `TELEMETRICS_LOG` asks for (`info` when unset or unreadable).
pub fn filter_from_env() -> Targets {
    std::env::var(LOG_ENV)
        .ok()
        .and_then(|v| Targets::from_str(v.trim()).ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Install the global subscriber once, logging as `name` (the journal's
/// `SYSLOG_IDENTIFIER`); later calls are no-ops.
pub fn init(name: &'static str) {
    let registry = tracing_subscriber::registry().with(filter_from_env());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn directives() {
        let t = Targets::from_str("debug").unwrap();
        assert!(t.would_enable("x", &Level::DEBUG));
        let t = Targets::from_str("postd=debug,warn").unwrap();
        assert!(t.would_enable("postd::spool", &Level::DEBUG));
        assert!(!t.would_enable("probd", &Level::INFO));
        assert!(t.would_enable("probd", &Level::WARN));
    }
}
