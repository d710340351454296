//! ELF core file layout: the file header, the program headers and the notes the unwinder needs
//! (`NT_PRSTATUS`, `NT_PRPSINFO`, `NT_FILE`, `NT_AUXV`, `NT_SIGINFO`).
//!
//! Everything here parses untrusted bytes: every read is bounds-checked, every count is
//! limited, and malformed input yields a [`CoreError`], never a panic.

/// Size of an ELF64 file header.
pub const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
pub const PHDR_SIZE: usize = 56;
/// Most program headers accepted (one per VMA; `vm.max_map_count` defaults to 65530).
pub const MAX_SEGMENTS: usize = 131_072;
/// Most note bytes accepted (about 3 KiB per thread with the XSAVE area).
pub const MAX_NOTES_BYTES: u64 = 16 << 20;
/// Most threads read from the notes; a payload cannot show more anyway.
pub const MAX_THREADS: usize = 4096;
/// Most `NT_FILE` entries accepted.
pub const MAX_FILE_MAPPINGS: u64 = 65_536;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;

const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;
const NT_FILE: u32 = 0x4649_4c45;

/// `AT_ENTRY`: the program's entry point (locates the executable among the mappings).
pub const AT_ENTRY: u64 = 9;
/// `AT_SYSINFO_EHDR`: base address of the vDSO image.
pub const AT_SYSINFO_EHDR: u64 = 33;
/// Address of 16 random bytes near the top of the main thread's stack.
pub const AT_RANDOM: u64 = 25;
/// Address of the executable's file name, at the top of the main thread's stack.
pub const AT_EXECFN: u64 = 31;

/// Offset of `pr_reg` in `struct elf_prstatus` of 64-bit Linux (the same on every
/// architecture: the fields before it are generic).
const PR_REG_OFFSET: usize = 112;
const PR_PID_OFFSET: usize = 32;
const PR_CURSIG_OFFSET: usize = 12;

/// Register slots of a thread: DWARF register numbers `0..PC_SLOT` plus the pc in the slot
/// [`Arch::pc`] names (the DWARF return-address column on x86_64, a slot of its own on
/// aarch64, where the pc has no DWARF number).
pub const NREGS: usize = 33;

/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;

/// What the core reader and the unwinder need to know about a processor architecture.
/// Everything architecture-specific is in these tables; the code paths are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub name: &'static str,
    pub e_machine: u16,
    /// `(index in NT_PRSTATUS pr_reg, register slot)` of the registers the unwinder
    /// starts from.
    pub prstatus_regs: &'static [(usize, u16)],
    /// Number of u64 in `pr_reg`.
    pub prstatus_count: usize,
    /// Slot of the program counter.
    pub pc: u16,
    /// DWARF number of the stack pointer.
    pub sp: u16,
    /// DWARF number of the frame pointer.
    pub fp: u16,
    /// DWARF column of the return address in CFI (the caller's pc).
    pub ra_column: u16,
    /// DWARF number of the link register, when calls leave the return address in a
    /// register instead of pushing it (so a leaf frame has the caller's sp).
    pub link_register: Option<u16>,
    /// Registers a callee must preserve (kept when CFI does not mention them).
    pub callee_saved: &'static [u16],
    /// Bytes a call pushes on the stack (the return address), popped on return.
    pub call_push: u64,
    /// Mask applied to return addresses read from memory or the link register: drops
    /// pointer-authentication bits above the user virtual address space.
    pub address_mask: u64,
}

/// `user_regs_struct` indices of the x86_64 registers, by DWARF number.
const X86_64_REGS: [(usize, u16); 17] = [
    (10, 0),  // rax
    (12, 1),  // rdx
    (11, 2),  // rcx
    (5, 3),   // rbx
    (13, 4),  // rsi
    (14, 5),  // rdi
    (4, 6),   // rbp
    (19, 7),  // rsp
    (9, 8),   // r8
    (8, 9),   // r9
    (7, 10),  // r10
    (6, 11),  // r11
    (3, 12),  // r12
    (2, 13),  // r13
    (1, 14),  // r14
    (0, 15),  // r15
    (16, 16), // rip (the DWARF return-address column)
];

/// `user_pt_regs` of aarch64: x0..x30 (DWARF 0..30), sp (31), pc (slot 32).
const AARCH64_REGS: [(usize, u16); 33] = {
    let mut t = [(0usize, 0u16); 33];
    let mut i = 0;
    while i < 33 {
        t[i] = (i, i as u16);
        i += 1;
    }
    t
};

pub const X86_64: Arch = Arch {
    name: "x86_64",
    e_machine: EM_X86_64,
    prstatus_regs: &X86_64_REGS,
    prstatus_count: 27,
    pc: 16,
    sp: 7,
    fp: 6,
    ra_column: 16,
    link_register: None,
    // SysV x86_64 ABI: rbx, rbp, r12-r15.
    callee_saved: &[3, 6, 12, 13, 14, 15],
    call_push: 8,
    address_mask: u64::MAX,
};

pub const AARCH64: Arch = Arch {
    name: "aarch64",
    e_machine: EM_AARCH64,
    prstatus_regs: &AARCH64_REGS,
    // regs[31], sp, pc, pstate.
    prstatus_count: 34,
    pc: 32,
    sp: 31,
    fp: 29,
    ra_column: 30,
    link_register: Some(30),
    // AAPCS64: x19-x28, the frame pointer x29 and the link register x30 (unmentioned in
    // CFI it still holds the return address).
    callee_saved: &[19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
    call_push: 0,
    // 48-bit user addresses (also with 52-bit VA, user space gets 48 bits unless it asks);
    // the bits above hold a pointer-authentication code.
    address_mask: (1 << 48) - 1,
};

impl Arch {
    pub fn from_machine(e_machine: u16) -> Option<Arch> {
        [X86_64, AARCH64]
            .into_iter()
            .find(|a| a.e_machine == e_machine)
    }
}

impl Default for Arch {
    fn default() -> Arch {
        X86_64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("core is truncated: {0}")]
    Truncated(&'static str),
    #[error("core is truncated: it ends at byte {have} of {want}")]
    Short { have: u64, want: u64 },
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported core: {0}")]
    Unsupported(&'static str),
    #[error("malformed core: {0}")]
    Malformed(String),
    #[error("core exceeds a limit: {0}")]
    Limit(String),
    #[error("no thread (NT_PRSTATUS) in the core")]
    NoThreads,
    #[error("cannot read the core: {0}")]
    Io(String),
    #[error("time budget exhausted")]
    Timeout,
}

/// The parts of the ELF header a core reader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfHeader {
    pub arch: Arch,
    pub phoff: u64,
    /// `e_phnum`; `0xffff` means "see section header 0" (extended numbering).
    pub phnum_raw: u16,
    pub shoff: u64,
}

pub const PN_XNUM: u16 = 0xffff;

impl ElfHeader {
    /// Parse and check a 64-byte ELF header: ELF64, little-endian, `ET_CORE`, of an
    /// architecture in [`Arch`].
    pub fn parse(b: &[u8]) -> Result<ElfHeader, CoreError> {
        if b.len() < EHDR_SIZE {
            return Err(CoreError::Truncated("ELF header"));
        }
        if &b[0..4] != b"\x7fELF" {
            return Err(CoreError::NotElf);
        }
        if b[4] != 2 {
            return Err(CoreError::Unsupported("not a 64-bit ELF file"));
        }
        if b[5] != 1 {
            return Err(CoreError::Unsupported("not little-endian"));
        }
        if u16_at(b, 16) != Some(4) {
            return Err(CoreError::Unsupported(
                "not a core file (e_type != ET_CORE)",
            ));
        }
        let Some(arch) = u16_at(b, 18).and_then(Arch::from_machine) else {
            return Err(CoreError::Unsupported(
                "machine is neither x86_64 nor aarch64",
            ));
        };
        let phentsize = u16_at(b, 54).unwrap_or(0);
        let phnum_raw = u16_at(b, 56).unwrap_or(0);
        if phnum_raw != 0 && phentsize as usize != PHDR_SIZE {
            return Err(CoreError::Malformed(format!(
                "program header size {phentsize}"
            )));
        }
        let phoff = u64_at(b, 32).unwrap_or(0);
        if phnum_raw != 0 && phoff < EHDR_SIZE as u64 {
            return Err(CoreError::Malformed(format!(
                "program headers at offset {phoff}"
            )));
        }
        Ok(ElfHeader {
            arch,
            phoff,
            phnum_raw,
            shoff: u64_at(b, 40).unwrap_or(0),
        })
    }

    /// Byte length of the program header table for `count` entries, checked against limits.
    pub fn table_len(count: u64) -> Result<usize, CoreError> {
        if count as usize > MAX_SEGMENTS || count > MAX_SEGMENTS as u64 {
            return Err(CoreError::Limit(format!("{count} program headers")));
        }
        Ok(count as usize * PHDR_SIZE)
    }
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Segment {
    pub fn parse(b: &[u8]) -> Option<Segment> {
        Some(Segment {
            p_type: u32_at(b, 0)?,
            flags: u32_at(b, 4)?,
            offset: u64_at(b, 8)?,
            vaddr: u64_at(b, 16)?,
            filesz: u64_at(b, 32)?,
            memsz: u64_at(b, 40)?,
        })
    }

    /// End of the segment's bytes in the file, or `None` on overflow.
    pub fn file_end(&self) -> Option<u64> {
        self.offset.checked_add(self.filesz)
    }

    pub fn is_executable(&self) -> bool {
        self.flags & PF_X != 0
    }
}

/// Parse a program header table (`count` × 56 bytes).
pub fn parse_segments(table: &[u8]) -> Vec<Segment> {
    table
        .chunks_exact(PHDR_SIZE)
        .filter_map(Segment::parse)
        .collect()
}

/// Registers of one thread, from its `NT_PRSTATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadState {
    pub tid: u32,
    pub cursig: u16,
    pub arch: Arch,
    /// Indexed by register slot (see [`NREGS`]); registers the architecture lacks are 0.
    pub regs: [u64; NREGS],
}

impl ThreadState {
    pub fn pc(&self) -> u64 {
        self.regs[self.arch.pc as usize]
    }
    pub fn sp(&self) -> u64 {
        self.regs[self.arch.sp as usize]
    }
}

/// One `NT_FILE` entry: a file-backed mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the file, in bytes.
    pub file_offset: u64,
    pub path: String,
}

/// `NT_SIGINFO`: the signal that caused the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: i32,
    pub code: i32,
    pub addr: u64,
}

/// Everything read from the notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreNotes {
    /// The core's architecture (`e_machine`), which lays out `NT_PRSTATUS`.
    pub arch: Arch,
    /// In note order: the first is the thread that took the signal.
    pub threads: Vec<ThreadState>,
    pub files: Vec<FileMapping>,
    pub page_size: u64,
    pub auxv: Vec<(u64, u64)>,
    pub siginfo: Option<SigInfo>,
    pub pid: Option<u32>,
    pub fname: Option<String>,
    /// Threads beyond [`MAX_THREADS`] that were not kept.
    pub threads_dropped: usize,
}

impl CoreNotes {
    pub fn auxv_value(&self, key: u64) -> Option<u64> {
        self.auxv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Parse the notes of one `PT_NOTE` segment and merge them into `self`.
    pub fn parse_segment(&mut self, data: &[u8]) -> Result<(), CoreError> {
        let mut pos = 0usize;
        while pos + 12 <= data.len() {
            let namesz = u32_at(data, pos).unwrap_or(0) as usize;
            let descsz = u32_at(data, pos + 4).unwrap_or(0) as usize;
            let ntype = u32_at(data, pos + 8).unwrap_or(0);
            let name_start = pos + 12;
            let desc_start = name_start
                .checked_add(align4(namesz))
                .ok_or_else(|| CoreError::Malformed("note name size".into()))?;
            let desc_end = desc_start
                .checked_add(descsz)
                .filter(|e| *e <= data.len())
                .ok_or_else(|| {
                    CoreError::Malformed(format!("note at {pos} overruns its segment"))
                })?;
            let name = &data[name_start..name_start + namesz.min(desc_start - name_start)];
            let desc = &data[desc_start..desc_end];
            if name.starts_with(b"CORE") {
                self.parse_note(ntype, desc)?;
            }
            pos = desc_start + align4(descsz);
        }
        Ok(())
    }

    fn parse_note(&mut self, ntype: u32, desc: &[u8]) -> Result<(), CoreError> {
        match ntype {
            NT_PRSTATUS => {
                if self.threads.len() >= MAX_THREADS {
                    self.threads_dropped += 1;
                    return Ok(());
                }
                let arch = self.arch;
                let regs_end = PR_REG_OFFSET + arch.prstatus_count * 8;
                if desc.len() < regs_end {
                    return Err(CoreError::Malformed(format!(
                        "NT_PRSTATUS of {} bytes",
                        desc.len()
                    )));
                }
                let ureg = |i: usize| u64_at(desc, PR_REG_OFFSET + i * 8).unwrap_or(0);
                let mut regs = [0u64; NREGS];
                for &(u, d) in arch.prstatus_regs {
                    regs[d as usize] = ureg(u);
                }
                self.threads.push(ThreadState {
                    tid: u32_at(desc, PR_PID_OFFSET).unwrap_or(0),
                    cursig: u16_at(desc, PR_CURSIG_OFFSET).unwrap_or(0),
                    arch,
                    regs,
                });
            }
            NT_PRPSINFO => {
                // pr_pid at 24, pr_fname[16] at 40.
                self.pid = u32_at(desc, 24);
                if let Some(f) = desc.get(40..56) {
                    let n = f.iter().position(|&c| c == 0).unwrap_or(f.len());
                    self.fname = Some(String::from_utf8_lossy(&f[..n]).into_owned());
                }
            }
            NT_AUXV => {
                self.auxv = desc
                    .chunks_exact(16)
                    .take(512)
                    .map(|c| (u64_at(c, 0).unwrap_or(0), u64_at(c, 8).unwrap_or(0)))
                    .take_while(|(k, _)| *k != 0)
                    .collect();
            }
            NT_SIGINFO if desc.len() >= 24 => {
                self.siginfo = Some(SigInfo {
                    signo: u32_at(desc, 0).unwrap_or(0) as i32,
                    code: u32_at(desc, 8).unwrap_or(0) as i32,
                    addr: u64_at(desc, 16).unwrap_or(0),
                });
            }
            NT_FILE => self.parse_nt_file(desc)?,
            _ => {}
        }
        Ok(())
    }

    fn parse_nt_file(&mut self, desc: &[u8]) -> Result<(), CoreError> {
        let bad = |m: &str| CoreError::Malformed(format!("NT_FILE: {m}"));
        let count = u64_at(desc, 0).ok_or_else(|| bad("too short"))?;
        let page_size = u64_at(desc, 8).ok_or_else(|| bad("too short"))?;
        if count > MAX_FILE_MAPPINGS {
            return Err(CoreError::Limit(format!("NT_FILE with {count} entries")));
        }
        // gdb writes a page size of 1 (offsets in bytes).
        if !(page_size.is_power_of_two() && page_size <= 1 << 30) {
            return Err(bad(&format!("page size {page_size}")));
        }
        let table_end = 16 + count as usize * 24;
        if table_end > desc.len() {
            return Err(bad("entry table overruns the note"));
        }
        let mut names = desc[table_end..].split(|&c| c == 0);
        let mut files = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let e = 16 + i * 24;
            let start = u64_at(desc, e).unwrap_or(0);
            let end = u64_at(desc, e + 8).unwrap_or(0);
            let pgoff = u64_at(desc, e + 16).unwrap_or(0);
            let name = names.next().ok_or_else(|| bad("missing file name"))?;
            if end <= start {
                continue;
            }
            let Some(file_offset) = pgoff.checked_mul(page_size) else {
                continue;
            };
            files.push(FileMapping {
                start,
                end,
                file_offset,
                path: String::from_utf8_lossy(name).into_owned(),
            });
        }
        files.sort_by_key(|f| f.start);
        self.files = files;
        self.page_size = page_size;
        Ok(())
    }
}

/// Parse every `PT_NOTE` segment found in `core` (a whole core in memory) and check that
/// threads were found.
pub fn parse_notes_in(
    core: &[u8],
    segments: &[Segment],
    arch: Arch,
) -> Result<CoreNotes, CoreError> {
    let mut notes = CoreNotes {
        arch,
        ..CoreNotes::default()
    };
    let mut total = 0u64;
    for s in segments.iter().filter(|s| s.p_type == PT_NOTE) {
        total = total.saturating_add(s.filesz);
        if total > MAX_NOTES_BYTES {
            return Err(CoreError::Limit(format!("{total} bytes of notes")));
        }
        let data = s
            .file_end()
            .and_then(|end| core.get(s.offset as usize..end as usize))
            .ok_or(CoreError::Truncated("note segment"))?;
        notes.parse_segment(data)?;
    }
    if notes.threads.is_empty() {
        return Err(CoreError::NoThreads);
    }
    Ok(notes)
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], ntype: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&ntype.to_le_bytes());
        v.extend_from_slice(name);
        v.push(0);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn prstatus_registers_and_tid() {
        let mut desc = vec![0u8; 336];
        desc[12..14].copy_from_slice(&11u16.to_le_bytes());
        desc[32..36].copy_from_slice(&4242u32.to_le_bytes());
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut desc, 16, 0x1234); // rip
        put(&mut desc, 19, 0x7ff0); // rsp
        put(&mut desc, 4, 0x7ff8); // rbp
        let mut n = CoreNotes::default();
        n.parse_segment(&note(b"CORE", NT_PRSTATUS, &desc)).unwrap();
        let t = &n.threads[0];
        assert_eq!(
            (t.tid, t.cursig, t.pc(), t.sp(), t.regs[6]),
            (4242, 11, 0x1234, 0x7ff0, 0x7ff8)
        );
    }

    #[test]
    fn aarch64_prstatus_registers() {
        // pr_reg: x0..x30, sp, pc, pstate.
        let mut desc = vec![0u8; 112 + 34 * 8 + 8];
        desc[32..36].copy_from_slice(&7u32.to_le_bytes());
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut desc, 29, 0x7000); // x29
        put(&mut desc, 30, 0x4242); // x30
        put(&mut desc, 31, 0x6ff0); // sp
        put(&mut desc, 32, 0x4000); // pc
        let mut n = CoreNotes {
            arch: AARCH64,
            ..CoreNotes::default()
        };
        n.parse_segment(&note(b"CORE", NT_PRSTATUS, &desc)).unwrap();
        let t = &n.threads[0];
        assert_eq!(
            (t.tid, t.pc(), t.sp(), t.regs[29], t.regs[30]),
            (7, 0x4000, 0x6ff0, 0x7000, 0x4242)
        );
        // Too short for aarch64's 34 registers.
        let mut n = CoreNotes {
            arch: AARCH64,
            ..CoreNotes::default()
        };
        assert!(n
            .parse_segment(&note(b"CORE", NT_PRSTATUS, &desc[..112 + 33 * 8]))
            .is_err());
    }

    #[test]
    fn nt_file_entries() {
        let mut desc = Vec::new();
        for v in [2u64, 4096, 0x1000, 0x3000, 0, 0x5000, 0x6000, 2] {
            desc.extend_from_slice(&v.to_le_bytes());
        }
        desc.extend_from_slice(b"/bin/a\0/lib/b\0");
        let mut n = CoreNotes::default();
        n.parse_segment(&note(b"CORE", NT_FILE, &desc)).unwrap();
        assert_eq!(n.files.len(), 2);
        assert_eq!(n.files[1].file_offset, 8192);
        assert_eq!(n.files[1].path, "/lib/b");
    }

    #[test]
    fn hostile_notes_are_errors() {
        let check = |bytes: Vec<u8>| {
            let mut n = CoreNotes::default();
            assert!(n.parse_segment(&bytes).is_err(), "{bytes:?}");
        };
        // Huge count.
        let mut desc = Vec::new();
        for v in [u64::MAX, 4096] {
            desc.extend_from_slice(&v.to_le_bytes());
        }
        check(note(b"CORE", NT_FILE, &desc));
        // Descriptor size past the end.
        let mut n = note(b"CORE", NT_AUXV, &[0; 16]);
        n[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        check(n);
        // Short prstatus.
        check(note(b"CORE", NT_PRSTATUS, &[0; 100]));
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            ElfHeader::parse(b"short"),
            Err(CoreError::Truncated("ELF header"))
        );
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[16] = 2; // ET_EXEC
        h[18] = 62;
        assert!(matches!(
            ElfHeader::parse(&h),
            Err(CoreError::Unsupported(_))
        ));
        h[16] = 4;
        h[54] = 56;
        h[56] = 3;
        h[32] = 64;
        assert_eq!(ElfHeader::parse(&h).unwrap().phnum_raw, 3);
        assert_eq!(ElfHeader::parse(&h).unwrap().arch, X86_64);
        h[18] = 183;
        assert_eq!(ElfHeader::parse(&h).unwrap().arch, AARCH64);
        h[18] = 40; // EM_ARM
        assert!(matches!(
            ElfHeader::parse(&h),
            Err(CoreError::Unsupported(_))
        ));
    }
}
