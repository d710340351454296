//! Shared test harness for the suite's integration and end-to-end tests (ripgrep style):
//! [`TestRoot`] (a temp `TELEMETRICS_ROOT` + host root with a config and opt-in),
//! [`bin_path`] (the suite's built binaries), and, in their modules, the test daemons and
//! the test collector. Every helper dumps its logs and the temp tree when a test fails.

pub mod root;

pub use root::{bin_path, TestRoot};
