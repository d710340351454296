//! crashprobe: the kernel's `core_pattern` handler. It reads an ELF core once (streaming from
//! the pipe, keeping only stacks, ELF headers and the vDSO), unwinds every thread with CFI
//! and frame pointers, symbolizes with DWARF (inlined frames, file:line), symbol tables and
//! separate debug files, and sends one crash record through libtelemetry.
//!
//! Layers: [`elfcore`] (ELF core layout and notes) → [`reader`] (pipe/file input) →
//! [`modules`] (files and vDSO, unwind tables, symbols) → [`unwind`] → [`analysis`] and
//! [`payload`] (the record) → [`cli`] (options, hardening, sending), with [`crashloop`]
//! (per-signature limits on the finished payload) just before the send.

pub mod analysis;
pub mod arena;
pub mod cli;
pub mod crashloop;
pub mod elfcore;
pub mod harden;
pub mod modules;
pub mod payload;
pub mod reader;
pub mod unwind;

pub use analysis::{analyze, report_for, AnalysisOptions, Report};
pub use elfcore::CoreError;
pub use reader::{CoreImage, Limits, ReadMode};
