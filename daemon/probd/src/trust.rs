//! What a sender may make the daemons read: the `CFG:` path of a frame.
//!
//! A probe may name its own configuration file (`tm_set_config_file`), and telempostd
//! delivers that record with the settings found there. The path comes from the sender, so
//! it must never let the sender read, or make the daemons open, a file it could not open
//! itself (a FIFO that blocks, `/dev/zero`, a file only the daemon's user can read, a
//! symlink swapped under the daemon). telemprobd stages a `CFG:` path only when, for the
//! sender's uid and primary gid as `SO_PEERCRED` reported them:
//!
//! * the path is absolute, without `.` or `..` components;
//! * every directory above the file is searchable by the sender per its mode bits;
//! * the file itself, seen with `lstat` (a symlink as the last component is refused), is a
//!   regular file owned by root or by the sender;
//! * the sender may read it per its mode bits: the owner bits if the sender owns it, the
//!   group bits if its group is the sender's primary gid, the other bits otherwise. Root
//!   may name any regular file owned by root.
//!
//! Supplementary groups are not known from `SO_PEERCRED`: a file readable only through one
//! is refused (the conservative side). The checks run with the daemon's own access; in
//! production it runs as the `telemetry` user, and a path it cannot even look at (in a
//! private directory) is refused as well. A FUSE filesystem mounted by an unprivileged
//! user refuses other users' lookups in the kernel (unless `allow_other`, which only root
//! can allow), so a sender cannot make these checks wait on its own filesystem.
//! telempostd repeats its own checks when it opens the file (the file may change between
//! staging and delivery).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::peer::Peer;

/// Why a `CFG:` path was refused.
#[derive(Debug, thiserror::Error)]
pub enum CfgRefusal {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("has a . or .. component")]
    DotComponent,
    #[error("cannot look at {path}: {source}")]
    Unseen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("the sender may not search {0}")]
    NotSearchable(PathBuf),
    #[error("is a symbolic link")]
    Symlink,
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is owned by uid {0}, neither root nor the sender")]
    Owner(u32),
    #[error("the sender may not read it (mode {0:o})")]
    NotReadable(u32),
}

/// Read (4) or search (1) permission of `peer` on a file of `mode`, `uid`, `gid`, per the
/// mode bits only (root passes).
pub fn permits(peer: &Peer, mode: u32, uid: u32, gid: u32, bit: u32) -> bool {
    if peer.is_root() {
        return true;
    }
    let shift = if uid == peer.uid {
        6
    } else if gid == peer.gid {
        3
    } else {
        0
    };
    (mode >> shift) & bit != 0
}

/// May `peer` name `path` as its configuration file? See the module documentation.
pub fn check_cfg_path(path: &str, peer: &Peer) -> Result<(), CfgRefusal> {
    if !path.starts_with('/') {
        return Err(CfgRefusal::NotAbsolute);
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(CfgRefusal::DotComponent);
    }
    let file = Path::new(path);
    let unseen = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CfgRefusal::Unseen { path, source }
    };
    // The directories above, top down: the sender must be able to reach the file.
    let ancestors: Vec<&Path> = file.ancestors().skip(1).collect();
    for dir in ancestors.into_iter().rev() {
        let meta = std::fs::metadata(dir).map_err(unseen(dir))?;
        if !meta.is_dir() {
            return Err(CfgRefusal::NotADirectory(dir.to_path_buf()));
        }
        if !permits(peer, meta.mode(), meta.uid(), meta.gid(), 0o1) {
            return Err(CfgRefusal::NotSearchable(dir.to_path_buf()));
        }
    }
    let meta = std::fs::symlink_metadata(file).map_err(unseen(file))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(CfgRefusal::Symlink);
    }
    if !kind.is_file() {
        return Err(CfgRefusal::NotRegular(if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        }));
    }
    if meta.uid() != 0 && meta.uid() != peer.uid {
        return Err(CfgRefusal::Owner(meta.uid()));
    }
    if !permits(peer, meta.mode(), meta.uid(), meta.gid(), 0o4) {
        return Err(CfgRefusal::NotReadable(meta.mode() & 0o7777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gid: u32) -> Peer {
        Peer { uid, gid, pid: 1 }
    }

    #[test]
    fn mode_bits_of_the_matching_class_decide() {
        let u = user(1000, 100);
        // Owner bits for the owner, even when other bits would allow more.
        assert!(permits(&u, 0o400, 1000, 0, 4));
        assert!(!permits(&u, 0o044, 1000, 100, 4));
        // Group bits for the primary group.
        assert!(permits(&u, 0o040, 0, 100, 4));
        assert!(!permits(&u, 0o404, 0, 100, 4));
        // Other bits for anyone else.
        assert!(permits(&u, 0o004, 0, 0, 4));
        assert!(!permits(&u, 0o440, 0, 0, 4));
        assert!(permits(&u, 0o001, 0, 0, 1));
        assert!(permits(&user(0, 0), 0o000, 5, 5, 4));
    }

    #[test]
    fn paths_are_checked_for_shape_and_kind() {
        let root = user(0, 0);
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("t.conf");
        std::fs::write(&file, "[settings]\n").unwrap();
        let link = d.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let p = |p: &Path| p.to_str().unwrap().to_string();
        assert!(check_cfg_path(&p(&file), &root).is_ok());
        assert!(matches!(
            check_cfg_path(&p(&link), &root),
            Err(CfgRefusal::Symlink)
        ));
        assert!(matches!(
            check_cfg_path("/dev/zero", &root),
            Err(CfgRefusal::NotRegular("character device"))
        ));
        assert!(matches!(
            check_cfg_path(&p(d.path()), &root),
            Err(CfgRefusal::NotRegular("directory"))
        ));
        assert!(matches!(
            check_cfg_path("relative.conf", &root),
            Err(CfgRefusal::NotAbsolute)
        ));
        let dotted = format!("{}/../t.conf", p(d.path()));
        assert!(matches!(
            check_cfg_path(&dotted, &root),
            Err(CfgRefusal::DotComponent)
        ));
        assert!(matches!(
            check_cfg_path(&format!("{}/missing", p(d.path())), &root),
            Err(CfgRefusal::Unseen { .. })
        ));
        assert!(matches!(
            check_cfg_path(&format!("{}/x", p(&file)), &root),
            Err(CfgRefusal::NotADirectory(_))
        ));
    }
}
