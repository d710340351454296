//! The parsed core and access to the crashed process's memory in it: [`CoreImage`] holds
//! the notes, the program headers and the bytes that were kept (a whole mapped file, a
//! sparse temporary file, or kept chunks of a stream), and answers reads by address.
//!
//! Invariant: a read answers with bytes only when the core holds every one of them; a read
//! of memory the process had but the reader did not keep returns nothing and is remembered
//! ([`CoreImage::take_dropped_read`]), so an unwind that stops there can say why.

use std::fs::File;

use memmap2::Mmap;

use crate::elfcore::{
    parse_notes_in, parse_segments, u32_at, u64_at, CoreError, CoreNotes, ElfHeader, Segment,
    EHDR_SIZE, PN_XNUM, PT_LOAD,
};

/// How the core was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Memory-mapped seekable file.
    Mapped,
    /// Streamed from a pipe, keeping only the needed bytes.
    Streamed,
    /// Streamed into a bounded temporary file because the notes came last.
    Spilled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    pub mode: ReadMode,
    /// Bytes of core input consumed (for a pipe: everything up to EOF).
    pub total: u64,
    /// Bytes kept in memory (stream mode).
    pub kept: u64,
    /// Bytes written to the temporary file (spill mode).
    pub spilled: u64,
}

pub(super) enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

pub(super) enum CoreData {
    /// The whole file is addressable; with `present`, only those file ranges hold data.
    Whole {
        bytes: Bytes,
        present: Option<Vec<(u64, u64)>>,
    },
    /// Kept pieces: (file offset, bytes), sorted, disjoint.
    Chunks(Vec<(u64, Vec<u8>)>),
}

/// A parsed core: its notes, its segments, and the memory bytes that were kept.
pub struct CoreImage {
    pub notes: CoreNotes,
    /// All program headers, in file order.
    pub segments: Vec<Segment>,
    /// `PT_LOAD` segments with file data, sorted by address.
    loads: Vec<Segment>,
    data: CoreData,
    pub stats: ReadStats,
    /// The last address read that the process had (its segment was dumped) but that was
    /// not kept: an unwind that stops there stopped at the edge of the kept bytes.
    dropped_read: std::cell::Cell<Option<u64>>,
}

impl CoreImage {
    /// A core held in memory (tests, fuzzing).
    pub fn from_vec(bytes: Vec<u8>) -> Result<CoreImage, CoreError> {
        let total = bytes.len() as u64;
        CoreImage::from_whole(Bytes::Owned(bytes), None, ReadMode::Mapped, total, 0)
    }

    /// Map a seekable core file.
    pub fn from_file(file: &File) -> Result<CoreImage, CoreError> {
        let len = file
            .metadata()
            .map_err(|e| CoreError::Io(e.to_string()))?
            .len();
        if len < EHDR_SIZE as u64 {
            return Err(CoreError::Truncated("ELF header"));
        }
        // SAFETY: the core is mapped read-only; a core file is not expected to change while
        // it is analysed (a concurrent truncation would raise SIGBUS, documented).
        let map = unsafe { Mmap::map(file) }.map_err(|e| CoreError::Io(e.to_string()))?;
        CoreImage::from_whole(Bytes::Map(map), None, ReadMode::Mapped, len, 0)
    }

    pub(super) fn from_whole(
        bytes: Bytes,
        present: Option<Vec<(u64, u64)>>,
        mode: ReadMode,
        total: u64,
        spilled: u64,
    ) -> Result<CoreImage, CoreError> {
        let hdr = ElfHeader::parse(&bytes)?;
        let count = if hdr.phnum_raw == PN_XNUM {
            // Extended numbering: the real count is section header 0's sh_info.
            let at = usize::try_from(hdr.shoff).unwrap_or(usize::MAX);
            u64::from(
                u32_at(&bytes, at.saturating_add(44)).ok_or(CoreError::Truncated(
                    "section header 0 (extended program header count)",
                ))?,
            )
        } else {
            u64::from(hdr.phnum_raw)
        };
        let len = ElfHeader::table_len(count)?;
        let table = usize::try_from(hdr.phoff)
            .ok()
            .and_then(|s| bytes.get(s..s.checked_add(len)?))
            .ok_or(CoreError::Truncated("program headers"))?;
        let segments = parse_segments(table);
        let notes = parse_notes_in(&bytes, &segments, hdr.arch)?;
        let data = CoreData::Whole { bytes, present };
        Ok(CoreImage::assemble(
            notes,
            segments,
            data,
            ReadStats {
                mode,
                total,
                kept: 0,
                spilled,
            },
        ))
    }

    pub(super) fn assemble(
        notes: CoreNotes,
        segments: Vec<Segment>,
        data: CoreData,
        stats: ReadStats,
    ) -> CoreImage {
        let mut loads: Vec<Segment> = segments
            .iter()
            .filter(|s| s.p_type == PT_LOAD && s.filesz > 0)
            .copied()
            .collect();
        loads.sort_by_key(|s| s.vaddr);
        CoreImage {
            notes,
            segments,
            loads,
            data,
            stats,
            dropped_read: std::cell::Cell::new(None),
        }
    }

    /// The executable `PT_LOAD` ranges (dumped or not), as `(start, end)`.
    pub fn executable_ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .segments
            .iter()
            .filter(|s| s.p_type == PT_LOAD && s.is_executable())
            .map(|s| (s.vaddr, s.vaddr.saturating_add(s.memsz)))
            .collect();
        v.sort_unstable();
        v
    }

    /// `(bytes read, bytes the program headers promise)` when the core is shorter than its
    /// program headers say.
    pub fn truncation(&self) -> Option<(u64, u64)> {
        let want = self
            .segments
            .iter()
            .filter_map(|s| s.file_end())
            .max()
            .unwrap_or(0);
        (self.stats.total < want).then_some((self.stats.total, want))
    }

    /// `len` bytes of process memory at `addr`, if the core holds all of them.
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self
            .loads
            .partition_point(|s| s.vaddr <= addr)
            .checked_sub(1)?;
        let seg = &self.loads[i];
        let rel = addr - seg.vaddr;
        let end = rel.checked_add(len as u64)?;
        if end > seg.filesz {
            return None;
        }
        let off = seg.offset.checked_add(rel)?;
        let bytes = self.file_bytes(off, len);
        if bytes.is_none() {
            self.dropped_read.set(Some(addr));
        }
        bytes
    }

    /// Take the address of the last read of dumped but not kept memory (see
    /// [`CoreImage::slice`]), clearing it.
    pub fn take_dropped_read(&self) -> Option<u64> {
        self.dropped_read.take()
    }

    /// The bytes of the load segment containing `addr`, from `addr` to its end, at most
    /// `max` bytes.
    pub fn slice_to_segment_end(&self, addr: u64, max: u64) -> Option<&[u8]> {
        let i = self
            .loads
            .partition_point(|s| s.vaddr <= addr)
            .checked_sub(1)?;
        let seg = &self.loads[i];
        let avail = seg.filesz.checked_sub(addr - seg.vaddr)?;
        self.slice(addr, avail.min(max) as usize)
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        u64_at(self.slice(addr, 8)?, 0)
    }

    fn file_bytes(&self, off: u64, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len as u64)?;
        match &self.data {
            CoreData::Whole { bytes, present } => {
                if let Some(p) = present {
                    let i = p.partition_point(|(s, _)| *s <= off).checked_sub(1)?;
                    if end > p[i].1 {
                        return None;
                    }
                }
                bytes.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
            }
            CoreData::Chunks(chunks) => {
                let i = chunks.partition_point(|(s, _)| *s <= off).checked_sub(1)?;
                let (start, data) = &chunks[i];
                let rel = usize::try_from(off - start).ok()?;
                data.get(rel..rel.checked_add(len)?)
            }
        }
    }
}
