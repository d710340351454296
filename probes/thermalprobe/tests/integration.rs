//! thermalprobe integration tests: deltas, coalescing and state (library), and the binary
//! against sysfs fixture trees whose counters change between polls.

#[path = "integration/acceptance.rs"]
mod acceptance;
#[path = "integration/fixtures.rs"]
mod fixtures;
#[path = "integration/poller.rs"]
mod poller;
#[path = "integration/realdaemon.rs"]
mod realdaemon;
