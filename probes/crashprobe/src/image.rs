//! An ELF file or in-memory image as the probe uses it: mapped read-only into the
//! [`Arena`] (regular files only, bounded in size), its load segments (file offset to
//! stated address), its build-id and `DT_SONAME`, and the build-id of an image found in
//! core memory.
//!
//! Invariant: files are opened without blocking and only when they are regular files, so a
//! FIFO or device at a path named by the core cannot stall or disturb the probe; nothing
//! here decides whether a file is the one that was mapped (that is `modules`' job).

use std::fs::File;
use std::path::Path;

use gimli::{EndianSlice, RunTimeEndian};
use memmap2::Mmap;
use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader, NoteIterator, ProgramHeader};
use object::Endianness;
use object::{Object, ObjectSegment};

use crate::arena::Arena;
use crate::reader::CoreImage;

pub type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// Distinct files considered as modules.
pub const MAX_MODULES: usize = 1024;
/// Largest module or debug file opened.
const MAX_FILE_SIZE: u64 = 4 << 30;

/// An ELF image usable for unwinding and symbols.
pub struct Image<'a> {
    pub(crate) obj: object::File<'a>,
    /// `(file offset, file size, vaddr, executable)` of the image's PT_LOAD segments.
    pub(crate) loads: Vec<(u64, u64, u64, bool)>,
    pub(crate) debug: Option<object::File<'a>>,
}

impl<'a> Image<'a> {
    pub(crate) fn parse(data: &'a [u8], debug: Option<&'a [u8]>) -> Option<Image<'a>> {
        let obj = object::File::parse(data).ok()?;
        let loads = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                let exec =
                    matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & 1 != 0);
                (off, size, s.address(), exec)
            })
            .collect();
        let debug = debug.and_then(|d| object::File::parse(d).ok());
        Some(Image { obj, loads, debug })
    }

    pub(crate) fn file_offset_to_svma(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(o, s, _, _)| *o <= off && off - o < *s)
            .map(|(o, _, v, _)| off - o + v)
    }

    pub(crate) fn build_id(&self) -> Option<&'a [u8]> {
        self.obj.build_id().ok().flatten()
    }
}

pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub(crate) fn map_file<'a>(path: &Path, arena: &'a Arena) -> Option<&'a [u8]> {
    use std::os::unix::fs::OpenOptionsExt;
    // The path comes from the core: only regular files are opened, and without blocking, so
    // a FIFO or device put at a mapped file's path cannot stall or disturb the probe.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    map_open_file(&file, arena)
}

pub(crate) fn map_open_file<'a>(file: &File, arena: &'a Arena) -> Option<&'a [u8]> {
    let md = file.metadata().ok()?;
    if !md.is_file() || md.len() == 0 || md.len() > MAX_FILE_SIZE {
        return None;
    }
    // SAFETY: read-only mapping of a system file; a concurrent truncation would raise SIGBUS,
    // which the probe accepts (documented) rather than copying every module.
    let map = unsafe { Mmap::map(file) }.ok()?;
    Some(arena.keep_map(map))
}

/// The GNU build-id of the ELF image whose first page is at `base` in core memory (any
/// ELF class and byte order).
pub fn build_id_in_memory(core: &CoreImage, base: u64) -> Option<Vec<u8>> {
    let head = core.slice_to_segment_end(base, ELF_HEAD)?;
    match object::FileKind::parse(head).ok()? {
        object::FileKind::Elf32 => {
            build_id_in_image::<elf::FileHeader32<Endianness>>(core, base, head)
        }
        object::FileKind::Elf64 => {
            build_id_in_image::<elf::FileHeader64<Endianness>>(core, base, head)
        }
        _ => None,
    }
}

/// Bytes of an image's start looked at for its program headers.
const ELF_HEAD: u64 = 4096;
/// Program headers looked at per image.
const MAX_IMAGE_PHDRS: usize = 64;
/// Bytes of one note segment looked at.
const MAX_NOTE_SEGMENT: u64 = 4096;

fn build_id_in_image<Elf: FileHeader<Endian = Endianness>>(
    core: &CoreImage,
    base: u64,
    head: &[u8],
) -> Option<Vec<u8>> {
    let header = Elf::parse(head).ok()?;
    let endian = header.endian().ok()?;
    let phdrs = header.program_headers(endian, head).ok()?;
    for ph in phdrs.iter().take(MAX_IMAGE_PHDRS) {
        if ph.p_type(endian) != elf::PT_NOTE {
            continue;
        }
        // The first mapping maps file offset 0 at `base`, so p_offset locates the note.
        let off: u64 = ph.p_offset(endian).into();
        let size: u64 = ph.p_filesz(endian).into();
        let Some(data) = base
            .checked_add(off)
            .and_then(|a| core.slice(a, size.min(MAX_NOTE_SEGMENT) as usize))
        else {
            continue;
        };
        let Ok(mut notes) = NoteIterator::<Elf>::new(endian, ph.p_align(endian), data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                return Some(note.desc().to_vec());
            }
        }
    }
    None
}

/// `DT_SONAME` of an ELF file, from its dynamic section (any ELF class and byte order).
pub(crate) fn soname(obj: &object::File<'_>) -> Option<String> {
    match obj {
        object::File::Elf32(f) => soname_of(f),
        object::File::Elf64(f) => soname_of(f),
        _ => None,
    }
}

fn soname_of<'d, Elf: FileHeader>(f: &ElfFile<'d, Elf, &'d [u8]>) -> Option<String> {
    let endian = f.endian();
    let sections = f.elf_section_table();
    let (dynamic, link) = sections.dynamic(endian, f.data()).ok()??;
    let strings = sections.strings(endian, f.data(), link).ok()?;
    for d in dynamic {
        match d.tag32(endian) {
            Some(elf::DT_NULL) => break,
            Some(elf::DT_SONAME) => {
                let name = d.string(endian, strings).ok()?;
                return Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
    }
    None
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex of a build-id.
pub fn build_id_hex(id: &[u8]) -> String {
    hex(id)
}
