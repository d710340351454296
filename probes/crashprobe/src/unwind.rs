//! Unwinding one thread of a core: CFI first (`.eh_frame_hdr`, `.eh_frame`, `.debug_frame`
//! of the module containing the pc), then the frame-pointer chain, with sanity checks that
//! stop at loops and garbage. Signal trampolines (CIE augmentation "S") are stepped through
//! with their DWARF expressions, and the interrupted pc is then looked up exactly.

use std::time::Instant;

use gimli::{
    CfaRule, EvaluationResult, Location, RegisterRule, UnwindSection, UnwindTableRow, Value,
};

use crate::elfcore::{Arch, CoreError, ThreadState, NREGS};
use crate::image::Reader;
use crate::modules::ModuleMap;
use crate::reader::CoreImage;

/// Frames unwound per thread (the C probe's FRAMES_MAX).
pub const MAX_FRAMES: usize = 64;
/// Largest frame the frame-pointer fallback accepts.
const MAX_FP_FRAME: u64 = 16 << 20;

/// How a frame was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The thread's registers.
    Context,
    /// Call frame information.
    Cfi,
    /// The frame-pointer chain.
    FramePointer,
    /// The return address on top of the stack (after a call to a bad address).
    StackTop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    pub pc: u64,
    /// The pc is exact (first frame, or interrupted by a signal) rather than a return
    /// address, so it is looked up as is instead of `pc - 1`.
    pub activation: bool,
    /// The frame is a signal trampoline (`__restore_rt`): its "return address" is the
    /// trampoline's first instruction, pushed by the kernel, so it is looked up as is.
    pub trampoline: bool,
    pub trust: Trust,
}

impl RawFrame {
    /// The address to symbolize.
    pub fn lookup_pc(&self) -> u64 {
        if self.activation || self.trampoline {
            self.pc
        } else {
            self.pc.wrapping_sub(1)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadTrace {
    pub tid: u32,
    pub frames: Vec<RawFrame>,
    /// [`MAX_FRAMES`] was reached.
    pub truncated: bool,
    /// Why unwinding stopped early on a corrupt stack, if it did.
    pub error: Option<String>,
    /// Unwinding stopped because the next frame lies in memory the core had but the
    /// reader did not keep (beyond a stack window or the spill cap).
    pub cut_at: Option<u64>,
}

#[derive(Clone, Copy)]
struct Regs {
    arch: Arch,
    slots: [Option<u64>; NREGS],
}

impl Regs {
    fn new(arch: Arch) -> Regs {
        Regs {
            arch,
            slots: [None; NREGS],
        }
    }
    fn get(&self, r: u16) -> Option<u64> {
        self.slots.get(r as usize).copied().flatten()
    }
    fn set(&mut self, r: u16, value: Option<u64>) {
        if let Some(slot) = self.slots.get_mut(r as usize) {
            *slot = value;
        }
    }
    fn pc(&self) -> Option<u64> {
        self.get(self.arch.pc)
    }
    fn sp(&self) -> Option<u64> {
        self.get(self.arch.sp)
    }
    fn fp(&self) -> Option<u64> {
        self.get(self.arch.fp)
    }
}

/// Unwind `thread`. Errors only when the time budget runs out.
pub fn unwind_thread(
    thread: &ThreadState,
    map: &ModuleMap<'_>,
    core: &CoreImage,
    deadline: Instant,
) -> Result<ThreadTrace, CoreError> {
    let arch = thread.arch;
    let mut regs = Regs {
        arch,
        slots: thread.regs.map(Some),
    };
    // Only the slots the architecture has.
    for (i, slot) in regs.slots.iter_mut().enumerate() {
        if !arch.prstatus_regs.iter().any(|(_, d)| *d as usize == i) {
            *slot = None;
        }
    }
    // Returning through a leaf frame (return address in the link register) leaves the
    // stack pointer where it was; two such steps in a row are a loop.
    let mut level_steps = 0u32;
    let mut frames = Vec::new();
    let mut activation = true;
    let mut trust = Trust::Context;
    let mut ctx = gimli::UnwindContext::<usize>::new();
    let mut truncated = false;
    let mut error = None;
    let mut cut_at = None;
    loop {
        core.take_dropped_read();
        if Instant::now() > deadline {
            return Err(CoreError::Timeout);
        }
        let (Some(pc), Some(sp)) = (regs.pc(), regs.sp()) else {
            break;
        };
        if frames.len() >= MAX_FRAMES {
            truncated = true;
            break;
        }
        frames.push(RawFrame {
            pc,
            activation,
            trampoline: false,
            trust,
        });
        let lookup = if activation { pc } else { pc.wrapping_sub(1) };
        let first = frames.len() == 1;
        // A handler returns to the trampoline's first byte; its FDE starts one byte early so
        // that `pc - 1` finds it, and the symbol is looked up at the pc itself.
        let step = if first && !map.is_executable(pc) {
            // A call through a bad pointer: the return address is on top of the stack.
            stack_top_step(&regs, map, core).map(|r| (r, false, Trust::StackTop))
        } else {
            cfi_step(&regs, lookup, map, core, &mut ctx)
                .map(|(r, signal)| (r, signal, Trust::Cfi))
                .or_else(|| fp_step(&regs, map, core).map(|r| (r, false, Trust::FramePointer)))
        };
        let Some((next, signal, how)) = step else {
            cut_at = core.take_dropped_read();
            break;
        };
        let (Some(npc), Some(nsp)) = (next.pc(), next.sp()) else {
            cut_at = core.take_dropped_read();
            break;
        };
        if npc == 0 || !map.is_executable(npc) {
            break;
        }
        // The stack grows down, so callers sit higher; a signal frame may switch stacks
        // (sigaltstack) but must change something.
        let level = nsp == sp && npc != pc && arch.link_register.is_some() && level_steps == 0;
        let progressed = if signal {
            (nsp, npc) != (sp, pc)
        } else {
            nsp > sp || level
        };
        level_steps = if level { level_steps + 1 } else { 0 };
        // A frame-pointer chain that points at itself is a loop; other values of the caller's
        // rbp may be legitimate (callers built without frame pointers).
        let chain_ok = how != Trust::FramePointer || next.fp() != regs.fp();
        if !progressed || !chain_ok {
            error = Some(format!(
                "stack loop after frame #{} of TID {}",
                frames.len() - 1,
                thread.tid
            ));
            break;
        }
        if signal {
            if let Some(f) = frames.last_mut() {
                f.trampoline = !f.activation;
            }
        }
        regs = next;
        activation = signal;
        trust = how;
    }
    Ok(ThreadTrace {
        tid: thread.tid,
        frames,
        truncated,
        error,
        cut_at,
    })
}

fn cfi_step(
    regs: &Regs,
    lookup: u64,
    map: &ModuleMap<'_>,
    core: &CoreImage,
    ctx: &mut gimli::UnwindContext<usize>,
) -> Option<(Regs, bool)> {
    let (module, _, svma) = map.resolve(lookup)?;
    let t = module.unwind_tables()?;
    if let Some(eh) = &t.eh_frame {
        let fde = match t.eh_frame_hdr.as_ref().and_then(|h| h.table()) {
            Some(table) => table
                .fde_for_address(eh, &t.bases, svma, gimli::EhFrame::cie_from_offset)
                .ok(),
            None => eh
                .fde_for_address(&t.bases, svma, gimli::EhFrame::cie_from_offset)
                .ok(),
        };
        if let Some(fde) = fde {
            let outermost = undefines_return_address(&fde, eh, &t.bases, regs.arch);
            if let Ok(row) = fde.unwind_info_for_address(eh, &t.bases, ctx, svma) {
                let signal = fde.is_signal_trampoline();
                return apply_row(row, eh, regs, core, outermost).map(|r| (r, signal));
            }
        }
    }
    let df = t.debug_frame.as_ref()?;
    let fde = df
        .fde_for_address(&t.bases, svma, gimli::DebugFrame::cie_from_offset)
        .ok()?;
    let signal = fde.is_signal_trampoline();
    let outermost = undefines_return_address(&fde, df, &t.bases, regs.arch);
    let row = fde.unwind_info_for_address(df, &t.bases, ctx, svma).ok()?;
    apply_row(row, df, regs, core, outermost).map(|r| (r, signal))
}

/// Does the FDE say `DW_CFA_undefined` of the return-address column (`_start`, thread
/// entry)? Unwind rows cannot tell that from a column left unmentioned, which on aarch64
/// means the return address is still in the link register.
fn undefines_return_address<'a, S: UnwindSection<Reader<'a>>>(
    fde: &gimli::FrameDescriptionEntry<Reader<'a>>,
    section: &S,
    bases: &gimli::BaseAddresses,
    arch: Arch,
) -> bool {
    let mut it = fde.instructions(section, bases);
    for _ in 0..4096 {
        match it.next() {
            Ok(Some(gimli::CallFrameInstruction::Undefined { register }))
                if register.0 == arch.ra_column =>
            {
                return true
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    false
}

fn apply_row<'a, S: UnwindSection<Reader<'a>>>(
    row: &UnwindTableRow<usize>,
    section: &S,
    regs: &Regs,
    core: &CoreImage,
    outermost: bool,
) -> Option<Regs> {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            regs.get(register.0)?.wrapping_add(*offset as u64)
        }
        CfaRule::Expression(e) => evaluate(e.get(section).ok()?, regs, core, None)?,
    };
    let arch = regs.arch;
    let mut out = Regs::new(arch);
    // DWARF columns 0..=last: the registers and the return-address column.
    let last = arch.sp.max(arch.fp).max(arch.ra_column);
    for r in 0..=last {
        let rule = row.register(gimli::Register(r));
        let value = match rule {
            // Unmentioned callee-saved registers keep their value (eh_frame convention);
            // an undefined return address ends the stack (_start, clone).
            RegisterRule::Undefined if r == arch.sp => Some(cfa),
            RegisterRule::Undefined if r == arch.ra_column && outermost => None,
            RegisterRule::Undefined if arch.callee_saved.contains(&r) => regs.get(r),
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => regs.get(r),
            RegisterRule::Offset(n) => core.read_u64(cfa.wrapping_add(n as u64)),
            RegisterRule::ValOffset(n) => Some(cfa.wrapping_add(n as u64)),
            RegisterRule::Register(x) => regs.get(x.0),
            RegisterRule::Expression(e) => evaluate(e.get(section).ok()?, regs, core, Some(cfa))
                .and_then(|addr| core.read_u64(addr)),
            RegisterRule::ValExpression(e) => evaluate(e.get(section).ok()?, regs, core, Some(cfa)),
            RegisterRule::Constant(c) => Some(c),
            _ => None,
        };
        out.set(r, value);
    }
    let ra = out.get(arch.ra_column).map(|a| a & arch.address_mask);
    out.set(arch.pc, ra);
    Some(out)
}

/// Evaluate a CFI DWARF expression against the registers and core memory.
fn evaluate(
    expr: gimli::Expression<Reader<'_>>,
    regs: &Regs,
    core: &CoreImage,
    initial: Option<u64>,
) -> Option<u64> {
    let encoding = gimli::Encoding {
        address_size: 8,
        format: gimli::Format::Dwarf32,
        version: 4,
    };
    let mut eval = expr.evaluation(encoding);
    eval.set_max_iterations(1000);
    if let Some(v) = initial {
        eval.set_initial_value(v);
    }
    let mut state = eval.evaluate().ok()?;
    for _ in 0..64 {
        state = match state {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let size = usize::from(size).min(8);
                let bytes = core.slice(address, size)?;
                let mut buf = [0u8; 8];
                buf[..size].copy_from_slice(bytes);
                eval.resume_with_memory(Value::Generic(u64::from_le_bytes(buf)))
                    .ok()?
            }
            EvaluationResult::RequiresRegister { register, .. } => eval
                .resume_with_register(Value::Generic(regs.get(register.0)?))
                .ok()?,
            _ => return None,
        };
    }
    if !matches!(state, EvaluationResult::Complete) {
        return None;
    }
    match eval.as_result().first()?.location {
        Location::Address { address } => Some(address),
        Location::Value { value } => value.to_u64(u64::MAX).ok(),
        _ => None,
    }
}

/// The frame record both architectures use: `[fp]` is the caller's frame pointer and
/// `[fp+8]` the return address (x86_64 `push rbp; mov rbp, rsp`; aarch64 `stp x29, x30`),
/// the caller's stack pointer is `fp+16`. Accepted only when the frame is above the stack
/// pointer, not absurdly large, and the return address is executable.
fn fp_step(regs: &Regs, map: &ModuleMap<'_>, core: &CoreImage) -> Option<Regs> {
    let arch = regs.arch;
    let bp = regs.fp()?;
    let sp = regs.sp()?;
    if bp < sp || bp % 8 != 0 || bp - sp > MAX_FP_FRAME {
        return None;
    }
    let ra = core.read_u64(bp.checked_add(8)?)? & arch.address_mask;
    let caller_bp = core.read_u64(bp)?;
    if !map.is_executable(ra) {
        return None;
    }
    let mut out = Regs::new(arch);
    out.set(arch.fp, Some(caller_bp));
    out.set(arch.sp, Some(bp.checked_add(16)?));
    out.set(arch.pc, Some(ra));
    Some(out)
}

/// After a call to a bad address the return address is where the call left it: on top of
/// the stack (x86_64) or in the link register (aarch64).
fn stack_top_step(regs: &Regs, map: &ModuleMap<'_>, core: &CoreImage) -> Option<Regs> {
    let arch = regs.arch;
    let sp = regs.sp()?;
    let ra = match arch.link_register {
        Some(lr) => regs.get(lr)?,
        None => core.read_u64(sp)?,
    } & arch.address_mask;
    if !map.is_executable(ra) {
        return None;
    }
    let mut out = *regs;
    out.set(arch.sp, Some(sp.checked_add(arch.call_push)?));
    out.set(arch.pc, Some(ra));
    Some(out)
}
