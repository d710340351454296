//! Getting a core into memory without keeping it.
//!
//! * A seekable core (`-c FILE`, or stdin redirected from a file) is memory-mapped.
//! * A core on a pipe is read once, front to back. The kernel writes the notes before the
//!   memory, so once the notes are parsed the reader knows which bytes matter (each thread's
//!   stack window, the first page of every ELF mapping for its build-id, the vDSO), keeps
//!   those, and discards the rest as it streams past (`splice` to /dev/null when possible).
//!   Peak memory does not depend on the core's size and nothing touches the disk.
//! * When the notes come after the memory (cores written by gdb), the reader cannot know
//!   what to keep, so it copies the writable segments and the first page of the others into
//!   an unlinked temporary file, at most [`Limits::spill_cap`] bytes, and maps it.
//!
//! In every mode a pipe is drained to EOF, also on errors: the kernel waits for it.
//!
//! The parts: `limits` (what is kept: the [`Limits`] and the file ranges that matter),
//! `stream` (forward-only reading of a pipe), `memory` ([`CoreImage`], the kept bytes and
//! reads by address); this module reads a core into a [`CoreImage`] in each of the modes
//! above. None of the parts uses another or this module.

mod limits;
mod memory;
mod stream;

use std::io::{self, Read};
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;

use memmap2::Mmap;

use crate::elfcore::{
    parse_segments, CoreError, CoreNotes, ElfHeader, Segment, EHDR_SIZE, MAX_NOTES_BYTES, PF_W,
    PHDR_SIZE, PN_XNUM, PT_LOAD, PT_NOTE,
};

pub use limits::{wanted_file_ranges, Limits};
pub use memory::{CoreImage, ReadMode, ReadStats};
pub use stream::drain;

use limits::merge;
use memory::{Bytes, CoreData};
use stream::{Stream, IO_CHUNK};

impl CoreImage {
    /// Read a core from a stream (a pipe), keeping only what the unwinder needs. The stream
    /// is always drained to EOF. `splice_fd` is the stream's fd when it is a pipe, so skipped
    /// bytes can be spliced to /dev/null instead of copied.
    pub fn from_stream<R: Read>(
        input: R,
        splice_fd: Option<RawFd>,
        limits: &Limits,
    ) -> (Result<CoreImage, CoreError>, u64) {
        let mut s = Stream::new(input, splice_fd);
        let result = read_stream(&mut s, limits);
        let drained = s.drain();
        let total = s.pos;
        let result = match (result, drained) {
            (Ok(mut img), Ok(())) => {
                img.stats.total = total;
                Ok(img)
            }
            (Ok(_), Err(e)) => Err(CoreError::Io(e.to_string())),
            (Err(e), _) => Err(e),
        };
        (result, total)
    }
}

fn read_stream<R: Read>(s: &mut Stream<R>, limits: &Limits) -> Result<CoreImage, CoreError> {
    let io_err = |e: io::Error| CoreError::Io(e.to_string());
    let ehdr = s.read_exact(EHDR_SIZE, "ELF header")?;
    let hdr = ElfHeader::parse(&ehdr)?;
    if hdr.phoff > 1 << 20 {
        return Err(CoreError::Malformed(format!(
            "program headers at offset {}",
            hdr.phoff
        )));
    }
    s.skip_to(hdr.phoff).map_err(io_err)?;
    let mut table = Vec::new();
    let count = if hdr.phnum_raw == PN_XNUM {
        // The count sits in a section header at the end of the file; the kernel writes the
        // notes right after the table, so the first (note) header tells the table's size.
        table = s.read_exact(PHDR_SIZE, "program headers")?;
        let first = Segment::parse(&table).ok_or(CoreError::Truncated("program headers"))?;
        let span = first
            .offset
            .checked_sub(hdr.phoff)
            .filter(|_| first.p_type == PT_NOTE);
        match span {
            Some(span) if span % PHDR_SIZE as u64 == 0 => span / PHDR_SIZE as u64,
            _ => {
                return Err(CoreError::Unsupported(
                    "extended program header numbering without leading notes",
                ))
            }
        }
    } else {
        u64::from(hdr.phnum_raw)
    };
    let len = ElfHeader::table_len(count)?;
    let rest = s.read_exact(len.saturating_sub(table.len()), "program headers")?;
    table.extend_from_slice(&rest);
    let segments = parse_segments(&table);

    let mut notes_segs: Vec<Segment> = segments
        .iter()
        .filter(|x| x.p_type == PT_NOTE && x.filesz > 0)
        .copied()
        .collect();
    notes_segs.sort_by_key(|x| x.offset);
    let first_data = segments
        .iter()
        .filter(|x| x.p_type == PT_LOAD && x.filesz > 0)
        .map(|x| x.offset)
        .min()
        .unwrap_or(u64::MAX);
    let notes_first = notes_segs
        .iter()
        .all(|n| n.offset >= s.pos && n.file_end().is_some_and(|e| e <= first_data));
    let notes_total: u64 = notes_segs
        .iter()
        .map(|n| n.filesz)
        .fold(0, u64::saturating_add);
    if notes_total > MAX_NOTES_BYTES {
        return Err(CoreError::Limit(format!("{notes_total} bytes of notes")));
    }
    if !notes_first {
        return spill(s, ehdr, hdr.phoff, table, segments, limits);
    }

    let mut notes = CoreNotes {
        arch: hdr.arch,
        ..CoreNotes::default()
    };
    for n in &notes_segs {
        if n.offset < s.pos {
            return Err(CoreError::Malformed("overlapping note segments".into()));
        }
        s.skip_to(n.offset).map_err(io_err)?;
        let data = s.read_exact(n.filesz as usize, "note segment")?;
        notes.parse_segment(&data)?;
    }
    if notes.threads.is_empty() {
        return Err(CoreError::NoThreads);
    }
    let mut loads: Vec<Segment> = segments
        .iter()
        .filter(|x| x.p_type == PT_LOAD && x.filesz > 0)
        .copied()
        .collect();
    loads.sort_by_key(|x| x.vaddr);
    let mut chunks = Vec::new();
    let mut kept = 0u64;
    for (off, len) in wanted_file_ranges(&notes, &loads, limits) {
        let start = off.max(s.pos);
        let end = off + len;
        if start >= end {
            continue;
        }
        s.skip_to(start).map_err(io_err)?;
        let mut buf = vec![0u8; (end - start) as usize];
        let n = s.fill(&mut buf).map_err(io_err)?;
        buf.truncate(n);
        kept += n as u64;
        if n > 0 {
            chunks.push((start, buf));
        }
        if s.eof {
            break;
        }
    }
    Ok(CoreImage::assemble(
        notes,
        segments,
        CoreData::Chunks(chunks),
        ReadStats {
            mode: ReadMode::Streamed,
            total: 0,
            kept,
            spilled: 0,
        },
    ))
}

/// Notes come last: copy what may matter into an unlinked temp file (sparse, same offsets)
/// and analyse that.
fn spill<R: Read>(
    s: &mut Stream<R>,
    ehdr: Vec<u8>,
    phoff: u64,
    table: Vec<u8>,
    segments: Vec<Segment>,
    limits: &Limits,
) -> Result<CoreImage, CoreError> {
    let io_err = |e: io::Error| CoreError::Io(format!("temporary core file: {e}"));
    let file = tempfile::tempfile().map_err(io_err)?;
    file.write_all_at(&ehdr, 0).map_err(io_err)?;
    file.write_all_at(&table, phoff).map_err(io_err)?;
    let mut present = vec![(0, EHDR_SIZE as u64), (phoff, phoff + table.len() as u64)];

    // Memory ranges count against the cap; the notes (bounded by MAX_NOTES_BYTES) are
    // always kept, wherever they are, or nothing at all could be unwound.
    let mut keep: Vec<(u64, u64)> = Vec::new();
    let mut notes: Vec<(u64, u64)> = Vec::new();
    for seg in &segments {
        let Some(end) = seg.file_end() else { continue };
        if seg.filesz == 0 {
            continue;
        }
        if seg.p_type == PT_NOTE {
            notes.push((seg.offset, end));
        } else if seg.p_type == PT_LOAD && (seg.flags & PF_W != 0 || seg.filesz <= limits.vdso_max)
        {
            keep.push((seg.offset, end));
        } else if seg.p_type == PT_LOAD {
            keep.push((seg.offset, seg.offset + seg.filesz.min(limits.elf_head)));
        }
    }
    let notes = merge(notes);
    let mut ranges: Vec<(u64, u64, bool)> = merge(keep)
        .into_iter()
        .map(|(a, b)| (a, b, false))
        .chain(notes.iter().map(|&(a, b)| (a, b, true)))
        .collect();
    ranges.sort_unstable();
    let mut written = 0u64;
    let mut on_disk = 0u64;
    let mut buf = vec![0u8; IO_CHUNK];
    for (start, end, is_note) in ranges {
        let start = start.max(s.pos);
        if start >= end {
            continue;
        }
        let room = if is_note {
            u64::MAX
        } else {
            limits.spill_cap.saturating_sub(written)
        };
        if room == 0 {
            continue;
        }
        s.skip_to(start).map_err(io_err)?;
        let mut off = start;
        let mut copied = 0u64;
        while off < end && copied < room {
            let want = (end - off).min(IO_CHUNK as u64).min(room - copied) as usize;
            let n = s.fill(&mut buf[..want]).map_err(io_err)?;
            file.write_all_at(&buf[..n], off).map_err(io_err)?;
            if n > 0 {
                present.push((off, off + n as u64));
            }
            off += n as u64;
            copied += n as u64;
            on_disk += n as u64;
            if !is_note {
                written += n as u64;
            }
            if n < want {
                break;
            }
        }
        if s.eof {
            break;
        }
    }
    drop(buf);
    let present = merge(present);
    let size = present.last().map_or(0, |p| p.1);
    file.set_len(size).map_err(io_err)?;
    // SAFETY: the unlinked temp file is private to this process and not resized again.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
    CoreImage::from_whole(
        Bytes::Map(map),
        Some(present),
        ReadMode::Spilled,
        0,
        on_disk,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_stream_is_drained() {
        let data = vec![0x41u8; 3 << 20];
        let (r, total) = CoreImage::from_stream(&data[..], None, &Limits::default());
        assert_eq!(r.err(), Some(CoreError::NotElf));
        assert_eq!(total, data.len() as u64);
    }
}
