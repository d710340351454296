//! What the reader keeps of a core: the [`Limits`] and, once the notes are known, the file
//! ranges worth keeping under them ([`wanted_file_ranges`]): each thread's stack window,
//! the first page of every ELF mapping, the vDSO, and without `NT_FILE` the small data
//! segments the `link_map` walk reads.
//!
//! Invariant: the ranges are sorted, disjoint and bounded by the limits, whatever the notes
//! say, so the memory kept does not depend on the core's size.

use crate::elfcore::{CoreNotes, Segment, AT_EXECFN, AT_RANDOM, AT_SYSINFO_EHDR};

/// Bounds of what the reader keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Stack bytes kept above each thread's stack pointer.
    pub stack_window: u64,
    /// Stack bytes kept above the crashing thread's stack pointer (its frames matter most,
    /// and large frames must not hide its callers).
    pub crash_stack_window: u64,
    /// Bytes kept at the top of the main thread's stack when the crashing thread runs
    /// elsewhere (a signal handler on an alternate stack): the interrupted frames are there.
    pub main_stack_top: u64,
    /// Stack bytes kept for all threads together (the per-thread window shrinks to fit).
    pub stack_budget: u64,
    /// Threads whose stacks are kept (and unwound).
    pub max_threads: usize,
    /// Bytes kept at the start of each ELF mapping (headers, notes, build-id).
    pub elf_head: u64,
    /// Distinct ELF mappings whose first page is kept.
    pub max_elf_heads: usize,
    /// Largest vDSO image kept.
    pub vdso_max: u64,
    /// Most bytes written to the temporary file when the notes come last.
    pub spill_cap: u64,
    /// Bytes of small data segments kept when the core lacks `NT_FILE`: the executable's
    /// dynamic section, the dynamic linker's `r_debug` and `link_map` list and its names
    /// are there, and the modules are found through them.
    pub link_map_budget: u64,
}

/// Bytes kept below a thread's stack pointer (the x86_64 red zone and a margin).
const STACK_BELOW: u64 = 512;
/// Smallest per-thread stack window when many threads share the budget.
const MIN_STACK_WINDOW: u64 = 16 << 10;
/// Largest data segment kept for the `link_map` walk (data sections and the dynamic
/// linker's allocations, not heaps or stacks).
const LINK_MAP_SEGMENT_MAX: u64 = 1 << 20;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            stack_window: 256 << 10,
            crash_stack_window: 8 << 20,
            main_stack_top: 1 << 20,
            stack_budget: 16 << 20,
            max_threads: 256,
            elf_head: 4096,
            max_elf_heads: 1024,
            vdso_max: 64 << 10,
            spill_cap: 1 << 30,
            link_map_budget: 16 << 20,
        }
    }
}

/// File ranges `(offset, len)` worth keeping, sorted and merged: each thread's stack window,
/// the first bytes of each file mapping that starts at file offset 0, and the vDSO; without
/// `NT_FILE`, the small data segments the `link_map` walk reads.
pub fn wanted_file_ranges(
    notes: &CoreNotes,
    loads_by_vaddr: &[Segment],
    limits: &Limits,
) -> Vec<(u64, u64)> {
    let mut want: Vec<(u64, u64)> = Vec::new();
    let nthreads = notes.threads.len().clamp(1, limits.max_threads.max(1));
    let window = (limits.stack_budget / nthreads as u64).clamp(
        MIN_STACK_WINDOW.min(limits.stack_window),
        limits.stack_window,
    );
    for (i, t) in notes.threads.iter().take(nthreads).enumerate() {
        let lo = t.sp().saturating_sub(STACK_BELOW);
        // The kernel writes the dumping (crashing) thread first.
        let above = if i == 0 {
            window.max(limits.crash_stack_window)
        } else {
            window
        };
        // Frames do not continue into the next mapping (a switch to another stack goes
        // through a signal frame, handled below), so the window ends with the stack's.
        let sp = t.sp();
        let seg_end = loads_by_vaddr
            .partition_point(|s| s.vaddr <= sp)
            .checked_sub(1)
            .map(|i| &loads_by_vaddr[i])
            .map(|s| s.vaddr.saturating_add(s.memsz))
            .filter(|end| *end > sp)
            .unwrap_or(u64::MAX);
        let hi = lo.saturating_add(above + STACK_BELOW).min(seg_end);
        want.push((lo, hi));
    }
    // The main thread's stack holds the auxiliary vector's strings at its top.
    let main_stack = notes
        .auxv_value(AT_EXECFN)
        .or_else(|| notes.auxv_value(AT_RANDOM))
        .and_then(|a| {
            let i = loads_by_vaddr
                .partition_point(|s| s.vaddr <= a)
                .checked_sub(1)?;
            let seg = &loads_by_vaddr[i];
            let end = seg.vaddr.saturating_add(seg.filesz);
            (a < end).then_some((seg.vaddr, end))
        });
    if let (Some((start, end)), Some(t)) = (main_stack, notes.threads.first()) {
        if !(start..end).contains(&t.sp()) && limits.main_stack_top > 0 {
            want.push((end.saturating_sub(limits.main_stack_top).max(start), end));
        }
    }
    let head = limits.elf_head.max(notes.page_size.min(64 << 10));
    let mut heads = 0usize;
    let mut last_path: Option<&str> = None;
    for f in &notes.files {
        if f.file_offset != 0 || last_path == Some(f.path.as_str()) {
            continue;
        }
        if heads >= limits.max_elf_heads {
            break;
        }
        heads += 1;
        last_path = Some(&f.path);
        want.push((f.start, f.start.saturating_add(head).min(f.end)));
    }
    if let Some(vdso) = notes.auxv_value(AT_SYSINFO_EHDR) {
        want.push((vdso, vdso.saturating_add(limits.vdso_max)));
    }
    if notes.files.is_empty() {
        let mut budget = limits.link_map_budget;
        for seg in loads_by_vaddr {
            // Writable data, and the read-only-after-relocation data (the dynamic section).
            if !seg.is_executable() && seg.filesz <= LINK_MAP_SEGMENT_MAX.min(budget) {
                budget -= seg.filesz;
                want.push((seg.vaddr, seg.vaddr.saturating_add(seg.filesz)));
            }
        }
    }
    let mut out = Vec::new();
    for (lo, hi) in want {
        let first = loads_by_vaddr.partition_point(|s| s.vaddr.saturating_add(s.filesz) <= lo);
        for seg in &loads_by_vaddr[first..] {
            if seg.vaddr >= hi {
                break;
            }
            let a = lo.max(seg.vaddr);
            let b = hi.min(seg.vaddr.saturating_add(seg.filesz));
            if a < b {
                let off = seg.offset.saturating_add(a - seg.vaddr);
                out.push((off, off.saturating_add(b - a)));
            }
        }
    }
    merge(out).into_iter().map(|(a, b)| (a, b - a)).collect()
}

/// Sort `(start, end)` ranges and merge overlapping or touching ones.
pub(super) fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|(a, b)| a < b);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elfcore::{PF_W, PT_LOAD};

    #[test]
    fn merge_ranges() {
        assert_eq!(
            merge(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]),
            vec![(0, 8), (10, 30)]
        );
    }

    fn thread(tid: u32, sp: u64) -> crate::elfcore::ThreadState {
        let mut regs = [0u64; crate::elfcore::NREGS];
        regs[7] = sp;
        crate::elfcore::ThreadState {
            tid,
            cursig: 11,
            arch: crate::elfcore::X86_64,
            regs,
        }
    }

    fn load(vaddr: u64, size: u64, offset: u64) -> Segment {
        Segment {
            p_type: PT_LOAD,
            flags: PF_W,
            offset,
            vaddr,
            filesz: size,
            memsz: size,
        }
    }

    #[test]
    fn stack_windows_end_with_their_mapping_and_the_crashing_thread_gets_more() {
        const MIB: u64 = 1 << 20;
        // Two thread stacks of 8 MiB side by side, and a main stack far above.
        let loads = vec![
            load(0x1000_0000, 8 * MIB, 0x1000),
            load(0x1000_0000 + 8 * MIB, 8 * MIB, 0x1000 + 8 * MIB),
            load(0x7000_0000, 16 * MIB, 0x1000 + 16 * MIB),
        ];
        let mut notes = CoreNotes::default();
        // The crashing thread first, 4 MiB below its stack's top; the other near its top.
        notes.threads.push(thread(1, 0x1000_0000 + 4 * MIB));
        notes.threads.push(thread(2, 0x1000_0000 + 16 * MIB - 4096));
        let limits = Limits::default();
        let want = wanted_file_ranges(&notes, &loads, &limits);
        let kept: u64 = want.iter().map(|r| r.1).sum();
        // All 4 MiB above the crashing thread's pointer, and only the 4 KiB above the
        // other's: neither window runs into the next mapping.
        assert_eq!(
            kept,
            4 * MIB + STACK_BELOW + 4096 + STACK_BELOW,
            "{want:x?}"
        );
        // The crashing thread ran on another stack: the main stack's top is kept too.
        notes.auxv.push((AT_EXECFN, 0x7000_0000 + 16 * MIB - 100));
        let want = wanted_file_ranges(&notes, &loads, &limits);
        let top = 0x1000 + 32 * MIB;
        assert!(
            want.iter()
                .any(|&(o, l)| o + l == top && l == limits.main_stack_top),
            "{want:x?}"
        );
    }
}
