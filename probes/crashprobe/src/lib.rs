//! crashprobe: the kernel's `core_pattern` handler. It reads an ELF core once (streaming from
//! the pipe, keeping only stacks, ELF headers and the vDSO), unwinds every thread with CFI
//! and frame pointers, names the frames as the C probe did (ELF symbols, line rows) or with
//! inlined DWARF frames, and sends one crash record through libtelemetry. With the crashed
//! process's PID it reads the files that process mapped, opened while still root.
//!
//! Layers: [`elfcore`] (ELF core layout and notes) → [`reader`] (pipe/file input) →
//! [`modules`] (the process's files and the vDSO, or [`linkmap`] for a core without
//! `NT_FILE`, proof that they are the mapped ones,
//! debug files, unwind tables) → [`symbolize`] → [`unwind`] → [`analysis`] and [`payload`]
//! (the record) → [`cli`] (options, hardening, sending), with [`crashloop`] (per-signature
//! limits on the finished payload) just before the send, and [`debuginfod`] (debug files
//! fetched by build-id, when the configuration enables it) between unwinding and naming.

pub mod analysis;
pub mod arena;
pub mod cli;
pub mod crashloop;
pub mod debuginfod;
pub mod elfcore;
pub mod harden;
pub mod linkmap;
pub mod modules;
pub mod payload;
pub mod reader;
pub mod symbolize;
pub mod unwind;

pub use analysis::{analyze, report_for, AnalysisOptions, Report};
pub use elfcore::CoreError;
pub use reader::{CoreImage, Limits, ReadMode};
