//! crashprobe: the kernel's `core_pattern` handler. It reads an ELF core once (streaming from
//! the pipe, keeping only stacks, ELF headers and the vDSO), unwinds every thread with CFI
//! and frame pointers, names the frames as the C probe did (ELF symbols, line rows) or with
//! inlined DWARF frames, and sends one crash record through libtelemetry. With the crashed
//! process's PID it reads the files that process mapped, opened while still root.
//!
//! Layers: [`elfcore`] (ELF core layout and notes) → [`reader`] (pipe/file input) →
//! [`image`] (an ELF file or in-memory image: mapping, build-id, soname) → [`procfiles`]
//! (the crashed process's own files) → [`search`] (options, sysroot paths, debug files) and
//! [`cfi`] (unwind tables) → [`modules`] (the process's files and the vDSO, or [`linkmap`]
//! for a core without `NT_FILE`, and proof that they are the mapped ones) → [`symbolize`]
//! → [`unwind`] → [`analysis`] and [`payload`] (the record) → [`cli`] (options, hardening,
//! sending), with [`crashloop`] (per-signature limits on the finished payload) just before
//! the send, and [`debuginfod`] (debug files fetched by build-id, when the configuration
//! enables it) between unwinding and naming.

pub mod analysis;
pub mod arena;
pub mod cfi;
pub mod cli;
pub mod crashloop;
pub mod debuginfod;
mod diag;
pub mod elfcore;
pub mod harden;
pub mod image;
pub mod linkmap;
pub mod modules;
pub mod payload;
pub mod procfiles;
pub mod reader;
pub mod search;
pub mod symbolize;
pub mod unwind;

pub use analysis::{analyze, report_for, AnalysisOptions, Report};
pub use elfcore::CoreError;
pub use reader::{CoreImage, Limits, ReadMode};
