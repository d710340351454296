//! Opt-out's purge of the suite's data: spool, journal, retained records, state, caches.
//!
//! Each directory is opened once (`O_NOFOLLOW | O_DIRECTORY`), its owner checked on the open
//! descriptor, and its contents removed with `*at` calls relative to descriptors, so a
//! symlink planted anywhere in the tree is removed, never followed, and a directory swapped
//! for a symlink mid-walk is not entered. The directories themselves are kept (empty) so the
//! units' `ReadWritePaths=` still find them.

use std::collections::BTreeSet;
use std::ffi::{CStr, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Deepest directory nesting removed (the suite's own trees are 2 levels deep).
const MAX_DEPTH: usize = 32;

/// Who may own a directory that is purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    /// uid/gid of the `telemetry` user and group, when they exist.
    pub telemetry: Option<(u32, u32)>,
    /// In a relocated root: the current effective uid is accepted too.
    pub current_uid: Option<u32>,
    /// In a relocated root: only directories under it are touched.
    pub confine_to: Option<PathBuf>,
}

impl Owners {
    fn accepts(&self, uid: u32, gid: u32) -> bool {
        self.telemetry == Some((uid, gid)) || self.current_uid == Some(uid)
    }
}

/// uid and gid of the user and group named `telemetry`.
pub fn telemetry_ids() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name("telemetry").ok()??;
    let group = nix::unistd::Group::from_name("telemetry").ok()??;
    Some((user.uid.as_raw(), group.gid.as_raw()))
}

/// What happened to one directory.
#[derive(Debug, PartialEq, Eq)]
pub enum PurgeOutcome {
    Purged {
        removed: u64,
    },
    Missing,
    /// Not owned by the telemetry user (or outside the relocated root): left alone.
    Skipped(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: Errno },
    #[error("{}: nested deeper than {MAX_DEPTH} levels", path.display())]
    TooDeep { path: PathBuf },
}

/// Remove the contents of every directory of `dirs`, keeping any subdirectory that is itself
/// listed (it is purged on its own turn, with its own ownership check).
pub fn purge_dirs(
    dirs: &[PathBuf],
    owners: &Owners,
) -> Vec<(PathBuf, Result<PurgeOutcome, PurgeError>)> {
    let listed: BTreeSet<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let mut seen = BTreeSet::new();
    dirs.iter()
        .filter(|d| seen.insert(d.as_path()))
        .map(|d| (d.clone(), purge_dir(d, owners, &listed)))
        .collect()
}

fn purge_dir(
    dir: &Path,
    owners: &Owners,
    listed: &BTreeSet<&Path>,
) -> Result<PurgeOutcome, PurgeError> {
    if let Some(root) = &owners.confine_to {
        match resolves_inside(dir, root) {
            Ok(true) => {}
            Ok(false) => {
                return Ok(PurgeOutcome::Skipped(format!(
                    "outside TELEMETRICS_ROOT {}",
                    root.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PurgeOutcome::Missing),
            Err(e) => {
                return Ok(PurgeOutcome::Skipped(format!(
                    "cannot resolve its location: {e}"
                )))
            }
        }
    }
    let io = |source: Errno| PurgeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut d = match Dir::open(dir, flags, Mode::empty()) {
        Ok(d) => d,
        Err(Errno::ENOENT) => return Ok(PurgeOutcome::Missing),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            return Ok(PurgeOutcome::Skipped("not a directory".into()))
        }
        Err(e) => return Err(io(e)),
    };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&d)).map_err(io)?;
    if !owners.accepts(st.st_uid, st.st_gid) {
        return Ok(PurgeOutcome::Skipped(
            "not owned by the telemetry user and group".into(),
        ));
    }
    let keep: BTreeSet<Vec<u8>> = listed
        .iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name().map(|n| n.as_bytes().to_vec()))
        .collect();
    let mut removed = 0;
    remove_contents(&mut d, dir, &keep, 0, &mut removed)?;
    Ok(PurgeOutcome::Purged { removed })
}

/// Whether `dir` lies strictly below `root` once `..` and symlinks in its parent are taken
/// into account (a lexical prefix is not enough: `<root>/../elsewhere`, or a symlink on the
/// way, leads out). The last component is checked when it is opened (`O_NOFOLLOW`).
fn resolves_inside(dir: &Path, root: &Path) -> std::io::Result<bool> {
    use std::path::Component;
    if dir.components().any(|c| c == Component::ParentDir) {
        return Ok(false);
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(false);
    };
    // A root that cannot be resolved confines nothing: an error, not a missing `dir`.
    let root = std::fs::canonicalize(root)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", root.display())))?;
    let real = std::fs::canonicalize(parent)?.join(name);
    Ok(real.starts_with(&root) && real != root)
}

/// A directory entry: its name and, when the file system reports it, its type.
type EntryName = (Vec<u8>, Option<Type>);

/// Entry names of `d`, without `.` and `..`.
fn entry_names(d: &mut Dir, path: &Path) -> Result<Vec<EntryName>, PurgeError> {
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|source| PurgeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((name.to_vec(), e.file_type()));
        }
    }
    Ok(names)
}

fn remove_contents(
    d: &mut Dir,
    path: &Path,
    keep: &BTreeSet<Vec<u8>>,
    depth: usize,
    removed: &mut u64,
) -> Result<(), PurgeError> {
    if depth > MAX_DEPTH {
        return Err(PurgeError::TooDeep {
            path: path.to_path_buf(),
        });
    }
    let fd: RawFd = std::os::fd::AsRawFd::as_raw_fd(d);
    for (name, file_type) in entry_names(d, path)? {
        if keep.contains(&name) {
            continue;
        }
        let child = path.join(OsStr::from_bytes(&name));
        let io = |source: Errno| PurgeError::Io {
            path: child.clone(),
            source,
        };
        let cname = std::ffi::CString::new(name.clone()).map_err(|_| io(Errno::EINVAL))?;
        let cname: &CStr = &cname;
        let is_dir = match file_type {
            Some(t) => t == Type::Directory,
            None => {
                let st = fstatat(Some(fd), cname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(io)?;
                st.st_mode & libc::S_IFMT == libc::S_IFDIR
            }
        };
        if is_dir {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match Dir::openat(Some(fd), cname, flags, Mode::empty()) {
                Ok(mut sub) => {
                    remove_contents(&mut sub, &child, &BTreeSet::new(), depth + 1, removed)?;
                    unlinkat(Some(fd), cname, UnlinkatFlags::RemoveDir).map_err(io)?;
                }
                // Replaced by a symlink or file since it was listed: remove that instead.
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    unlinkat(Some(fd), cname, UnlinkatFlags::NoRemoveDir).map_err(io)?
                }
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io(e)),
            }
        } else {
            match unlinkat(Some(fd), cname, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(io(e)),
            }
        }
        *removed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owners {
        Owners {
            telemetry: None,
            current_uid: Some(nix::unistd::geteuid().as_raw()),
            confine_to: None,
        }
    }

    #[test]
    fn purges_contents_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();
        let spool = t.path().join("spool");
        let log = t.path().join("log");
        let records = log.join("records");
        std::fs::create_dir_all(spool.join("quarantine/deeper")).unwrap();
        std::fs::create_dir_all(&records).unwrap();
        std::fs::write(spool.join("a"), "x").unwrap();
        std::fs::write(spool.join("quarantine/deeper/b"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, spool.join("link-to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), spool.join("link-to-file")).unwrap();
        std::fs::write(log.join("journal"), "j").unwrap();
        std::fs::write(records.join("r1"), "r").unwrap();

        let dirs = [spool.clone(), log.clone(), records.clone(), spool.clone()];
        let res = purge_dirs(&dirs, &me());
        assert_eq!(res.len(), 3, "duplicates purged once");
        for (p, r) in &res {
            assert!(matches!(r, Ok(PurgeOutcome::Purged { .. })), "{p:?}: {r:?}");
        }
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
        let log_left: Vec<_> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(log_left, ["records"], "listed subdirectory kept");
        assert_eq!(std::fs::read_dir(&records).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_to_string(outside.join("precious")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn refuses_symlinked_foreign_and_outside_dirs() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), "x").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let res = purge_dirs(std::slice::from_ref(&link), &me());
        assert!(matches!(res[0].1, Ok(PurgeOutcome::Skipped(_))));

        let nobody = Owners {
            telemetry: Some((u32::MAX - 1, u32::MAX - 1)),
            current_uid: None,
            confine_to: None,
        };
        let res = purge_dirs(std::slice::from_ref(&real), &nobody);
        assert!(matches!(res[0].1, Ok(PurgeOutcome::Skipped(_))));

        let confined = Owners {
            confine_to: Some(t.path().join("elsewhere")),
            ..me()
        };
        let res = purge_dirs(std::slice::from_ref(&real), &confined);
        assert!(matches!(res[0].1, Ok(PurgeOutcome::Skipped(_))));
        assert!(real.join("f").exists());

        let res = purge_dirs(&[t.path().join("missing")], &me());
        assert!(matches!(res[0].1, Ok(PurgeOutcome::Missing)));

        // Inside the root only by its spelling: `..`, or a symlinked parent.
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("var/up")).unwrap();
        let in_root = Owners {
            confine_to: Some(root.clone()),
            ..me()
        };
        for escaping in [root.join("var/../../real"), root.join("var/up/real")] {
            let res = purge_dirs(std::slice::from_ref(&escaping), &in_root);
            assert!(
                matches!(res[0].1, Ok(PurgeOutcome::Skipped(_))),
                "{escaping:?}: {:?}",
                res[0].1
            );
        }
        assert!(real.join("f").exists());
        std::fs::create_dir_all(root.join("var/spool")).unwrap();
        std::fs::write(root.join("var/spool/r"), "x").unwrap();
        let res = purge_dirs(&[root.join("var/spool"), root.join("var/gone")], &in_root);
        assert!(matches!(res[0].1, Ok(PurgeOutcome::Purged { removed: 1 })));
        assert!(matches!(res[1].1, Ok(PurgeOutcome::Missing)));
    }
}
