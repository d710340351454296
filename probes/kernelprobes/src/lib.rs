//! Kernel-side probes of the telemetrics suite:
//!
//! * `klogscanner` — kernel oopses from `/dev/kmsg` ([`kmsg`], [`oops`]);
//! * `pstoreclean` / `pstoreprobe` — oopses saved by pstore across a crash ([`pstore`]);
//! * `journalprobe` — services of this boot that exited with an error ([`journal`]).
//!
//! Everything that decides what is reported is pure and tested on fixtures; the binaries
//! ([`cli`]) only wire inputs, the parser and `probe_support`'s `Sender` together; logging
//! is `probe_support::log` (the journal under systemd, stderr otherwise).

pub mod cli;
pub mod error;
pub mod journal;
pub mod kmsg;
pub mod lines;
pub mod oops;
pub mod privs;
pub mod pstore;

pub use error::ProbeError;
