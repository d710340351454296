//! Where the files behind the modules are looked for: the [`SymbolOptions`] (debug roots,
//! sysroot, the process's own files, debuginfod), a crashed process's path on this machine
//! (`host_path`), and the separate debug file of an image (by build-id under each debug
//! root, then by `.gnu_debuglink`).
//!
//! Invariant: a debug file whose build-id differs from its image's is never returned.

use std::path::{Path, PathBuf};

use object::Object;

use crate::arena::Arena;
use crate::image::{hex, map_file, Image};
use crate::procfiles::ProcessFiles;
use crate::symbolize::FrameStyle;

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
    /// Servers asked for what is not on the host (`ModuleMap::fetch_missing`).
    pub debuginfod: Option<std::sync::Arc<crate::debuginfod::Client>>,
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

/// Separate debug file: by build-id under each debug root, then by `.gnu_debuglink` next to
/// the file, in its `.debug/` subdirectory and under each debug root.
pub(crate) fn find_debug_file<'a>(
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
