//! Kernel-side probes of the telemetrics suite:
//!
//! * `klogscanner` — kernel oopses from `/dev/kmsg` ([`kmsg`], [`oops`]);
//! * `pstoreclean` / `pstoreprobe` — oopses saved by pstore across a crash ([`pstore`]);
//! * `journalprobe` — services of this boot that exited with an error ([`journal`]).
//!
//! Everything that decides what is reported is pure and tested on fixtures; the binaries
//! ([`cli`]) only wire inputs, the parser and [`send::Sender`] together.

pub mod cli;
pub mod error;
pub mod journal;
pub mod kmsg;
pub mod lines;
pub mod logging;
pub mod oops;
pub mod privs;
pub mod pstore;
pub mod send;

pub use error::ProbeError;
