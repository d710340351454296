//! Log setup shared by both daemons and the probes (one implementation, in
//! `probe-support`): the systemd journal when started by systemd (`JOURNAL_STREAM` set and
//! the journald socket reachable), stderr otherwise. `TELEMETRICS_LOG` (a level or
//! `target=level` directives, default `info`) sets the level. `init(name)` installs the global subscriber
//! once; later calls are no-ops.

pub use probe_support::log::init;

/// Log what the config file holds that is accepted but suspicious (unknown keys, with the
/// known key they most likely misspell), once per load.
pub fn warn_config(cfg: &libtelemetry::Config) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
}
