//! Finding staged records: the inotify watch on the spool dir, scans, safe opening, and the
//! quarantine.
//!
//! * This suite's telemprobd writes a dotfile (`fsutil::TEMP_PREFIX`) and renames it into
//!   place (`IN_MOVED_TO`); the C telemprobd writes the final name in place
//!   (`IN_CLOSE_WRITE`). Both are watched; hidden names are never records.
//! * Only names [`parse_staged_name`] accepts (what a stager creates: `Ab3xY9`,
//!   `Ab3xY9.u1000`) are ever looked at, counted, moved or deleted; any other file in the
//!   spool dir is not a record and is left alone, as the C daemon did.
//! * Files are opened `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` on the open fd: only
//!   regular files owned by the daemon's uid and at most [`MAX_STAGED_SIZE`] long are read
//!   (a symlink, FIFO, foreign or oversized file with a staged name is quarantined at sight,
//!   never followed, blocked on or counted toward the quota).
//! * Quarantine: `<spool_dir>/.quarantine/`. Hidden, so scanners (and systemd's
//!   `DirectoryNotEmpty=`, which ignores hidden entries) do not see it; bounded to
//!   [`QUARANTINE_MAX_FILES`] of the files it quarantined (staged names, with a `.<n>`
//!   suffix after a collision), oldest deleted first with a log line; nothing else in it is
//!   touched.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::SystemTime;

use inotify::{EventMask, Inotify, WatchMask};
use libtelemetry::staged::{parse_staged_name, MAX_STAGED_SIZE};

pub use libtelemetry::paths::QUARANTINE_DIR;
/// Files kept in quarantine.
pub const QUARANTINE_MAX_FILES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum PickupError {
    #[error("file vanished")]
    Vanished,
    #[error("not a regular file")]
    NotRegular,
    #[error("owned by uid {0}, not by the daemon")]
    ForeignOwner(u32),
    #[error("larger than {MAX_STAGED_SIZE} bytes")]
    TooLarge,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PickupError {
    /// Errors that mean "this is not a record we may read": quarantine it.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PickupError::NotRegular | PickupError::ForeignOwner(_) | PickupError::TooLarge
        )
    }
}

/// What telempostd needs to know of a staged file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Creation time: the birth time where the filesystem records it, else the mtime; an
    /// older mtime wins (the file was aged on purpose, e.g. with `touch -d`).
    pub created: SystemTime,
    pub mtime: SystemTime,
    /// Bytes it occupies: the larger of its length and its allocated blocks.
    pub size: u64,
    pub len: u64,
}

fn open_nofollow(path: &Path) -> Result<File, PickupError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => PickupError::Vanished,
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => PickupError::NotRegular,
            _ => PickupError::Io(e),
        })
}

fn check(file: &File) -> Result<FileInfo, PickupError> {
    let md = file.metadata()?;
    if !md.file_type().is_file() {
        return Err(PickupError::NotRegular);
    }
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != euid {
        return Err(PickupError::ForeignOwner(md.uid()));
    }
    // A file with a sparse or preallocated tail could claim little length and many blocks;
    // either way it is no record.
    if md.len() > MAX_STAGED_SIZE as u64
        || md.blocks().saturating_mul(512) > 2 * MAX_STAGED_SIZE as u64
    {
        return Err(PickupError::TooLarge);
    }
    let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let created = md.created().map_or(mtime, |b| b.min(mtime));
    Ok(FileInfo {
        created,
        mtime,
        size: md.len().max(md.blocks().saturating_mul(512)),
        len: md.len(),
    })
}

/// Open and `fstat` `dir/name` without reading it.
pub fn inspect(dir: &Path, name: &str) -> Result<FileInfo, PickupError> {
    let f = open_nofollow(&dir.join(name))?;
    check(&f)
}

/// Open, check and read `dir/name` (bounded).
pub fn read(dir: &Path, name: &str) -> Result<(Vec<u8>, FileInfo), PickupError> {
    let f = open_nofollow(&dir.join(name))?;
    let info = check(&f)?;
    if info.len > MAX_STAGED_SIZE as u64 {
        return Err(PickupError::TooLarge);
    }
    let mut buf = Vec::with_capacity(info.len as usize);
    f.take(MAX_STAGED_SIZE as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_STAGED_SIZE {
        return Err(PickupError::TooLarge);
    }
    Ok((buf, info))
}

/// Whether `name` is one a stager creates (the only files telempostd touches).
pub fn is_staged_name(name: &str) -> bool {
    parse_staged_name(name).is_some()
}

/// Names in `dir` that may be records: staged names ([`is_staged_name`]), not
/// directories. Anything else is left alone.
pub fn scan(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_staged_name(&name) || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        names.push(name);
    }
    Ok(names)
}

/// Whether `name` in the quarantine is one [`quarantine`] made: a staged name, possibly
/// with the `.<n>` it adds after a collision.
fn is_quarantined_name(name: &str) -> bool {
    if is_staged_name(name) {
        return true;
    }
    name.rsplit_once('.').is_some_and(|(base, n)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && is_staged_name(base)
    })
}

/// Move `dir/name` into the quarantine. Returns the new path.
pub fn quarantine(dir: &Path, name: &OsStr) -> std::io::Result<PathBuf> {
    if !name.to_str().is_some_and(is_staged_name) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a staged file name",
        ));
    }
    let qdir = dir.join(QUARANTINE_DIR);
    match std::fs::symlink_metadata(&qdir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} is not a directory", qdir.display()),
            ))
        }
        Err(_) => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&qdir)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
        }
    }
    let mut target = qdir.join(name);
    let mut n = 1;
    while std::fs::symlink_metadata(&target).is_ok() {
        let mut alt = name.to_os_string();
        alt.push(format!(".{n}"));
        target = qdir.join(alt);
        n += 1;
    }
    std::fs::rename(dir.join(name), &target)?;
    let _ = libtelemetry::fsutil::fsync_dir(dir);
    trim_quarantine(&qdir);
    Ok(target)
}

/// Number of files in the quarantine of `spool_dir` that it quarantined.
pub fn quarantine_count(spool_dir: &Path) -> usize {
    std::fs::read_dir(spool_dir.join(QUARANTINE_DIR)).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.file_name().to_str().is_some_and(is_quarantined_name))
            .count()
    })
}

fn trim_quarantine(qdir: &Path) {
    let Ok(rd) = std::fs::read_dir(qdir) else {
        return;
    };
    // SAFETY: geteuid(2) cannot fail and has no side effects.
    let euid = unsafe { libc::geteuid() };
    let mut files: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_quarantined_name))
        .filter_map(|e| {
            // `DirEntry::metadata` does not follow symlinks: only our own regular files.
            let md = e.metadata().ok()?;
            (md.file_type().is_file() && md.uid() == euid).then_some(())?;
            let t = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((t, e.path()))
        })
        .collect();
    if files.len() <= QUARANTINE_MAX_FILES {
        return;
    }
    files.sort();
    let excess = files.len() - QUARANTINE_MAX_FILES;
    for (_, p) in files.into_iter().take(excess) {
        tracing::warn!(
            "quarantine holds more than {QUARANTINE_MAX_FILES} files; deleting the oldest, {}",
            p.display()
        );
        let _ = std::fs::remove_file(&p);
    }
}

/// What the watcher reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// A file with a staged name appeared or was closed after writing.
    File(String),
    /// Events were lost: rescan.
    Overflow,
    /// The watch is gone (spool dir removed) or reading failed.
    Lost(String),
}

/// A watch in place; [`Watcher::stop`] ends it.
pub struct Watcher {
    watches: inotify::Watches,
    wd: inotify::WatchDescriptor,
}

impl Watcher {
    /// Remove the watch: its thread reports [`WatchEvent::Lost`] and ends (the receiver
    /// tells a stopped watch from a lost one).
    pub fn stop(mut self) {
        let _ = self.watches.remove(self.wd);
    }
}

/// Watch `dir` for `IN_CLOSE_WRITE | IN_MOVED_TO` in a thread that sends every event through
/// `tx` (wrapped by `wrap`). Returns once the watch is in place.
pub fn spawn_watcher<E: Send + 'static>(
    dir: &Path,
    tx: Sender<E>,
    wrap: impl Fn(WatchEvent) -> E + Send + 'static,
) -> std::io::Result<Watcher> {
    let mut inotify = Inotify::init()?;
    let mut watches = inotify.watches();
    let wd = watches.add(dir, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO)?;
    std::thread::Builder::new()
        .name("inotify".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buf) {
                    Ok(ev) => ev,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(wrap(WatchEvent::Lost(e.to_string())));
                        return;
                    }
                };
                for ev in events {
                    let msg = if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        WatchEvent::Overflow
                    } else if ev.mask.contains(EventMask::IGNORED) {
                        WatchEvent::Lost("the spool directory was removed".into())
                    } else if ev.mask.contains(EventMask::ISDIR) {
                        continue;
                    } else if let Some(name) = ev.name {
                        match name.to_str() {
                            Some(s) if is_staged_name(s) => WatchEvent::File(s.to_string()),
                            _ => continue,
                        }
                    } else {
                        continue;
                    };
                    let lost = matches!(msg, WatchEvent::Lost(_));
                    if tx.send(wrap(msg)).is_err() || lost {
                        return;
                    }
                }
            }
        })?;
    Ok(Watcher { watches, wd })
}

/// What [`move_records`] did.
#[derive(Debug, Default)]
pub struct MoveReport {
    pub moved: usize,
    /// Records left where they were, and why (another filesystem, a name taken).
    pub left: Vec<(String, std::io::Error)>,
}

/// Move the records of `from` (the names [`scan`] returns) into `to`, keeping their names,
/// inodes and so their creation times; a name already taken in `to` is never replaced. A
/// record still being written in place keeps its inode, so its close is seen in `to`.
pub fn move_records(from: &Path, to: &Path) -> std::io::Result<MoveReport> {
    let names = scan(from)?;
    let mut report = MoveReport::default();
    for name in names {
        match rename_noreplace(&from.join(&name), &to.join(&name)) {
            Ok(()) => report.moved += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.left.push((name, e)),
        }
    }
    if report.moved > 0 {
        libtelemetry::fsutil::fsync_dir(to)?;
        libtelemetry::fsutil::fsync_dir(from)?;
    }
    Ok(report)
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // A filesystem without RENAME_NOREPLACE: check, then rename.
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_regular_files_are_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rec"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("rec"), d.path().join("link")).unwrap();
        std::fs::write(d.path().join("big"), vec![b'a'; MAX_STAGED_SIZE + 1]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join(".tmp-1"), b"x").unwrap();
        nix::unistd::mkfifo(
            &d.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let (bytes, info) = read(d.path(), "rec").unwrap();
        assert_eq!((bytes.as_slice(), info.len), (&b"x"[..], 1));
        assert!(info.size >= 1);
        assert!(matches!(
            read(d.path(), "link"),
            Err(PickupError::NotRegular)
        ));
        assert!(matches!(
            read(d.path(), "fifo"),
            Err(PickupError::NotRegular)
        ));
        assert!(matches!(read(d.path(), "gone"), Err(PickupError::Vanished)));
        assert!(matches!(read(d.path(), "big"), Err(PickupError::TooLarge)));
        assert!(matches!(
            inspect(d.path(), "big"),
            Err(PickupError::TooLarge)
        ));
        for name in ["Ab3xY9", "Zz0000.u1000", "notes.txt", "rec.u1x"] {
            std::fs::write(d.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(d.path().join("Dir000")).unwrap();
        let mut names = scan(d.path()).unwrap();
        names.sort();
        assert_eq!(
            names,
            ["Ab3xY9", "Zz0000.u1000"],
            "only staged names; anything else is left alone"
        );
    }

    #[test]
    fn quarantine_pruning_spares_what_it_did_not_quarantine() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join(QUARANTINE_DIR);
        std::fs::create_dir(&q).unwrap();
        std::fs::write(q.join("keep-me.txt"), b"x").unwrap();
        std::fs::write(q.join("Keep00.u5.bak"), b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for f in ["keep-me.txt", "Keep00.u5.bak"] {
            std::fs::File::options()
                .write(true)
                .open(q.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        for i in 0..QUARANTINE_MAX_FILES + 5 {
            let n = format!("Q{i:05}");
            std::fs::write(d.path().join(&n), b"x").unwrap();
            quarantine(d.path(), OsStr::new(&n)).unwrap();
        }
        assert_eq!(quarantine_count(d.path()), QUARANTINE_MAX_FILES);
        assert!(q.join("keep-me.txt").exists() && q.join("Keep00.u5.bak").exists());
        assert!(is_quarantined_name("Ab3xY9.u7.12") && !is_quarantined_name("Ab3xY9.x"));
    }

    #[test]
    fn an_aged_mtime_is_the_creation_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rec");
        std::fs::write(&p, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(inspect(d.path(), "rec").unwrap().created, old);
    }

    #[test]
    fn records_move_to_another_spool_dir_without_replacing_any() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        for name in ["aaaaaa", "bbbbbb", ".tmp-c", "other"] {
            std::fs::write(from.path().join(name), name).unwrap();
        }
        std::fs::create_dir(from.path().join(QUARANTINE_DIR)).unwrap();
        std::fs::write(to.path().join("bbbbbb"), b"already there").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(from.path().join("aaaaaa"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let report = move_records(from.path(), to.path()).unwrap();
        assert_eq!(report.moved, 1);
        assert_eq!(report.left.len(), 1);
        assert_eq!(report.left[0].0, "bbbbbb");
        assert_eq!(report.left[0].1.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(to.path().join("aaaaaa")).unwrap(), b"aaaaaa");
        assert_eq!(
            inspect(to.path(), "aaaaaa").unwrap().created,
            old,
            "its age moves with it"
        );
        assert_eq!(
            std::fs::read(to.path().join("bbbbbb")).unwrap(),
            b"already there"
        );
        assert_eq!(
            std::fs::read(from.path().join("bbbbbb")).unwrap(),
            b"bbbbbb"
        );
        assert!(from.path().join("other").exists(), "not a staged name");
        assert!(
            from.path().join(".tmp-c").exists(),
            "a temporary file is no record"
        );
        assert!(move_records(&from.path().join("gone"), to.path()).is_err());
    }

    #[test]
    fn quarantine_keeps_name_collisions_and_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            std::fs::write(d.path().join("bad000"), b"x").unwrap();
            quarantine(d.path(), OsStr::new("bad000")).unwrap();
        }
        let q = d.path().join(QUARANTINE_DIR);
        assert!(q.join("bad000").exists() && q.join("bad000.1").exists());
        for i in 0..QUARANTINE_MAX_FILES {
            let n = format!("f{i:05}");
            std::fs::write(d.path().join(&n), b"x").unwrap();
            quarantine(d.path(), OsStr::new(&n)).unwrap();
        }
        assert_eq!(quarantine_count(d.path()), QUARANTINE_MAX_FILES);
        assert!(
            scan(d.path()).unwrap().is_empty(),
            "the quarantine is hidden"
        );
    }
}
