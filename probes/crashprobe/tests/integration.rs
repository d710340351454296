//! crashprobe end to end: real crashing programs, real cores from gdb, the kernel's
//! notes-first layout through a real pipe, privacy filters, options and hostile cores.

#[path = "integration/support.rs"]
mod support;

#[path = "integration/backtraces.rs"]
mod backtraces;

#[path = "integration/streaming.rs"]
mod streaming;

#[path = "integration/options.rs"]
mod options;

#[path = "integration/hostile.rs"]
mod hostile;

#[path = "integration/crashloop.rs"]
mod crashloop;

#[path = "integration/conformance.rs"]
mod conformance;

#[path = "integration/live.rs"]
mod live;

#[path = "integration/aarch64.rs"]
mod aarch64;

#[path = "integration/debuginfod.rs"]
mod debuginfod;
