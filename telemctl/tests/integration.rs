//! telemctl's integration tests: the real binary in a temp `TELEMETRICS_ROOT`, plus the
//! checks of the repository's systemd units, man pages, default config and install layout.

#[path = "integration/common.rs"]
mod common;
#[path = "integration/crashes.rs"]
mod crashes;
#[path = "integration/install.rs"]
mod install;
#[path = "integration/journal.rs"]
mod journal;
#[path = "integration/man.rs"]
mod man;
#[path = "integration/package.rs"]
mod package;
#[path = "integration/services.rs"]
mod services;
#[path = "integration/status.rs"]
mod status;
#[path = "integration/units.rs"]
mod units;
