//! From a parsed core to a crash report: modules, unwinding every thread, symbolization and
//! the payload, all within a time budget.

use std::time::{Duration, Instant};

use libtelemetry::record::MAX_PAYLOAD;

use crate::arena::Arena;
use crate::elfcore::CoreError;
use crate::modules::{ModuleMap, SymbolOptions};
use crate::payload::{
    frame_lines, header, PayloadBuilder, CLASS_CLR, CLASS_ERROR, SEVERITY_CLR, SEVERITY_ERROR,
    STACK_NOT_KEPT,
};
use crate::reader::{CoreImage, Limits};
use crate::unwind::{unwind_thread, ThreadTrace};

#[derive(Debug, Clone)]
pub struct AnalysisOptions {
    pub limits: Limits,
    pub symbols: SymbolOptions,
    /// Time allowed for unwinding and symbolization.
    pub budget: Duration,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            limits: Limits::default(),
            symbols: SymbolOptions::default(),
            budget: Duration::from_secs(20),
        }
    }
}

/// A record ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub classification: &'static str,
    pub severity: u32,
    pub payload: String,
}

impl Report {
    pub fn is_error(&self) -> bool {
        self.classification == CLASS_ERROR
    }
}

/// The record for a core that could not be read: header and the error.
pub fn error_report(process: &str, signal: Option<i64>, err: &CoreError) -> Report {
    let text = header(process, None, signal, false, Some(&err.to_string()));
    Report {
        classification: CLASS_ERROR,
        severity: SEVERITY_ERROR,
        payload: PayloadBuilder::new(text).finish(),
    }
}

/// Unwind and symbolize every thread of `core` (the crashing one first).
pub fn analyze(
    core: &CoreImage,
    process: &str,
    signal: Option<i64>,
    opts: &AnalysisOptions,
) -> Report {
    let deadline = Instant::now() + opts.budget;
    let mut error: Option<CoreError> = core
        .truncation()
        .map(|(have, want)| CoreError::Short { have, want });
    let arena = Arena::new();
    let mut map = ModuleMap::new(core, &arena, &opts.symbols);
    let mut traces = unwind_all(core, &map, opts, deadline, &mut error);
    if let Some(client) = &opts.symbols.debuginfod {
        let pcs = traces
            .iter()
            .flat_map(|t| t.frames.iter().map(|f| f.lookup_pc()));
        let pcs: Vec<u64> = pcs.collect();
        let (replaced, outcome) = map.fetch_missing(pcs.into_iter(), client);
        if outcome != Default::default() {
            crate::diag::say(&format!(
                "debuginfod: {} cached, {} fetched, {} not found, {} failed or out of time",
                outcome.cached, outcome.fetched, outcome.missing, outcome.failed
            ));
        }
        if replaced {
            // The fetched files' CFI can take unwinding further.
            error = core
                .truncation()
                .map(|(have, want)| CoreError::Short { have, want });
            traces = unwind_all(core, &map, opts, deadline, &mut error);
        }
    }
    // Symbolize only as much as can fit in a payload.
    let mut blocks: Vec<(u32, Vec<String>)> = Vec::new();
    let mut size = 0usize;
    'threads: for trace in &traces {
        let mut lines = Vec::new();
        let mut n = 0usize;
        for f in &trace.frames {
            if Instant::now() > deadline {
                error.get_or_insert(CoreError::Timeout);
                blocks.push((trace.tid, lines));
                break 'threads;
            }
            for l in frame_lines(&mut n, &map.symbolize(f.lookup_pc()), opts.symbols.style) {
                size += l.len();
                lines.push(l);
            }
        }
        if trace.cut_at.is_some() {
            size += STACK_NOT_KEPT.len();
            lines.push(STACK_NOT_KEPT.to_string());
        }
        size += format!("\nBacktrace (TID {}):\n", trace.tid).len();
        blocks.push((trace.tid, lines));
        if size > MAX_PAYLOAD {
            break;
        }
    }
    let too_many = traces.iter().any(|t| t.truncated);
    let pid = core
        .notes
        .pid
        .or_else(|| core.notes.threads.first().map(|t| t.tid));
    let err_text = error.as_ref().map(ToString::to_string);
    let mut b = PayloadBuilder::new(header(process, pid, signal, too_many, err_text.as_deref()));
    'out: for (tid, lines) in &blocks {
        // A thread header goes in only with its first frame line.
        let mut head = format!("\nBacktrace (TID {tid}):\n");
        head.push_str(lines.first().map_or("", String::as_str));
        if !b.push(&head) {
            break;
        }
        for l in lines.iter().skip(1) {
            if !b.push(l) {
                break 'out;
            }
        }
    }
    let (classification, severity) = if error.is_some() {
        (CLASS_ERROR, SEVERITY_ERROR)
    } else {
        (CLASS_CLR, SEVERITY_CLR)
    };
    Report {
        classification,
        severity,
        payload: b.finish(),
    }
}

fn unwind_all(
    core: &CoreImage,
    map: &ModuleMap<'_>,
    opts: &AnalysisOptions,
    deadline: Instant,
    error: &mut Option<CoreError>,
) -> Vec<ThreadTrace> {
    let mut traces: Vec<ThreadTrace> = Vec::new();
    for t in core.notes.threads.iter().take(opts.limits.max_threads) {
        match unwind_thread(t, map, core, deadline) {
            Ok(trace) => {
                if let Some(e) = &trace.error {
                    error.get_or_insert_with(|| CoreError::Malformed(e.clone()));
                }
                traces.push(trace)
            }
            Err(e) => {
                *error = Some(e);
                break;
            }
        }
    }
    traces
}

/// Analyse a core read by [`crate::reader`], or report why it could not be read.
pub fn report_for(
    core: Result<CoreImage, CoreError>,
    process: &str,
    signal: Option<i64>,
    opts: &AnalysisOptions,
) -> Report {
    match core {
        Ok(core) => analyze(&core, process, signal, opts),
        Err(e) => error_report(process, signal, &e),
    }
}
