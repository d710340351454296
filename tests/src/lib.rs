//! Shared test harness for the suite's integration and end-to-end tests (ripgrep style):
//! [`TestRoot`] (a temp `TELEMETRICS_ROOT` + host root with a config and opt-in),
//! [`bin_path`] (the suite's built binaries), [`daemon::TestDaemon`] (a child process with
//! captured logs), [`daemon_cli`] (the daemons' getopt table), [`listener`] (stand-ins for telemprobd), [`cabi`] (C programs against
//! `libtelemetry.so.4`) and [`collector`] (a loopback HTTP collector). Every helper dumps
//! its logs and the temp tree when a test fails.

pub mod cabi;
pub mod collector;
pub mod daemon;
pub mod daemon_cli;
pub mod listener;
pub mod root;

pub use daemon::{wait_until, TestDaemon};
pub use root::{bin_path, TestRoot};
