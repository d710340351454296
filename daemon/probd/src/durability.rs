//! When a record is acknowledged relative to the disk: the `durability` key of
//! `[settings]` in telemetrics.conf(5).
//!
//! * `strict`: `A` only once the record and its directory entry are durable (they survive
//!   a power loss). A batch costs one round of flushes, not one per record: all its files
//!   are written to the temporary directory, then flushed together — `fdatasync` for a
//!   lone record, one `syncfs` for two or more — then renamed into the spool, then the
//!   spool directory is fsynced once. Measured on ext4 (virtio disk, 700-byte records,
//!   median of 5): 8 records 23.9 ms with serial `fsync`s, 22.1 ms with `fdatasync`s
//!   overlapped by `sync_file_range(SYNC_FILE_RANGE_WRITE)` first (each `fdatasync` of a
//!   new file still waits for its own journal commit), 7.9 ms with `syncfs`; 64 records
//!   155 ms, 156 ms and 15 ms. `syncfs` commits the journal once for the whole batch. Its
//!   cost is that it also writes other processes' dirty data on the same filesystem; a
//!   lone record, the common case of a quiet host, is flushed with `fdatasync` alone.
//! * `batched` (the default): `A` once the record is complete under its final name, which
//!   survives any crash or kill of a process; a background `syncfs` of the spool's
//!   filesystem starts at most [`BATCHED_SYNC_INTERVAL`] after the first record left
//!   unsynced, so after a power loss only records acknowledged within that interval (plus
//!   the time of the flush itself) before the cut may be missing, or present but empty
//!   or cut short (telempostd quarantines those). A batch holding a record of severity 4
//!   (crashes and other critical records) is committed as in `strict`: those are rare and
//!   the ones most worth a flush.
//! * `none`: `A` once the record is complete under its final name, never flushed by the
//!   daemon (the C daemon's behaviour); for a spool on tmpfs, where flushes cost nothing
//!   but nothing survives a reboot anyway, or where the kernel's writeback is enough.
//!
//! In every mode a final name only ever appears by rename of a complete file, so a crash
//! of the daemon (kill -9) never leaves a partial record under a final name.
//!
//! `syncfs` is used only where the filesystem is known to implement it
//! ([`FlushStrategy::of`], decided from `statfs`'s `f_type` once per spool directory):
//! ext2/3/4, xfs, btrfs, f2fs, tmpfs and a few more. Elsewhere it may flush nothing at all:
//! Linux passes `syncfs` to a FUSE server only when the connection asks for it, which only
//! virtiofs does, so on sshfs or any other FUSE filesystem a `syncfs` returns success with
//! every record still in the server's memory; network filesystems are alike. On those
//! ([`FlushStrategy::PerFile`]) every file of a batch is flushed with its own `fdatasync`,
//! which each of them passes on, then the spool directory is fsynced — in `batched` mode
//! too, where the background flush reopens the records published since the last one by
//! name (one already gone was sent and deleted), commits wait while it runs (its directory
//! flush would otherwise also cover names published meanwhile, whose data is not flushed),
//! and a flush before a critical record's ack covers the records published unsynced before
//! it: a directory flush never makes durable a name whose data is not. (With `syncfs` a
//! record published during the background flush may still have its name committed before
//! its data, depending on the filesystem; telempostd quarantines such a file.)

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Longest time from a record's acknowledgement in `batched` mode to the start of the
/// flush that makes it durable.
pub const BATCHED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

pub use libtelemetry::config::Durability;

/// A `durability` value telemprobd cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{location}: durability={value:?} is not strict, batched or none")]
pub struct BadDurability {
    pub location: String,
    pub value: String,
}

/// The mode a configuration asks for (the default when the key is absent); a bad value is
/// an error here, though not for the probes and telempostd reading the same file.
pub fn durability_of(config: &libtelemetry::Config) -> Result<Durability, BadDurability> {
    match config.deferred_error("durability") {
        Some(e) => Err(BadDurability {
            location: e.location(),
            value: e.value.clone(),
        }),
        None => Ok(config.durability),
    }
}

/// Write every dirty page and inode of the filesystem holding `fd` (`syncfs(2)`).
pub fn sync_filesystem(fd: &File) -> io::Result<()> {
    // SAFETY: a valid open fd; syncfs takes nothing else.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How the files of a batch are made durable on the spool's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStrategy {
    /// One `syncfs` flushes a batch of several files (and their directory entries).
    SyncFs,
    /// Each file is flushed with `fdatasync`, then its directory with `fsync`: `syncfs`
    /// may not reach the storage on this filesystem.
    PerFile,
}

/// `statfs` `f_type` of filesystems whose `syncfs` writes back and commits every dirty
/// file of the filesystem.
const SYNCFS_FILESYSTEMS: &[i64] = &[
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // f2fs
    0x3153_464A, // jfs
    0x5265_4973, // reiserfs
    0x2FC1_2FC1, // zfs
    0x8584_58F6, // ramfs
    0x7461_636F, // ocfs2
    0x0100_7455, // gfs2
];

impl FlushStrategy {
    /// The strategy for a filesystem of `statfs` type `f_type`.
    pub fn for_type(f_type: i64) -> FlushStrategy {
        if SYNCFS_FILESYSTEMS.contains(&f_type) {
            FlushStrategy::SyncFs
        } else {
            FlushStrategy::PerFile
        }
    }

    /// The strategy for the filesystem holding `dir` (per file when `statfs` fails).
    pub fn of(dir: &File) -> FlushStrategy {
        match nix::sys::statfs::fstatfs(dir) {
            #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
            Ok(s) => FlushStrategy::for_type(s.filesystem_type().0 as i64),
            Err(_) => FlushStrategy::PerFile,
        }
    }
}

/// Make the data of `files`, all on the filesystem of `fs`, durable in one round:
/// `fdatasync` for a lone file, one `syncfs` for more where that works, else one
/// `fdatasync` per file.
pub fn flush_files(strategy: FlushStrategy, files: &[&File], fs: &File) -> io::Result<()> {
    match (files, strategy) {
        ([], _) => Ok(()),
        ([one], _) => one.sync_data(),
        (_, FlushStrategy::SyncFs) => sync_filesystem(fs),
        (_, FlushStrategy::PerFile) => files.iter().try_for_each(|f| f.sync_data()),
    }
}

/// The flush that makes the records published unsynced (`batched`) durable.
#[derive(Debug)]
pub struct PendingFlush {
    /// The spool directory.
    pub dir: File,
    pub strategy: FlushStrategy,
    /// The records' names in `dir` ([`FlushStrategy::PerFile`] only: `syncfs` needs none).
    pub names: Vec<String>,
}

impl PendingFlush {
    /// Flush: `syncfs`, or each record still in the spool, then the directory.
    pub fn run(&self) -> io::Result<()> {
        match self.strategy {
            FlushStrategy::SyncFs => sync_filesystem(&self.dir),
            FlushStrategy::PerFile => {
                for name in &self.names {
                    if let Some(file) = open_record(&self.dir, name)? {
                        file.sync_data()?;
                    }
                }
                self.dir.sync_all()
            }
        }
    }
}

/// Record `name` of the spool `dir`, opened to flush it; `None` when it is gone (sent).
pub fn open_record(dir: &File, name: &str) -> io::Result<Option<File>> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    match nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty()) {
        // SAFETY: openat returned a new fd that nothing else owns.
        Ok(fd) => Ok(Some(unsafe { File::from_raw_fd(fd) })),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncfs_only_where_the_filesystem_implements_it() {
        assert_eq!(FlushStrategy::for_type(0xEF53), FlushStrategy::SyncFs);
        assert_eq!(FlushStrategy::for_type(0x5846_5342), FlushStrategy::SyncFs);
        assert_eq!(FlushStrategy::for_type(0x0102_1994), FlushStrategy::SyncFs);
        // FUSE (sshfs, ...), NFS, CIFS: syncfs may not reach the storage.
        assert_eq!(FlushStrategy::for_type(0x6573_5546), FlushStrategy::PerFile);
        assert_eq!(FlushStrategy::for_type(0x6969), FlushStrategy::PerFile);
        assert_eq!(FlushStrategy::for_type(0xFF53_4D42), FlushStrategy::PerFile);
        // The test's own temp dir is on some local filesystem: its type decides.
        let d = tempfile::tempdir().unwrap();
        let dir = File::open(d.path()).unwrap();
        let f_type = nix::sys::statfs::statfs(d.path())
            .unwrap()
            .filesystem_type()
            .0;
        #[allow(clippy::unnecessary_cast)]
        let expected = FlushStrategy::for_type(f_type as i64);
        assert_eq!(FlushStrategy::of(&dir), expected);
    }

    #[test]
    fn per_file_flush_skips_records_already_gone() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Abc123.u0"), b"x\n").unwrap();
        let pending = PendingFlush {
            dir: File::open(d.path()).unwrap(),
            strategy: FlushStrategy::PerFile,
            names: vec!["Abc123.u0".into(), "Gone01.u0".into()],
        };
        pending.run().unwrap();
        let a = File::create(d.path().join("a")).unwrap();
        let b = File::create(d.path().join("b")).unwrap();
        let fs = File::open(d.path()).unwrap();
        for strategy in [FlushStrategy::SyncFs, FlushStrategy::PerFile] {
            flush_files(strategy, &[], &fs).unwrap();
            flush_files(strategy, &[&a], &fs).unwrap();
            flush_files(strategy, &[&a, &b], &fs).unwrap();
        }
    }

    #[test]
    fn values() {
        let paths = libtelemetry::Paths::new("/nonexistent", "/");
        let parse = |text: &str| {
            let c =
                libtelemetry::Config::parse(text, std::path::Path::new("/t.conf"), &paths).unwrap();
            durability_of(&c)
        };
        assert_eq!(parse("[settings]\n").unwrap(), Durability::Batched);
        assert_eq!(
            parse("[settings]\ndurability=strict\n").unwrap(),
            Durability::Strict
        );
        assert_eq!(
            parse("[settings]\ndurability=none\n").unwrap(),
            Durability::None
        );
        let e = parse("[settings]\ndurability=fsync\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/t.conf:2: durability=\"fsync\" is not strict, batched or none"
        );
    }
}
