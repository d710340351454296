//! The modules of a core that does not list its mapped files (no `NT_FILE`: qemu-user
//! cores, old kernels), found as gdb finds them: the executable from the auxiliary vector
//! (`AT_PHDR`, `AT_ENTRY`) and its path, its `DT_DEBUG` entry in the core's memory, and the
//! dynamic linker's `r_debug` → `link_map` list from there (load bias and path of every
//! shared object). The result has the shape of `NT_FILE` entries.
//!
//! Everything read from the core is untrusted: the walk is bounded in length, stops at a
//! loop, and skips what it cannot read.

use std::collections::HashSet;
use std::path::Path;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};

use crate::arena::Arena;
use crate::elfcore::{FileMapping, AT_ENTRY, AT_EXECFN};
use crate::image::{map_file, MAX_MODULES};
use crate::reader::CoreImage;
use crate::search::{host_path, SymbolOptions};

/// `AT_PHDR`: address of the executable's program headers in memory.
const AT_PHDR: u64 = 3;
/// Longest path read from the core.
const MAX_NAME: u64 = 4096;
/// Dynamic entries read from the executable's `PT_DYNAMIC`.
const MAX_DYNAMIC: u64 = 1024;
/// Page size assumed to align mappings (file offsets and addresses agree modulo any page
/// size, so the smallest one gives correct offsets).
const PAGE: u64 = 4096;

/// What is needed of an ELF file's program headers.
#[derive(Debug, Default)]
struct Layout {
    entry: u64,
    /// Address of the program headers (`PT_PHDR`, or located through the load segment
    /// holding `e_phoff`).
    phdr_vaddr: Option<u64>,
    dynamic_vaddr: Option<u64>,
    /// `(p_vaddr, p_memsz, p_offset)` of each `PT_LOAD`.
    loads: Vec<(u64, u64, u64)>,
}

fn layout(data: &[u8]) -> Option<Layout> {
    match object::FileKind::parse(data).ok()? {
        object::FileKind::Elf32 => layout_of::<elf::FileHeader32<object::Endianness>>(data),
        object::FileKind::Elf64 => layout_of::<elf::FileHeader64<object::Endianness>>(data),
        _ => None,
    }
}

fn layout_of<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Option<Layout> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let phoff: u64 = header.e_phoff(endian).into();
    let mut out = Layout {
        entry: header.e_entry(endian).into(),
        ..Layout::default()
    };
    for ph in header.program_headers(endian, data).ok()?.iter() {
        let vaddr: u64 = ph.p_vaddr(endian).into();
        let offset: u64 = ph.p_offset(endian).into();
        match ph.p_type(endian) {
            elf::PT_LOAD => {
                let filesz: u64 = ph.p_filesz(endian).into();
                if out.phdr_vaddr.is_none() && offset <= phoff && phoff - offset < filesz {
                    out.phdr_vaddr = Some(vaddr + (phoff - offset));
                }
                out.loads.push((vaddr, ph.p_memsz(endian).into(), offset));
            }
            elf::PT_PHDR => out.phdr_vaddr = Some(vaddr),
            elf::PT_DYNAMIC => out.dynamic_vaddr = Some(vaddr),
            _ => {}
        }
    }
    Some(out)
}

/// A NUL-terminated string in core memory.
fn string_at(core: &CoreImage, addr: u64) -> Option<String> {
    let bytes = core.slice_to_segment_end(addr, MAX_NAME)?;
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// The mappings of the file the process knew as `path`, loaded with `bias`.
fn mappings_of(
    path: &str,
    bias: u64,
    arena: &Arena,
    opts: &SymbolOptions,
    out: &mut Vec<FileMapping>,
) -> Option<Layout> {
    let data = map_file(Path::new(&*host_path(path, opts)), arena)?;
    let lay = layout(data)?;
    for &(vaddr, memsz, offset) in &lay.loads {
        let at = bias.wrapping_add(vaddr);
        let slack = at % PAGE;
        let (Some(start), Some(end), Some(file_offset)) = (
            at.checked_sub(slack),
            at.checked_add(memsz),
            offset.checked_sub(slack),
        ) else {
            continue;
        };
        if end > start {
            out.push(FileMapping {
                start,
                end,
                file_offset,
                path: path.to_string(),
            });
        }
    }
    Some(lay)
}

/// The executable's path: `-E`, else the name the kernel put at the top of the stack.
fn executable_path(core: &CoreImage, opts: &SymbolOptions) -> Option<String> {
    opts.executable
        .as_ref()
        .and_then(|p| p.to_str().map(str::to_string))
        .or_else(|| string_at(core, core.notes.auxv_value(AT_EXECFN)?))
        .filter(|p| p.starts_with('/'))
}

/// File mappings of the executable and every shared object on the dynamic linker's list,
/// sorted by address. Empty when the executable cannot be found.
pub fn discover(core: &CoreImage, arena: &Arena, opts: &SymbolOptions) -> Vec<FileMapping> {
    let mut out = Vec::new();
    let Some(exe) = executable_path(core, opts) else {
        return out;
    };
    let Some(data) = map_file(Path::new(&*host_path(&exe, opts)), arena) else {
        return out;
    };
    let Some(lay) = layout(data) else {
        return out;
    };
    // The load bias of a position-independent executable, from where the kernel says its
    // program headers and entry point are (0 for a fixed-address executable).
    let bias = match (core.notes.auxv_value(AT_PHDR), lay.phdr_vaddr) {
        (Some(at), Some(stated)) => at.wrapping_sub(stated),
        _ => match core.notes.auxv_value(AT_ENTRY) {
            Some(at) => at.wrapping_sub(lay.entry),
            None => return out,
        },
    };
    if mappings_of(&exe, bias, arena, opts, &mut out).is_none() {
        return out;
    }
    let r_debug = lay.dynamic_vaddr.and_then(|d| {
        let dynamic = bias.wrapping_add(d);
        (0..MAX_DYNAMIC)
            .map_while(|i| {
                let at = dynamic.checked_add(i * 16)?;
                Some((core.read_u64(at)?, core.read_u64(at + 8)?))
            })
            .take_while(|(tag, _)| *tag != u64::from(elf::DT_NULL))
            .find(|(tag, _)| *tag == u64::from(elf::DT_DEBUG))
            .map(|(_, value)| value)
            .filter(|v| *v != 0)
    });
    // struct r_debug { int r_version; struct link_map *r_map; ... }
    // struct link_map { l_addr; char *l_name; l_ld; l_next; l_prev; }
    let mut next = r_debug.and_then(|r| core.read_u64(r.checked_add(8)?));
    let mut seen = HashSet::new();
    while let Some(lm) = next.filter(|a| *a != 0) {
        if !seen.insert(lm) || seen.len() > MAX_MODULES {
            break;
        }
        next = lm.checked_add(24).and_then(|a| core.read_u64(a));
        let (Some(l_addr), Some(name)) = (
            core.read_u64(lm),
            lm.checked_add(8)
                .and_then(|a| core.read_u64(a))
                .and_then(|a| string_at(core, a)),
        ) else {
            continue;
        };
        // The executable has an empty name; the vDSO a name that is no path.
        if !name.starts_with('/') || name == exe {
            continue;
        }
        mappings_of(&name, l_addr, arena, opts, &mut out);
    }
    out.sort_by_key(|f| f.start);
    out
}
