//! Names and source lines for addresses of one module.
//!
//! Two styles (see crashprobe(1)):
//! - [`FrameStyle::Compatible`] (default): one line per physical frame, named as the
//!   telemetrics backend expects from the C probe (elfutils' libdwfl): the ELF symbol that
//!   holds the address, mangled, chosen as `dwfl_module_addrname` chooses it, and the
//!   line-table row of the address with the file name spelled as libdw builds it.
//! - [`FrameStyle::Rich`]: inlined frames from DWARF, demangled names, file names resolved
//!   against the compilation directory.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, SymbolKind};

use crate::arena::Arena;
use crate::image::{Image, Reader};

/// Largest decompressed debug section accepted.
const MAX_SECTION_SIZE: u64 = 256 << 20;
/// Inlined frames reported for one address.
const MAX_INLINE_DEPTH: usize = 16;
/// Compilation units whose line table or symbolizer is kept for later frames (least
/// recently used ones are dropped first).
pub const MAX_CACHED_UNITS: usize = 32;
/// Address ranges indexed per module.
const MAX_INDEX_RANGES: usize = 1 << 20;
/// Rows kept from one unit's line program.
const MAX_LINE_ROWS: usize = 1 << 22;
/// Symbols looked at around one address (a sanity bound for hostile tables).
const MAX_SYMBOL_SCAN: usize = 1 << 16;

/// How frames are named in the payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FrameStyle {
    /// As the C probe (2.4.3) printed them, which the telemetrics backend parses.
    #[default]
    Compatible,
    /// Inlined frames, demangled names, resolved file paths.
    Rich,
}

/// Symbol information for one address: innermost (inlined) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymFrame {
    pub function: Option<String>,
    pub location: Option<(String, u32)>,
}

/// A small least-recently-used map (most recent last).
struct Lru<K, V> {
    entries: Vec<(K, V)>,
    cap: usize,
}

impl<K: PartialEq + Copy, V: Clone> Lru<K, V> {
    fn new(cap: usize) -> Lru<K, V> {
        Lru {
            entries: Vec::new(),
            cap,
        }
    }

    fn get(&mut self, key: K) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(i);
        let v = e.1.clone();
        self.entries.push(e);
        Some(v)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.cap {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<K> {
        self.entries.iter().map(|e| e.0).collect()
    }
}

/// Everything needed to name addresses of one module.
pub struct Symbolizer<'a> {
    style: FrameStyle,
    dwarf: Option<DwarfIndex<'a>>,
    elf: ElfSymbols<'a>,
}

impl<'a> Symbolizer<'a> {
    /// `is_exe`: the module is the main executable. In the compatible style a shared
    /// library's own `.symtab` is used only when the library also carries DWARF, as the C
    /// probe saw libraries: their loaded image (dynamic symbols) plus a debug file, which
    /// may be the library itself when it has debug information.
    pub fn new(
        img: &Image<'a>,
        is_exe: bool,
        arena: &'a Arena,
        style: FrameStyle,
    ) -> Symbolizer<'a> {
        let has_dwarf = |o: &object::File<'a>| o.section_by_name(".debug_info").is_some();
        let dwarf_obj = Some(&img.obj)
            .filter(|o| has_dwarf(o))
            .or(img.debug.as_ref().filter(|d| has_dwarf(d)));
        let dwarf = dwarf_obj.and_then(|o| DwarfIndex::new(o, arena));
        let own_symtab = is_exe || style == FrameStyle::Rich || has_dwarf(&img.obj);
        Symbolizer {
            style,
            dwarf,
            elf: ElfSymbols::new(&img.obj, own_symtab, img.debug.as_ref()),
        }
    }

    /// Frames for `svma` (one in the compatible style).
    pub fn lookup(&self, svma: u64) -> Vec<SymFrame> {
        match self.style {
            FrameStyle::Compatible => vec![SymFrame {
                function: self.elf.lookup(svma).map(str::to_string),
                location: self.dwarf.as_ref().and_then(|d| d.line_row(svma)),
            }],
            FrameStyle::Rich => {
                let mut frames = self
                    .dwarf
                    .as_ref()
                    .map(|d| d.inline_frames(svma))
                    .unwrap_or_default();
                if frames.is_empty() {
                    frames.push(SymFrame {
                        function: None,
                        location: None,
                    });
                }
                if let Some(outer) = frames.last_mut() {
                    if outer.function.is_none() {
                        outer.function = self.elf.lookup(svma).map(demangle);
                    }
                }
                frames
            }
        }
    }
}

/// One entry of the ELF symbol table used for names.
struct ElfSym<'a> {
    value: u64,
    size: u64,
    /// libdwfl's preference: global 3, weak 2, local 1, other 0.
    binding: u8,
    section: Option<usize>,
    name: &'a str,
}

/// The symbol table libdwfl would use: the file's `.symtab`, else the separate debug
/// file's `.symtab`, else the file's `.dynsym`; searched as `dwfl_module_addrsym` does.
struct ElfSymbols<'a> {
    /// Eligible symbols in table order.
    syms: Vec<ElfSym<'a>>,
    /// Index of the first non-local symbol in `syms` (locals come first in ELF tables).
    first_global: usize,
    /// `syms` indices sorted by value.
    by_value: Vec<u32>,
    /// Running maximum of `value + size` along `by_value`, over all and over non-locals.
    max_end_all: Vec<u64>,
    max_end_global: Vec<u64>,
    /// Allocated sections of the symbol file: `(address, size, index)`.
    sections: Vec<(u64, u64, usize)>,
}

fn binding_value(st_info: u8) -> u8 {
    match st_info >> 4 {
        1 => 3,
        2 => 2,
        0 => 1,
        _ => 0,
    }
}

impl<'a> ElfSymbols<'a> {
    fn new(
        main: &object::File<'a>,
        own_symtab: bool,
        debug: Option<&object::File<'a>>,
    ) -> ElfSymbols<'a> {
        let (file, table) = if let Some(t) = main.symbol_table().filter(|_| own_symtab) {
            (main, Some(t))
        } else if let Some((d, t)) = debug.and_then(|d| Some((d, d.symbol_table()?))) {
            (d, Some(t))
        } else {
            (main, main.dynamic_symbol_table())
        };
        let mut syms = Vec::new();
        let mut first_global = None;
        for s in table.iter().flat_map(|t| t.symbols()) {
            let st_info = match s.flags() {
                object::SymbolFlags::Elf { st_info, .. } => st_info,
                _ => 0,
            };
            if matches!(
                s.kind(),
                SymbolKind::Section | SymbolKind::File | SymbolKind::Tls
            ) || s.is_undefined()
            {
                continue;
            }
            let Ok(name) = s.name() else { continue };
            if name.is_empty() {
                continue;
            }
            if st_info >> 4 != 0 && first_global.is_none() {
                first_global = Some(syms.len());
            }
            syms.push(ElfSym {
                value: s.address(),
                size: s.size(),
                binding: binding_value(st_info),
                section: s.section_index().map(|i| i.0),
                name,
            });
        }
        let first_global = first_global.unwrap_or(syms.len());
        let mut by_value: Vec<u32> = (0..syms.len() as u32).collect();
        by_value.sort_by_key(|&i| syms[i as usize].value);
        let (mut all, mut global) = (0u64, 0u64);
        let mut max_end_all = Vec::with_capacity(by_value.len());
        let mut max_end_global = Vec::with_capacity(by_value.len());
        for &i in &by_value {
            let s = &syms[i as usize];
            let end = s.value.saturating_add(s.size);
            all = all.max(end);
            if i as usize >= first_global {
                global = global.max(end);
            }
            max_end_all.push(all);
            max_end_global.push(global);
        }
        let sections = file
            .sections()
            .filter(|s| s.size() > 0 && s.address() > 0)
            .map(|s| (s.address(), s.size(), s.index().0))
            .collect();
        ElfSymbols {
            syms,
            first_global,
            by_value,
            max_end_all,
            max_end_global,
            sections,
        }
    }

    fn section_of(&self, addr: u64) -> Option<usize> {
        self.sections
            .iter()
            .find(|(a, s, _)| *a <= addr && addr - a < *s)
            .map(|e| e.2)
    }

    /// The name `dwfl_module_addrname` gives `addr`.
    fn lookup(&self, addr: u64) -> Option<&'a str> {
        let below = self
            .by_value
            .partition_point(|&i| self.syms[i as usize].value <= addr);
        if below == 0 {
            return None;
        }
        // Symbols that can matter: those whose range reaches past `addr`, and sizeless ones
        // above every sized symbol's end (libdwfl's "min_label").
        let min_label_all = self.max_end_all[below - 1];
        let mut candidates: Vec<usize> = Vec::new();
        for (n, pos) in (0..below).rev().enumerate() {
            let i = self.by_value[pos] as usize;
            let s = &self.syms[i];
            let reaches = self.max_end_all[pos] > addr;
            if !reaches && s.value < min_label_all || n >= MAX_SYMBOL_SCAN {
                break;
            }
            if (s.size > 0 && addr - s.value < s.size) || s.size == 0 {
                candidates.push(i);
            }
        }
        candidates.sort_unstable();
        let mut pick = Pick {
            closest: None,
            sizeless: None,
            addr_section: self.section_of(addr),
        };
        let split = candidates.partition_point(|&i| i < self.first_global);
        let (locals, globals) = candidates.split_at(split);
        let min_label_global = self.max_end_global[below - 1];
        pick.search(&self.syms, globals, min_label_global);
        let mut min_label = min_label_global;
        if pick.closest.is_none()
            && self.first_global > 0
            && pick.sizeless.is_none_or(|z| z.value != addr)
        {
            pick.search(&self.syms, locals, min_label_all);
            min_label = min_label_all;
        }
        if let Some(c) = pick.closest {
            return Some(c.name);
        }
        pick.sizeless
            .filter(|z| z.value >= min_label)
            .map(|z| z.name)
    }
}

/// The state of libdwfl's symbol search.
struct Pick<'s, 'a> {
    closest: Option<&'s ElfSym<'a>>,
    sizeless: Option<&'s ElfSym<'a>>,
    addr_section: Option<usize>,
}

impl<'s, 'a> Pick<'s, 'a> {
    /// One pass over candidate symbols in table order.
    fn search(&mut self, syms: &'s [ElfSym<'a>], phase: &[usize], min_label: u64) {
        for &i in phase {
            let s = &syms[i];
            let better = match self.closest {
                None => true,
                Some(c) => c.value < s.value || c.binding < s.binding,
            };
            if better {
                if s.size != 0 {
                    self.closest = Some(s);
                } else if self.closest.is_none()
                    && s.value >= min_label
                    && s.section.is_some()
                    && s.section == self.addr_section
                    && self.sizeless.is_none_or(|z| {
                        z.value < s.value || (z.value == s.value && z.binding < s.binding)
                    })
                {
                    self.sizeless = Some(s);
                }
            } else if let Some(c) = self.closest {
                // The same start: a tighter or more global symbol wins; else the first.
                if s.size != 0
                    && c.value == s.value
                    && ((c.size > s.size && c.binding <= s.binding)
                        || (c.size >= s.size && c.binding < s.binding))
                {
                    self.closest = Some(s);
                }
            }
        }
    }
}

/// DWARF sections needed for lines and inlined frames.
const DWARF_SECTIONS: [gimli::SectionId; 10] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
];

type UnitContext<'a> = addr2line::Context<Reader<'a>>;

/// DWARF symbolization one compilation unit at a time.
///
/// An `addr2line::Context` over a whole file parses every unit and its abbreviations up
/// front: about 22 MiB for glibc's debug file. Here an index of unit address ranges (from
/// `.debug_aranges`, completed by the units' own ranges) finds the unit of an address, and
/// only that unit is parsed (its `.debug_info` bytes; the other sections are shared), so
/// memory follows the frames, not the file.
struct DwarfIndex<'a> {
    sections: std::collections::HashMap<gimli::SectionId, &'a [u8]>,
    /// `(begin, end, unit offset in .debug_info)`, sorted.
    index: Vec<(u64, u64, usize)>,
    /// libdwfl's view of the same ranges: one entry per run of consecutive ranges of one
    /// unit, `(begin, unit offset)`; an address belongs to the last run starting at or
    /// below it (gaps count as part of the unit before them), up to `runs_end`.
    runs: Vec<(u64, usize)>,
    runs_end: u64,
    endian: RunTimeEndian,
    contexts: RefCell<Lru<usize, Option<Rc<UnitContext<'a>>>>>,
    lines: RefCell<Lru<usize, Option<Rc<LineTable<'a>>>>>,
}

impl<'a> DwarfIndex<'a> {
    fn new(obj: &object::File<'a>, arena: &'a Arena) -> Option<DwarfIndex<'a>> {
        let mut sections = std::collections::HashMap::new();
        for id in DWARF_SECTIONS {
            if let Some(data) = section_bytes(obj, id.name(), arena) {
                sections.insert(id, data);
            }
        }
        if !sections.contains_key(&gimli::SectionId::DebugInfo) {
            return None;
        }
        let endian = if obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let mut s = DwarfIndex {
            sections,
            index: Vec::new(),
            runs: Vec::new(),
            runs_end: 0,
            endian,
            contexts: RefCell::new(Lru::new(MAX_CACHED_UNITS)),
            lines: RefCell::new(Lru::new(MAX_CACHED_UNITS)),
        };
        s.index = s.build_index()?;
        let mut runs: Vec<(u64, usize)> = Vec::new();
        for &(begin, end, unit) in &s.index {
            if runs.last().is_none_or(|r| r.1 != unit) {
                runs.push((begin, unit));
            }
            s.runs_end = end;
        }
        s.runs = runs;
        Some(s)
    }

    fn endian(&self) -> RunTimeEndian {
        self.endian
    }

    fn dwarf(&self, unit: Option<&'a [u8]>) -> Option<gimli::Dwarf<Reader<'a>>> {
        let le = self.endian();
        let mut d = gimli::Dwarf::load(|id| {
            Ok::<_, gimli::Error>(EndianSlice::new(
                self.sections.get(&id).copied().unwrap_or(&[]),
                le,
            ))
        })
        .ok()?;
        if let Some(bytes) = unit {
            d.debug_info = gimli::DebugInfo::new(bytes, le);
            d.debug_aranges = gimli::DebugAranges::new(&[], le);
        }
        Some(d)
    }

    fn build_index(&self) -> Option<Vec<(u64, u64, usize)>> {
        let dwarf = self.dwarf(None)?;
        let mut index = Vec::new();
        let mut covered = std::collections::HashSet::new();
        let mut headers = dwarf.debug_aranges.headers();
        while let Ok(Some(h)) = headers.next() {
            let off = h.debug_info_offset().0;
            let mut entries = h.entries();
            while let Ok(Some(e)) = entries.next() {
                if e.length() > 0 && index.len() < MAX_INDEX_RANGES {
                    index.push((e.address(), e.address().saturating_add(e.length()), off));
                    covered.insert(off);
                }
            }
        }
        // Units that .debug_aranges leaves out (LLVM may not write it): their own ranges.
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Some(off) = header.offset().as_debug_info_offset().map(|o| o.0) else {
                continue;
            };
            if covered.contains(&off) || index.len() >= MAX_INDEX_RANGES {
                continue;
            }
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            if let Ok(mut ranges) = dwarf.unit_ranges(&unit) {
                while let Ok(Some(r)) = ranges.next() {
                    if r.begin < r.end && index.len() < MAX_INDEX_RANGES {
                        index.push((r.begin, r.end, off));
                    }
                }
            }
        }
        index.sort_unstable();
        Some(index)
    }

    /// The unit holding `svma` by its exact ranges.
    fn unit_of(&self, svma: u64) -> Option<usize> {
        let end = self.index.partition_point(|r| r.0 <= svma);
        self.index[..end]
            .iter()
            .rev()
            .take(64)
            .find(|r| svma < r.1)
            .map(|r| r.2)
    }

    /// The unit libdwfl picks for `svma` (gaps belong to the unit before them).
    fn unit_run_of(&self, svma: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.0 <= svma).checked_sub(1)?;
        if i + 1 == self.runs.len() && svma > self.runs_end {
            return None;
        }
        Some(self.runs[i].1)
    }

    fn unit_bytes(&self, off: usize) -> Option<&'a [u8]> {
        let info = *self.sections.get(&gimli::SectionId::DebugInfo)?;
        let full = gimli::DebugInfo::new(info, self.endian());
        let h = full.header_from_offset(gimli::DebugInfoOffset(off)).ok()?;
        info.get(off..off.checked_add(h.length_including_self())?)
    }

    fn context(&self, off: usize) -> Option<Rc<UnitContext<'a>>> {
        if let Some(c) = self.contexts.borrow_mut().get(off) {
            return c;
        }
        let ctx = self
            .unit_bytes(off)
            .and_then(|unit| self.dwarf(Some(unit)))
            .and_then(|d| addr2line::Context::from_dwarf(d).ok())
            .map(Rc::new);
        self.contexts.borrow_mut().insert(off, ctx.clone());
        ctx
    }

    fn line_table(&self, off: usize) -> Option<Rc<LineTable<'a>>> {
        if let Some(t) = self.lines.borrow_mut().get(off) {
            return t;
        }
        let table = self
            .unit_bytes(off)
            .and_then(|unit| LineTable::new(self.dwarf(Some(unit))?))
            .map(Rc::new);
        self.lines.borrow_mut().insert(off, table.clone());
        table
    }

    /// The line-table row of `svma` as libdw finds it: in the unit libdwfl picks, the
    /// last row at or below the address, unless that row ends a sequence.
    fn line_row(&self, svma: u64) -> Option<(String, u32)> {
        let table = self.line_table(self.unit_run_of(svma)?)?;
        table.lookup(svma)
    }

    /// Inlined and outer frames at `svma`, innermost first (empty when unknown).
    fn inline_frames(&self, svma: u64) -> Vec<SymFrame> {
        let mut frames = Vec::new();
        let Some(ctx) = self.unit_of(svma).and_then(|u| self.context(u)) else {
            return frames;
        };
        if let Ok(mut iter) = ctx.find_frames(svma).skip_all_loads() {
            while let Ok(Some(f)) = iter.next() {
                if frames.len() >= MAX_INLINE_DEPTH {
                    break;
                }
                let function = f
                    .function
                    .as_ref()
                    .and_then(|n| n.demangle().ok())
                    .map(|n| n.into_owned());
                let location = f
                    .location
                    .as_ref()
                    .and_then(|l| Some((l.file?.to_string(), l.line.filter(|n| *n > 0)?)));
                frames.push(SymFrame { function, location });
            }
        }
        frames
    }
}

/// One row of a line table: `(address, ends a sequence, file index, line)`.
type Row = (u64, bool, u64, u64);

/// A unit's line table sorted as libdw sorts it (by address; a sequence end before a
/// row at the same address; otherwise in program order).
struct LineTable<'a> {
    dwarf: gimli::Dwarf<Reader<'a>>,
    unit: gimli::Unit<Reader<'a>>,
    rows: Vec<Row>,
}

impl<'a> LineTable<'a> {
    fn new(dwarf: gimli::Dwarf<Reader<'a>>) -> Option<LineTable<'a>> {
        let header = dwarf.units().next().ok()??;
        let unit = dwarf.unit(header).ok()?;
        let program = unit.line_program.clone()?;
        let mut rows = Vec::new();
        let mut iter = program.rows();
        while let Ok(Some((_, row))) = iter.next_row() {
            if rows.len() >= MAX_LINE_ROWS {
                break;
            }
            rows.push((
                row.address(),
                row.end_sequence(),
                row.file_index(),
                row.line().map_or(0, |l| l.get()),
            ));
        }
        // A stable sort keeps program order for equal keys.
        rows.sort_by_key(|r| (r.0, !r.1));
        Some(LineTable { dwarf, unit, rows })
    }

    fn lookup(&self, svma: u64) -> Option<(String, u32)> {
        let i = self.rows.partition_point(|r| r.0 <= svma).checked_sub(1)?;
        let (_, end, file, line) = self.rows[i];
        if end {
            return None;
        }
        Some((self.file_name(file)?, u32::try_from(line).ok()?))
    }

    /// libdw's spelling: an absolute name as is, else joined once with its directory
    /// entry (which is not resolved further), else the bare name.
    fn file_name(&self, index: u64) -> Option<String> {
        let program = self.unit.line_program.as_ref()?;
        let header = program.header();
        let file = header.file(index)?;
        let text = |v: gimli::AttributeValue<Reader<'a>>| -> Option<String> {
            let s = self.dwarf.attr_string(&self.unit, v).ok()?;
            Some(String::from_utf8_lossy(s.slice()).into_owned())
        };
        let name = text(file.path_name())?;
        if name.starts_with('/') {
            return Some(name);
        }
        match file.directory(header).and_then(text) {
            Some(dir) => Some(format!("{dir}/{name}")),
            None => Some(name),
        }
    }
}

/// A section's bytes, decompressed into the arena when needed; `None` when absent, empty,
/// or implausibly large once decompressed.
fn section_bytes<'a>(obj: &object::File<'a>, name: &str, arena: &'a Arena) -> Option<&'a [u8]> {
    let section = obj.section_by_name(name)?;
    if let Ok(range) = section.compressed_file_range() {
        if range.uncompressed_size > MAX_SECTION_SIZE {
            return None;
        }
    }
    let data: &'a [u8] = match section.uncompressed_data().ok()? {
        Cow::Borrowed(b) => b,
        Cow::Owned(v) => arena.keep_vec(v),
    };
    (!data.is_empty()).then_some(data)
}

/// Demangle a Rust or C++ symbol name; other names are returned as they are.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(s) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return s;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangling() {
        assert_eq!(
            demangle("_ZN6rcrash4boom17h0123456789abcdefE"),
            "rcrash::boom"
        );
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
        assert_eq!(demangle("level3"), "level3");
        assert_eq!(demangle("_Z"), "_Z");
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut c: Lru<u32, u32> = Lru::new(3);
        for k in 0..3 {
            c.insert(k, k * 10);
        }
        assert_eq!(c.get(0), Some(0));
        c.insert(3, 30);
        assert_eq!(c.keys(), vec![2, 0, 3]);
        assert_eq!(c.get(1), None);
        for k in 4..100 {
            c.insert(k, k);
        }
        assert_eq!(c.keys(), vec![97, 98, 99]);
    }

    fn sym(value: u64, size: u64, binding: u8, name: &'static str) -> ElfSym<'static> {
        ElfSym {
            value,
            size,
            binding,
            section: Some(1),
            name,
        }
    }

    fn table(syms: Vec<ElfSym<'static>>, first_global: usize) -> ElfSymbols<'static> {
        let mut by_value: Vec<u32> = (0..syms.len() as u32).collect();
        by_value.sort_by_key(|&i| syms[i as usize].value);
        let (mut all, mut global) = (0, 0);
        let (mut max_end_all, mut max_end_global) = (Vec::new(), Vec::new());
        for &i in &by_value {
            let s = &syms[i as usize];
            all = u64::max(all, s.value + s.size);
            if i as usize >= first_global {
                global = u64::max(global, s.value + s.size);
            }
            max_end_all.push(all);
            max_end_global.push(global);
        }
        ElfSymbols {
            syms,
            first_global,
            by_value,
            max_end_all,
            max_end_global,
            sections: vec![(0x1000, 0x10000, 1)],
        }
    }

    #[test]
    fn global_symbol_wins_over_local_alias() {
        let t = table(
            vec![
                sym(0x2000, 0x40, 1, "__GI_raise"),
                sym(0x3000, 0x10, 1, "helper"),
                sym(0x2000, 0x40, 2, "raise"),
                sym(0x2000, 0x40, 3, "gsignal"),
            ],
            2,
        );
        assert_eq!(t.lookup(0x2010), Some("gsignal"));
        // Only a local holds the address.
        assert_eq!(t.lookup(0x3008), Some("helper"));
        // Past every sized symbol: a sizeless label would be used; there is none.
        assert_eq!(t.lookup(0x4000), None);
        assert_eq!(t.lookup(0x1000), None);
    }

    #[test]
    fn first_of_equal_symbols_and_sizeless_labels() {
        let t = table(
            vec![
                sym(0x2000, 0x40, 3, "clock_nanosleep@GLIBC_2.2.5"),
                sym(0x2000, 0x40, 3, "clock_nanosleep@@GLIBC_2.17"),
                sym(0x3000, 0, 3, "label"),
            ],
            0,
        );
        assert_eq!(t.lookup(0x2004), Some("clock_nanosleep@GLIBC_2.2.5"));
        assert_eq!(t.lookup(0x3004), Some("label"));
        // A sizeless label below the end of a sized symbol is not used.
        let t = table(
            vec![sym(0x2000, 0x40, 3, "big"), sym(0x2010, 0, 3, "inner")],
            0,
        );
        assert_eq!(t.lookup(0x2050), None);
    }
}
