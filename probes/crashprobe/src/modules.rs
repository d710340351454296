//! The crashed process's modules: the files named in `NT_FILE` (or found by [`linkmap`]) and
//! the vDSO (parsed from core memory), their address mappings, and their unwind tables and
//! symbolizers, built lazily. A file is used only when it is provably the mapped one:
//! opened through the process itself ([`ProcessFiles`], while the probe is root), carrying
//! the build-id the core holds, or from the sysroot of an offline analysis.
//!
//! The parts below this one: [`image`] (mapping a file, build-ids, sonames), [`procfiles`]
//! (the process's own files), [`search`] (options, sysroot paths, debug files) and [`cfi`]
//! (unwind tables). Their public items are re-exported here under their earlier paths.
//!
//! [`linkmap`]: crate::linkmap
//! [`image`]: crate::image
//! [`procfiles`]: crate::procfiles
//! [`search`]: crate::search
//! [`cfi`]: crate::cfi

use std::cell::OnceCell;
use std::fs::File;
use std::path::Path;

use object::Object;

use crate::arena::Arena;
use crate::elfcore::{FileMapping, AT_ENTRY, AT_SYSINFO_EHDR};
use crate::image::{basename, map_file, map_open_file, soname};
use crate::reader::CoreImage;
use crate::search::{find_debug_file, host_path};
use crate::symbolize::Symbolizer;

pub use crate::cfi::UnwindTables;
pub use crate::image::{build_id_hex, build_id_in_memory, Image, Reader, MAX_MODULES};
pub use crate::procfiles::ProcessFiles;
pub use crate::search::SymbolOptions;
pub use crate::symbolize::{demangle, FrameStyle, SymFrame};

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
