//! End-to-end tests: the suite's real binaries and `libtelemetry.so.4` working together in
//! temp roots. Run with `cargo test --workspace` (they need the daemons, the probes and the
//! C library built into the same target dir). Modules live in `e2e/`.

#[path = "e2e/probd_c.rs"]
mod probd_c;

#[path = "e2e/postd.rs"]
mod postd;

#[path = "e2e/chaos.rs"]
mod chaos;

#[path = "e2e/hostile.rs"]
mod hostile;
