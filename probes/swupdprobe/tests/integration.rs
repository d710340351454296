//! swupdprobe integration tests: name rules, every swupd class, malformed names and
//! contents, quarantine, drain and watch modes, and delivery across kill -9.

#[path = "integration/acceptance.rs"]
mod acceptance;
#[path = "integration/fixtures.rs"]
mod fixtures;
#[path = "integration/killing.rs"]
mod killing;
#[path = "integration/names.rs"]
mod names;
#[path = "integration/realdaemon.rs"]
mod realdaemon;
