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

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use memmap2::Mmap;

use crate::elfcore::{
    parse_notes_in, parse_segments, u32_at, u64_at, CoreError, CoreNotes, ElfHeader, Segment,
    AT_EXECFN, AT_RANDOM, AT_SYSINFO_EHDR, EHDR_SIZE, MAX_NOTES_BYTES, PF_W, PHDR_SIZE, PN_XNUM,
    PT_LOAD, PT_NOTE,
};

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
/// Chunk size of the copy and discard loops.
const IO_CHUNK: usize = 1 << 20;

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

enum Bytes {
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

enum CoreData {
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

    fn from_whole(
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

    fn assemble(
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

/// Read `input` to EOF, discarding everything; returns the byte count.
pub fn drain<R: Read>(input: R, splice_fd: Option<RawFd>) -> u64 {
    let mut s = Stream::new(input, splice_fd);
    let _ = s.drain();
    s.pos
}

/// A forward-only reader that counts its position.
struct Stream<R> {
    input: R,
    pos: u64,
    splice_fd: Option<RawFd>,
    null: Option<File>,
    scratch: Vec<u8>,
    eof: bool,
}

impl<R: Read> Stream<R> {
    fn new(input: R, splice_fd: Option<RawFd>) -> Stream<R> {
        Stream {
            input,
            pos: 0,
            splice_fd,
            null: None,
            scratch: Vec::new(),
            eof: false,
        }
    }

    /// Read up to `buf.len()` bytes, stopping only at EOF.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, CoreError> {
        let mut v = vec![0u8; len];
        let n = self
            .fill(&mut v)
            .map_err(|e| CoreError::Io(e.to_string()))?;
        if n < len {
            return Err(CoreError::Truncated(what));
        }
        Ok(v)
    }

    /// Discard `len` bytes (fewer at EOF).
    fn skip(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 && !self.eof {
            let chunk = len.min(IO_CHUNK as u64) as usize;
            let n = match self.splice_to_null(chunk) {
                Some(n) => n,
                None => {
                    if self.scratch.is_empty() {
                        self.scratch = vec![0u8; IO_CHUNK / 4];
                    }
                    let k = chunk.min(self.scratch.len());
                    let mut buf = std::mem::take(&mut self.scratch);
                    let r = self.fill(&mut buf[..k]);
                    self.scratch = buf;
                    r?
                }
            };
            if n == 0 {
                break;
            }
            len -= n as u64;
        }
        Ok(())
    }

    /// Move up to `len` bytes from the pipe to /dev/null inside the kernel. `None` when
    /// splicing is not possible here (then the caller reads).
    fn splice_to_null(&mut self, len: usize) -> Option<usize> {
        let fd = self.splice_fd?;
        if self.null.is_none() {
            match File::options().write(true).open("/dev/null") {
                Ok(f) => self.null = Some(f),
                Err(_) => {
                    self.splice_fd = None;
                    return None;
                }
            }
        }
        let null = self.null.as_ref()?.as_raw_fd();
        loop {
            // SAFETY: both fds are open for the duration of the call; null offsets mean
            // "current position", as splice requires for a pipe.
            let n = unsafe {
                libc::splice(
                    fd,
                    std::ptr::null_mut(),
                    null,
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            if n >= 0 {
                if n == 0 {
                    self.eof = true;
                }
                self.pos += n as u64;
                return Some(n as usize);
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Not a pipe, or /dev/null refuses splice: read instead from now on.
            self.splice_fd = None;
            return None;
        }
    }

    fn skip_to(&mut self, off: u64) -> io::Result<()> {
        if off > self.pos {
            self.skip(off - self.pos)?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        while !self.eof {
            self.skip(u64::MAX)?;
        }
        Ok(())
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
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
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

    #[test]
    fn garbage_stream_is_drained() {
        let data = vec![0x41u8; 3 << 20];
        let (r, total) = CoreImage::from_stream(&data[..], None, &Limits::default());
        assert_eq!(r.err(), Some(CoreError::NotElf));
        assert_eq!(total, data.len() as u64);
    }
}
