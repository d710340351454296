//! The crashed process's own mapped files, opened while the process still exists and the
//! probe is still root: through `/proc/<pid>/map_files/` (the mapped inode itself), else
//! through the process's `root/` and the path `/proc/<pid>/maps` lists.
//!
//! Invariant: a file is kept only when it is the very inode the process mapped (a
//! `maps` path is resolved inside the process's root and checked against the listed device
//! and inode), so `modules` may use it without a build-id to prove it.

use std::fs::File;
use std::path::Path;

use crate::image::MAX_MODULES;

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
