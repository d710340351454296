//! Log setup shared by both daemons and the probes (one implementation, in
//! `probe-support`): the systemd journal when started by systemd (`JOURNAL_STREAM` set and
//! the journald socket reachable), stderr otherwise. `TELEMETRICS_LOG` (an `EnvFilter`
//! directive, default `info`) sets the level. `init(name)` installs the global subscriber
//! once; later calls are no-ops.

pub use probe_support::log::init;
