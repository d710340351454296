//! The crashed process's modules: the files named in `NT_FILE` and the vDSO (parsed from
//! core memory), with their unwind tables and symbolizers, built lazily. A file is used only
//! when it is provably the mapped one: opened through the process itself
//! ([`ProcessFiles`], while the probe is root) or carrying the build-id the core holds.

use std::cell::OnceCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use gimli::{EndianSlice, RunTimeEndian};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

use crate::arena::Arena;
use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader, NoteIterator, ProgramHeader};
use object::Endianness;

use crate::elfcore::{FileMapping, AT_ENTRY, AT_SYSINFO_EHDR};
use crate::reader::CoreImage;
use crate::symbolize::Symbolizer;
pub use crate::symbolize::{demangle, FrameStyle, SymFrame};

pub type Reader<'a> = EndianSlice<'a, RunTimeEndian>;

/// Distinct files considered as modules.
pub const MAX_MODULES: usize = 1024;
/// Largest module or debug file opened.
const MAX_FILE_SIZE: u64 = 4 << 30;

/// Where separate debug files are looked up.
#[derive(Debug, Clone)]
pub struct SymbolOptions {
    /// Roots of `.build-id/xx/yyyy.debug` trees and debuglink trees, in search order.
    pub debug_roots: Vec<PathBuf>,
    /// How frames are named.
    pub style: FrameStyle,
    /// The crashed process's mapped files, opened through `/proc/<pid>/map_files/` while
    /// the probe was still root (the files the process mapped, even if deleted, replaced
    /// or in another mount namespace).
    pub process_files: Option<std::sync::Arc<ProcessFiles>>,
    /// Offline analysis against a copy of the crashed machine's files: the files a core
    /// names are looked up under this directory first. Files found for a core that holds
    /// no build-id for them are used (the sysroot vouches for them).
    pub sysroot: Option<PathBuf>,
    /// The crashed executable's path (`-E`), where the core does not name its files.
    pub executable: Option<PathBuf>,
    /// Servers asked for what is not on the host ([`ModuleMap::fetch_missing`]).
    pub debuginfod: Option<std::sync::Arc<crate::debuginfod::Client>>,
}

/// Mapped files of a live (crashing) process: `(start, end, index into files)`.
#[derive(Debug, Default)]
pub struct ProcessFiles {
    /// The PID as the kernel passed it (`%P`, initial PID namespace).
    pub pid: u32,
    /// The PID in the process's own PID namespace (the last `NSpid` of its status), which is
    /// what its core records.
    pub own_ns_pid: u32,
    ranges: Vec<(u64, u64, usize)>,
    files: Vec<File>,
}

/// Most `/proc/<pid>/map_files/` entries and `maps` lines looked at.
const MAX_MAP_FILES: usize = 65_536;

/// `start-end` in hex, as `map_files/` names and `maps` lines start.
fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// A regular file opened read-only without blocking or becoming a controlling tty.
fn open_regular(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Looked at before opening: opening a device a process mapped could have effects.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// An `O_PATH` handle on a directory (the process's root).
fn open_dir_path(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .ok()
}

/// The file of a `maps` line, looked up inside the process's root with symbolic links
/// resolved in that root (`openat2` `RESOLVE_IN_ROOT`), and opened for reading only when it
/// is a regular file with the device and inode the process mapped.
fn open_mapped_in_root(root: &File, m: &MapsLine<'_>) -> Option<File> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;
    let rel = CString::new(m.path.trim_start_matches('/')).ok()?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a fresh descriptor owned by nothing else.
    let handle = unsafe { File::from_raw_fd(fd) };
    let md = handle.metadata().ok()?;
    let dev = (libc::major(md.dev()), libc::minor(md.dev()));
    if !md.is_file() || md.ino() != m.inode || dev != m.dev {
        return None;
    }
    // Reopen the very inode for reading through the handle.
    let file = File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())).ok()?;
    let again = file.metadata().ok()?;
    (again.ino() == m.inode && again.dev() == md.dev()).then_some(file)
}

/// A file-backed line of `/proc/<pid>/maps`:
/// `start-end perms offset major:minor inode path`.
struct MapsLine<'l> {
    start: u64,
    end: u64,
    dev: (u32, u32),
    inode: u64,
    path: &'l str,
}

impl<'l> MapsLine<'l> {
    fn parse(line: &'l [u8]) -> Option<MapsLine<'l>> {
        let line = std::str::from_utf8(line).ok()?;
        let mut f = line.splitn(6, ' ');
        let (start, end) = parse_range(f.next()?)?;
        let _perms = f.next()?;
        let _offset = f.next()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let dev = (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        let inode: u64 = f.next()?.parse().ok()?;
        let path = f.next()?.trim_start_matches(' ');
        // Deleted files cannot be reached by path; pseudo-files are not ELF modules.
        if inode == 0 || !path.starts_with('/') || path.ends_with(" (deleted)") {
            return None;
        }
        Some(MapsLine {
            start,
            end,
            dev,
            inode,
            path,
        })
    }
}

impl ProcessFiles {
    /// Open every file mapping of process `pid` under `proc_root` (normally `/proc`):
    /// through `map_files/` (the mapped inode itself; needs root), else through `root/`
    /// plus the path `maps` lists, accepted only when it is the inode `maps` lists.
    /// Returns what could be opened.
    pub fn open(proc_root: &Path, pid: u32) -> ProcessFiles {
        let base = proc_root.join(pid.to_string());
        let own_ns_pid = std::fs::read_to_string(base.join("status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
                line.split_whitespace().last()?.parse().ok()
            })
            .unwrap_or(pid);
        let mut out = ProcessFiles {
            pid,
            own_ns_pid,
            ..ProcessFiles::default()
        };
        let mut by_inode: std::collections::HashMap<(u64, u64), usize> = Default::default();
        if let Ok(entries) = std::fs::read_dir(base.join("map_files")) {
            for e in entries.take(MAX_MAP_FILES).flatten() {
                let name = e.file_name();
                let Some((start, end)) = name.to_str().and_then(parse_range) else {
                    continue;
                };
                if let Some(file) = open_regular(&e.path()) {
                    out.add(start, end, file, &mut by_inode);
                }
            }
        }
        // Mappings map_files did not give (no CAP_SYS_ADMIN, or a kernel that hides it).
        let maps = std::fs::read(base.join("maps")).unwrap_or_default();
        let root = open_dir_path(&base.join("root"));
        for line in maps.split(|&b| b == b'\n').take(MAX_MAP_FILES) {
            let Some(root) = &root else { break };
            let Some(m) = MapsLine::parse(line) else {
                continue;
            };
            if out.file_at(m.start, m.end).is_some() {
                continue;
            }
            if let Some(file) = open_mapped_in_root(root, &m) {
                out.add(m.start, m.end, file, &mut by_inode);
            }
        }
        out.ranges.sort_unstable();
        out
    }

    fn add(
        &mut self,
        start: u64,
        end: u64,
        file: File,
        by_inode: &mut std::collections::HashMap<(u64, u64), usize>,
    ) {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = file.metadata() else { return };
        let key = (md.dev(), md.ino());
        let idx = match by_inode.get(&key) {
            Some(&i) => i,
            None => {
                if self.files.len() >= MAX_MODULES {
                    return;
                }
                self.files.push(file);
                by_inode.insert(key, self.files.len() - 1);
                self.files.len() - 1
            }
        };
        self.ranges.push((start, end, idx));
    }

    /// Is this the process whose core records `core_pid`?
    pub fn is_process(&self, core_pid: Option<u32>) -> bool {
        core_pid == Some(self.own_ns_pid)
    }

    /// The file mapped at `[start, end)`.
    pub fn file_at(&self, start: u64, end: u64) -> Option<&File> {
        self.ranges
            .iter()
            .find(|r| r.0 == start && r.1 == end)
            .map(|r| &self.files[r.2])
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Default for SymbolOptions {
    fn default() -> Self {
        SymbolOptions {
            debug_roots: vec![PathBuf::from("/usr/lib/debug")],
            style: FrameStyle::default(),
            process_files: None,
            sysroot: None,
            executable: None,
            debuginfod: None,
        }
    }
}

/// Why a module's file is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// The file could not be opened or parsed.
    Missing,
    /// The file on disk is not the one that was mapped (updated since the crash).
    BuildIdMismatch,
    /// Nothing proves the file on disk is the one that was mapped: the core holds no
    /// build-id for it and the process's own file could not be opened.
    Unproven,
}

/// An ELF image usable for unwinding and symbols.
pub struct Image<'a> {
    pub(crate) obj: object::File<'a>,
    /// `(file offset, file size, vaddr, executable)` of the image's PT_LOAD segments.
    loads: Vec<(u64, u64, u64, bool)>,
    pub(crate) debug: Option<object::File<'a>>,
}

pub struct Module<'a> {
    pub path: String,
    /// Display name: the executable's full path, else the soname (or file name).
    pub name: String,
    pub core_build_id: Option<Vec<u8>>,
    /// The main executable (as opposed to a shared library or the vDSO).
    pub is_exe: bool,
    pub image: Result<Image<'a>, Unusable>,
    unwind: OnceCell<Option<UnwindTables<'a>>>,
    symbols: OnceCell<Symbolizer<'a>>,
}

/// A mapped range of a module.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    start: u64,
    end: u64,
    file_offset: u64,
    module: usize,
}

pub struct ModuleMap<'a> {
    pub modules: Vec<Module<'a>>,
    mappings: Vec<Mapping>,
    exec: Vec<(u64, u64)>,
    arena: &'a Arena,
    style: FrameStyle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSymbol {
    /// The module is known and usable.
    Resolved {
        module: String,
        frames: Vec<SymFrame>,
    },
    /// The module's file is missing, differs from the crashed one, or cannot be shown to
    /// be it: module+offset.
    Unverified {
        module: String,
        offset: u64,
        build_id: Option<Vec<u8>>,
        why: Unusable,
    },
    /// The address is in no known module.
    NoModule,
}

impl<'a> ModuleMap<'a> {
    pub fn new(core: &'a CoreImage, arena: &'a Arena, opts: &SymbolOptions) -> ModuleMap<'a> {
        let notes = &core.notes;
        // Without NT_FILE (qemu-user cores, old kernels) the dynamic linker's list tells.
        let discovered;
        let files: &[FileMapping] = if notes.files.is_empty() {
            discovered = crate::linkmap::discover(core, arena, opts);
            &discovered
        } else {
            &notes.files
        };
        let entry = notes.auxv_value(AT_ENTRY);
        let exe_path = entry.and_then(|e| {
            files
                .iter()
                .find(|f| f.start <= e && e < f.end)
                .map(|f| f.path.clone())
        });
        let mut modules: Vec<Module<'a>> = Vec::new();
        let mut mappings = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        for f in files {
            let idx = match index.get(f.path.as_str()) {
                Some(&i) => i,
                None => {
                    if modules.len() >= MAX_MODULES {
                        continue;
                    }
                    let head = files
                        .iter()
                        .find(|g| g.path == f.path && g.file_offset == 0)
                        .map(|g| g.start);
                    let core_build_id = head.and_then(|h| build_id_in_memory(core, h));
                    let is_exe = exe_path.as_deref() == Some(f.path.as_str());
                    // The process's own file, when it is still there to ask (same pid).
                    let own = opts
                        .process_files
                        .as_deref()
                        .filter(|p| p.is_process(notes.pid))
                        .and_then(|p| p.file_at(f.start, f.end));
                    modules.push(open_module(
                        &f.path,
                        own,
                        core_build_id,
                        is_exe,
                        arena,
                        opts,
                    ));
                    index.insert(&f.path, modules.len() - 1);
                    modules.len() - 1
                }
            };
            mappings.push(Mapping {
                start: f.start,
                end: f.end,
                file_offset: f.file_offset,
                module: idx,
            });
        }
        if let Some(base) = notes.auxv_value(AT_SYSINFO_EHDR) {
            if let Some(bytes) = core.slice_to_segment_end(base, 64 << 10) {
                let module = vdso_module(bytes);
                if let Ok(img) = &module.image {
                    let size = img
                        .loads
                        .iter()
                        .map(|(o, s, _, _)| o.saturating_add(*s))
                        .max()
                        .unwrap_or(bytes.len() as u64);
                    mappings.push(Mapping {
                        start: base,
                        end: base.saturating_add(size.max(1)),
                        file_offset: 0,
                        module: modules.len(),
                    });
                }
                modules.push(module);
            }
        }
        mappings.sort_by_key(|m| m.start);
        ModuleMap {
            modules,
            mappings,
            exec: core.executable_ranges(),
            arena,
            style: opts.style,
        }
    }

    /// Is `addr` inside an executable mapping of the process? The core's program headers
    /// say so for kernel cores; gdb omits unmodified file-backed text, so a module's own
    /// executable segments count too.
    pub fn is_executable(&self, addr: u64) -> bool {
        let i = self.exec.partition_point(|(s, _)| *s <= addr);
        if i > 0 && addr < self.exec[i - 1].1 {
            return true;
        }
        match self.locate(addr) {
            Some((module, off)) => match &module.image {
                Ok(img) => img
                    .loads
                    .iter()
                    .any(|(o, s, _, x)| *x && *o <= off && off - o < *s),
                Err(_) => true,
            },
            None => false,
        }
    }

    fn mapping(&self, avma: u64) -> Option<&Mapping> {
        let i = self
            .mappings
            .partition_point(|m| m.start <= avma)
            .checked_sub(1)?;
        let m = &self.mappings[i];
        (avma < m.end).then_some(m)
    }

    /// The module containing `avma` and the address's file offset in it.
    pub fn locate(&self, avma: u64) -> Option<(&Module<'a>, u64)> {
        let m = self.mapping(avma)?;
        let off = (avma - m.start).checked_add(m.file_offset)?;
        Some((&self.modules[m.module], off))
    }

    /// Module, its usable image and the stated virtual address for `avma`.
    pub fn resolve(&self, avma: u64) -> Option<(&Module<'a>, &Image<'a>, u64)> {
        let (module, off) = self.locate(avma)?;
        let img = module.image.as_ref().ok()?;
        let svma = img.file_offset_to_svma(off)?;
        Some((module, img, svma))
    }

    /// Symbolize `avma`; `lookup` is the address to look up (`pc - 1` for return addresses).
    pub fn symbolize(&self, lookup: u64) -> FrameSymbol {
        let Some((module, off)) = self.locate(lookup) else {
            return FrameSymbol::NoModule;
        };
        let img = match &module.image {
            Ok(img) => img,
            Err(why) => {
                return FrameSymbol::Unverified {
                    module: module.name.clone(),
                    offset: off,
                    build_id: module.core_build_id.clone(),
                    why: why.clone(),
                }
            }
        };
        let Some(svma) = img.file_offset_to_svma(off) else {
            return FrameSymbol::Resolved {
                module: module.name.clone(),
                frames: vec![SymFrame {
                    function: None,
                    location: None,
                }],
            };
        };
        let sym = module
            .symbols
            .get_or_init(|| Symbolizer::new(img, module.is_exe, self.arena, self.style));
        FrameSymbol::Resolved {
            module: module.name.clone(),
            frames: sym.lookup(svma),
        }
    }
}

impl<'a> ModuleMap<'a> {
    /// For the modules holding `pcs`, fetch from debuginfod what the host lacks: the debug
    /// file of a module without debug information, and the file itself of a module whose
    /// own file is unusable (then its debug file too). Only files carrying the module's
    /// build-id are used. Returns whether a module's file was replaced (unwinding again
    /// can then use its CFI).
    pub fn fetch_missing(
        &mut self,
        pcs: impl Iterator<Item = u64>,
        client: &std::sync::Arc<crate::debuginfod::Client>,
    ) -> (bool, crate::debuginfod::Outcome) {
        use crate::debuginfod::{verified, Kind};
        let mut held: Vec<usize> = pcs
            .filter_map(|pc| Some(self.mapping(pc)?.module))
            .collect();
        held.sort_unstable();
        held.dedup();
        let mut wanted: Vec<(usize, Vec<u8>, Kind)> = Vec::new();
        for i in held {
            let m = &self.modules[i];
            match &m.image {
                _ if m.path == "[vdso]" => {}
                Ok(img)
                    if img.debug.is_none() && img.obj.section_by_name(".debug_info").is_none() =>
                {
                    if let Some(id) = img.build_id() {
                        wanted.push((i, id.to_vec(), Kind::Debuginfo));
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(id) = &m.core_build_id {
                        wanted.push((i, id.clone(), Kind::Executable));
                        wanted.push((i, id.clone(), Kind::Debuginfo));
                    }
                }
            }
        }
        if wanted.is_empty() {
            return (false, Default::default());
        }
        let ask: Vec<_> = wanted.iter().map(|(_, id, k)| (id.clone(), *k)).collect();
        let (files, outcome) = client.fetch_all(&ask);
        let mut replaced = false;
        for ((i, id, kind), file) in wanted.into_iter().zip(files) {
            let Some(data) = file.and_then(|f| map_open_file(&f, self.arena)) else {
                continue;
            };
            if !verified(data, &id) {
                continue;
            }
            let module = &mut self.modules[i];
            match (kind, &mut module.image) {
                (Kind::Executable, Err(_)) => {
                    if let Some(img) = Image::parse(data, None) {
                        if !module.is_exe {
                            module.name = soname(&img.obj).unwrap_or(module.name.clone());
                        }
                        module.image = Ok(img);
                        module.unwind = OnceCell::new();
                        replaced = true;
                    }
                }
                (Kind::Debuginfo, Ok(img)) => img.debug = object::File::parse(data).ok(),
                _ => continue,
            }
            module.symbols = OnceCell::new();
        }
        (replaced, outcome)
    }
}

impl<'a> Module<'a> {
    /// The module's unwind tables (built on first use).
    pub fn unwind_tables(&self) -> Option<&UnwindTables<'a>> {
        self.unwind
            .get_or_init(|| self.image.as_ref().ok().and_then(UnwindTables::new))
            .as_ref()
    }
}

impl<'a> Image<'a> {
    fn parse(data: &'a [u8], debug: Option<&'a [u8]>) -> Option<Image<'a>> {
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

    fn file_offset_to_svma(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(o, s, _, _)| *o <= off && off - o < *s)
            .map(|(o, _, v, _)| off - o + v)
    }

    fn build_id(&self) -> Option<&'a [u8]> {
        self.obj.build_id().ok().flatten()
    }
}

fn open_module<'a>(
    path: &str,
    own: Option<&File>,
    core_build_id: Option<Vec<u8>>,
    is_exe: bool,
    arena: &'a Arena,
    opts: &SymbolOptions,
) -> Module<'a> {
    let disk_path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let disk_path = &*host_path(disk_path, opts);
    // A file is used only when it is provably the one that was mapped: opened through the
    // process itself, with the build-id the core recorded, or from the sysroot of an
    // offline analysis.
    let (data, proven) = match own.and_then(|f| map_open_file(f, arena)) {
        Some(d) => (Some(d), true),
        None => (
            map_file(Path::new(disk_path), arena),
            opts.sysroot.is_some(),
        ),
    };
    let image = data
        .and_then(|d| Image::parse(d, None))
        .ok_or(Unusable::Missing)
        .and_then(|img| match (&core_build_id, img.build_id()) {
            (Some(core), disk) if disk != Some(core.as_slice()) => Err(Unusable::BuildIdMismatch),
            (None, _) if !proven => Err(Unusable::Unproven),
            _ => Ok(img),
        })
        .map(|mut img| {
            img.debug = find_debug_file(&img, Path::new(disk_path), arena, opts)
                .and_then(|d| object::File::parse(d).ok());
            img
        });
    let name = if is_exe {
        path.to_string()
    } else {
        image
            .as_ref()
            .ok()
            .and_then(|i| soname(&i.obj))
            .unwrap_or_else(|| basename(disk_path).to_string())
    };
    Module {
        path: path.to_string(),
        name,
        core_build_id,
        is_exe,
        image,
        unwind: OnceCell::new(),
        symbols: OnceCell::new(),
    }
}

fn vdso_module(bytes: &[u8]) -> Module<'_> {
    let image = Image::parse(bytes, None).ok_or(Unusable::Missing);
    let name = image
        .as_ref()
        .ok()
        .and_then(|i| soname(&i.obj))
        .unwrap_or_else(|| "linux-vdso.so.1".to_string());
    Module {
        path: "[vdso]".into(),
        name,
        is_exe: false,
        core_build_id: image
            .as_ref()
            .ok()
            .and_then(|i| i.build_id().map(<[u8]>::to_vec)),
        image,
        unwind: OnceCell::new(),
        symbols: OnceCell::new(),
    }
}

/// Where the file the crashed process knew as `path` is on this machine: under the sysroot
/// when there is one and it holds the file, else `path` itself.
pub(crate) fn host_path<'p>(path: &'p str, opts: &SymbolOptions) -> std::borrow::Cow<'p, str> {
    if let Some(root) = &opts.sysroot {
        let inside = root.join(path.trim_start_matches('/'));
        if std::fs::metadata(&inside).is_ok_and(|m| m.is_file()) {
            if let Some(s) = inside.to_str() {
                return std::borrow::Cow::Owned(s.to_string());
            }
        }
    }
    std::borrow::Cow::Borrowed(path)
}

fn basename(path: &str) -> &str {
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

fn map_open_file<'a>(file: &File, arena: &'a Arena) -> Option<&'a [u8]> {
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
fn soname(obj: &object::File<'_>) -> Option<String> {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Separate debug file: by build-id under each debug root, then by `.gnu_debuglink` next to
/// the file, in its `.debug/` subdirectory and under each debug root.
fn find_debug_file<'a>(
    img: &Image<'a>,
    path: &Path,
    arena: &'a Arena,
    opts: &SymbolOptions,
) -> Option<&'a [u8]> {
    let build_id = img.build_id();
    let accept = |data: &'a [u8]| -> bool {
        let Ok(obj) = object::File::parse(data) else {
            return false;
        };
        match (build_id, obj.build_id().ok().flatten()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    };
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let h = hex(id);
        for root in &opts.debug_roots {
            let p = root
                .join(".build-id")
                .join(&h[..2])
                .join(format!("{}.debug", &h[2..]));
            if let Some(d) = map_file(&p, arena).filter(|d| accept(d)) {
                return Some(d);
            }
        }
    }
    let (name, _crc) = img.obj.gnu_debuglink().ok().flatten()?;
    let name = std::str::from_utf8(name).ok()?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let dir = path.parent()?;
    let mut candidates = vec![dir.join(name), dir.join(".debug").join(name)];
    for root in &opts.debug_roots {
        candidates.push(root.join(dir.strip_prefix("/").unwrap_or(dir)).join(name));
    }
    candidates
        .into_iter()
        .filter(|c| c != path)
        .find_map(|c| map_file(&c, arena).filter(|d| accept(d)))
}

/// CFI sections of one image, in stated-address space.
pub struct UnwindTables<'a> {
    pub bases: gimli::BaseAddresses,
    pub eh_frame: Option<gimli::EhFrame<Reader<'a>>>,
    pub eh_frame_hdr: Option<gimli::ParsedEhFrameHdr<Reader<'a>>>,
    pub debug_frame: Option<gimli::DebugFrame<Reader<'a>>>,
}

impl<'a> UnwindTables<'a> {
    fn new(img: &Image<'a>) -> Option<UnwindTables<'a>> {
        let endian = if img.obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        // AArch64 CFI uses DW_CFA_AARCH64_negate_ra_state (pointer authentication), whose
        // opcode means something else elsewhere.
        let vendor = if img.obj.architecture() == object::Architecture::Aarch64 {
            gimli::Vendor::AArch64
        } else {
            gimli::Vendor::Default
        };
        let section = |obj: &object::File<'a>, name: &str| {
            obj.section_by_name(name)
                .and_then(|s| Some((s.address(), s.data().ok()?)))
                .filter(|(_, d)| !d.is_empty())
        };
        let mut bases = gimli::BaseAddresses::default();
        if let Some((addr, _)) = section(&img.obj, ".text") {
            bases = bases.set_text(addr);
        }
        if let Some((addr, _)) = section(&img.obj, ".got") {
            bases = bases.set_got(addr);
        }
        let eh_frame = section(&img.obj, ".eh_frame").map(|(addr, data)| {
            bases = bases.clone().set_eh_frame(addr);
            let mut f = gimli::EhFrame::new(data, endian);
            f.set_vendor(vendor);
            f
        });
        let eh_frame_hdr = section(&img.obj, ".eh_frame_hdr").and_then(|(addr, data)| {
            bases = bases.clone().set_eh_frame_hdr(addr);
            gimli::EhFrameHdr::new(data, endian).parse(&bases, 8).ok()
        });
        let debug_frame = section(&img.obj, ".debug_frame")
            .or_else(|| img.debug.as_ref().and_then(|d| section(d, ".debug_frame")))
            .map(|(_, data)| {
                let mut f = gimli::DebugFrame::new(data, endian);
                f.set_address_size(8);
                f.set_vendor(vendor);
                f
            });
        if eh_frame.is_none() && debug_frame.is_none() {
            return None;
        }
        Some(UnwindTables {
            bases,
            eh_frame,
            eh_frame_hdr,
            debug_frame,
        })
    }
}

/// Lower-case hex of a build-id.
pub fn build_id_hex(id: &[u8]) -> String {
    hex(id)
}
