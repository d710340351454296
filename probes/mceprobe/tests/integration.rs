//! mceprobe integration tests: payloads and classes (golden), the tracefs format and page
//! parsers, the device reader, and the binary against a test listener and telemprobd.

#[path = "integration/acceptance.rs"]
mod acceptance;
#[path = "integration/device.rs"]
mod device;
#[path = "integration/fixtures.rs"]
mod fixtures;
#[path = "integration/payload.rs"]
mod payload;
#[path = "integration/realdaemon.rs"]
mod realdaemon;
#[path = "integration/trace.rs"]
mod trace;
