//! The staged-file protocol of telemprobd: the open spool directory and how one batch of
//! records becomes published files in it (see [`super::stager`] for when batches are
//! committed and acknowledged).
//!
//! Each record is written to a temporary file in [`TEMP_DIR`], flushed as the durability
//! strategy says ([`super::durability`]), renamed into the spool under a fresh final name
//! without ever replacing a file, and the directory is flushed; the temporary files that
//! dead processes left behind are removed when staging in a directory begins
//! (`Spool::remove_stale_temps`).
//!
//! Named `spooldir` (not `spool`) so that it is not mistaken for telempostd's spool, the
//! reader side of the same directory.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use libtelemetry::client::Ack;
use libtelemetry::{
    format_staged_name, parse_staged_name, staged::STAGED_NAME_RANDOM_LEN, StagedSender,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::durability::{flush_files, open_record, sync_filesystem, FlushStrategy, PendingFlush};
use super::refusals::RefusalLog;

/// Prefix of this daemon's temporary files (a dotfile: readers of the spool skip it).
pub fn temp_prefix() -> String {
    format!("{}probd.", libtelemetry::fsutil::TEMP_PREFIX)
}
/// Attempts to find an unused final name before giving up on a record.
const NAME_ATTEMPTS: usize = 32;

/// One record's staged bytes and the sender its name records.
pub struct Item {
    pub bytes: Vec<u8>,
    pub sender: StagedSender,
}

/// Name of the hidden subdirectory of the spool where records are written before they are
/// renamed into the spool. A watcher of the spool directory (inotify is not recursive) sees
/// only complete records arrive, and a C telempostd scanning the spool skips a directory.
pub const TEMP_DIR: &str = ".tmp-probd";

/// The spool directory and the file protocol. Every operation is relative to the open
/// spool directory and its temporary subdirectory, so the files written, renamed and
/// flushed stay in the same directories even if a path is replaced meanwhile.
pub(super) struct Spool {
    dir_path: PathBuf,
    /// The spool directory and its temporary subdirectory, opened by the first commit.
    dirs: Option<(File, File)>,
    temp_prefix: String,
    temp_seq: u64,
    /// Cleared when the filesystem refuses `RENAME_NOREPLACE`; `link` + `unlink` then.
    noreplace: bool,
    /// Records were published since the last flush (`batched`).
    unsynced: bool,
    /// Their names, when the filesystem is flushed file by file.
    unsynced_names: Vec<String>,
    /// How this directory's filesystem is flushed, decided when it is first opened.
    strategy: Option<FlushStrategy>,
    /// The files the last commit published, still open: closing them is not needed for
    /// any guarantee, so it waits until the records are answered ([`Spool::close_files`];
    /// at the latest, the next commit).
    published_files: Vec<File>,
}

/// One record's progress through a commit.
enum Step {
    Written {
        tmp: String,
        file: File,
        sender: StagedSender,
    },
    Published {
        name: String,
    },
    Failed,
}

impl Spool {
    /// The spool directory's path.
    pub(super) fn dir_path(&self) -> &Path {
        &self.dir_path
    }

    /// How the directory's filesystem is flushed, once it has been opened.
    pub(super) fn strategy(&self) -> Option<FlushStrategy> {
        self.strategy
    }

    /// Records were published since the last flush (`batched`).
    pub(super) fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// What the background flush covers now, for [`Spool::forget_unsynced_since`].
    pub(super) fn unsynced_mark(&self) -> (bool, usize) {
        (self.unsynced, self.unsynced_names.len())
    }

    /// Leave the records published since `mark` out of the background flush.
    pub(super) fn forget_unsynced_since(&mut self, mark: (bool, usize)) {
        self.unsynced = mark.0 && self.unsynced;
        self.unsynced_names.truncate(mark.1);
    }

    /// Close the directories; the next commit reopens them.
    pub(super) fn close(&mut self) {
        self.dirs = None;
    }

    pub(super) fn new(dir_path: PathBuf) -> Spool {
        Spool {
            dir_path,
            dirs: None,
            temp_prefix: format!("{}.", std::process::id()),
            temp_seq: 0,
            noreplace: true,
            unsynced: false,
            unsynced_names: Vec::new(),
            strategy: None,
            published_files: Vec::new(),
        }
    }

    /// The spool directory and its temporary subdirectory (created, mode 0700, if
    /// missing; refused unless it is a directory of this daemon's user).
    fn open_dirs(&self) -> io::Result<(File, File)> {
        let dir = open_dir(&self.dir_path)?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open_temp =
            || nix::fcntl::openat(Some(dir.as_raw_fd()), TEMP_DIR, flags, Mode::empty());
        let fd = match open_temp() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), TEMP_DIR, Mode::S_IRWXU) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open_temp()?
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot open {TEMP_DIR} (not a directory?): {e}"),
                ))
            }
        };
        // SAFETY: openat returned a new fd that nothing else owns.
        let temp = unsafe { File::from_raw_fd(fd) };
        let owner = std::os::unix::fs::MetadataExt::uid(&temp.metadata()?);
        if owner != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{TEMP_DIR} belongs to uid {owner}, not to this daemon"),
            ));
        }
        Ok((dir, temp))
    }

    /// Write, publish (and, when `flush`, make durable) each of `items`; one Ack per item.
    /// Without `flush` the published records are left for [`Spool::take_unsynced`].
    pub(super) fn commit(
        &mut self,
        items: &[Item],
        flush: bool,
        refusals: &RefusalLog,
    ) -> Vec<Ack> {
        self.published_files.clear();
        // The directories stay open between batches; any error drops them, so a replaced
        // directory is picked up by the next batch.
        let cached = self.dirs.take().map(Ok);
        let (dir, temp) = match cached.unwrap_or_else(|| self.open_dirs()) {
            Ok(d) => d,
            Err(e) => {
                refusals.refused(
                    "staging failed",
                    format_args!(
                        "cannot stage {} record(s) in {}: {e}",
                        items.len(),
                        self.dir_path.display()
                    ),
                );
                return vec![Ack::StagingFailed; items.len()];
            }
        };
        let (dirfd, tempfd) = (dir.as_raw_fd(), temp.as_raw_fd());
        let strategy = *self.strategy.get_or_insert_with(|| FlushStrategy::of(&dir));
        let mut first_error: Option<io::Error> = None;
        let mut note = |e: io::Error| {
            first_error.get_or_insert(e);
            Step::Failed
        };
        let mut steps: Vec<Step> = items
            .iter()
            .map(|item| match self.write_temp(tempfd, &item.bytes) {
                Ok((tmp, file)) => Step::Written {
                    tmp,
                    file,
                    sender: item.sender,
                },
                Err(e) => note(e),
            })
            .collect();
        if flush {
            // One round of flushes for the whole batch (see `durability`). The directory
            // flush below also makes durable the names of records published unsynced
            // before (`batched`), so their data is flushed in the same round.
            let earlier: Vec<File> = self
                .unsynced_names
                .iter()
                .filter_map(|name| open_record(&dir, name).ok().flatten())
                .collect();
            let mut written: Vec<&File> = steps
                .iter()
                .filter_map(|s| match s {
                    Step::Written { file, .. } => Some(file),
                    _ => None,
                })
                .collect();
            written.extend(earlier.iter());
            let flushed = if self.unsynced && strategy == FlushStrategy::SyncFs {
                sync_filesystem(&temp)
            } else {
                flush_files(strategy, &written, &temp)
            };
            if let Err(e) = flushed {
                for step in &mut steps {
                    if let Step::Written { tmp, .. } = step {
                        remove(tempfd, tmp);
                        *step = Step::Failed;
                    }
                }
                note(e);
            }
        }
        for step in &mut steps {
            if let Step::Written { tmp, file, sender } = std::mem::replace(step, Step::Failed) {
                *step = match self.publish(tempfd, dirfd, &tmp, sender) {
                    Ok(name) => {
                        self.published_files.push(file);
                        Step::Published { name }
                    }
                    Err(e) => {
                        remove(tempfd, &tmp);
                        note(e)
                    }
                };
            }
        }
        let published = steps.iter().any(|s| matches!(s, Step::Published { .. }));
        if published && flush {
            if let Err(e) = dir.sync_all() {
                // Durability of the renames is unknown: take the records back so that a
                // failure reply never leaves a duplicate behind.
                for step in &mut steps {
                    if let Step::Published { name } = step {
                        remove(dirfd, name);
                        *step = Step::Failed;
                    }
                }
                note(e);
            } else {
                self.unsynced = false;
                self.unsynced_names.clear();
            }
        } else if published {
            self.unsynced = true;
            if strategy == FlushStrategy::PerFile {
                for step in &steps {
                    if let Step::Published { name } = step {
                        self.unsynced_names.push(name.clone());
                    }
                }
            }
        }
        if let Some(e) = first_error {
            refusals.refused(
                "staging failed",
                format_args!(
                    "staging in {} failed for some records: {e}",
                    self.dir_path.display()
                ),
            );
        } else {
            self.dirs = Some((dir, temp));
        }
        steps
            .iter()
            .map(|s| match s {
                Step::Published { .. } => Ack::Accepted,
                _ => Ack::StagingFailed,
            })
            .collect()
    }

    /// The files of the last commit, to be closed once its records are answered.
    pub(super) fn close_files(&mut self) -> Vec<File> {
        std::mem::take(&mut self.published_files)
    }

    /// A handle on the spool's filesystem to flush, if records were published since the
    /// last flush (the flag is cleared: the caller flushes).
    pub(super) fn take_unsynced(&mut self) -> Option<PendingFlush> {
        if !std::mem::take(&mut self.unsynced) {
            return None;
        }
        let names = std::mem::take(&mut self.unsynced_names);
        let dir = match &self.dirs {
            Some((dir, _)) => dir.try_clone().ok(),
            None => open_dir(&self.dir_path).ok(),
        }?;
        let strategy = *self.strategy.get_or_insert_with(|| FlushStrategy::of(&dir));
        Some(PendingFlush {
            dir,
            strategy,
            names,
        })
    }

    /// A new temporary file in the temporary directory holding `bytes` (not flushed).
    fn write_temp(&mut self, tempfd: RawFd, bytes: &[u8]) -> io::Result<(String, File)> {
        loop {
            self.temp_seq += 1;
            let tmp = format!("{}{}", self.temp_prefix, self.temp_seq);
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let fd = match nix::fcntl::openat(
                Some(tempfd),
                tmp.as_str(),
                flags,
                Mode::S_IRUSR | Mode::S_IWUSR,
            ) {
                Ok(fd) => fd,
                // Left by an earlier process with the same pid (another boot).
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            };
            // SAFETY: `fd` was just returned by openat and is owned by nothing else.
            let mut file = unsafe { File::from_raw_fd(fd) };
            if let Err(e) = file.write_all(bytes) {
                remove(tempfd, &tmp);
                return Err(e);
            }
            return Ok((tmp, file));
        }
    }

    /// Move `tmp` to a fresh random final name in the spool without ever replacing a file.
    fn publish(
        &mut self,
        tempfd: RawFd,
        dirfd: RawFd,
        tmp: &str,
        sender: StagedSender,
    ) -> io::Result<String> {
        for _ in 0..NAME_ATTEMPTS {
            let name = format_staged_name(&random_name_part(), sender);
            let result = if self.noreplace {
                match nix::fcntl::renameat2(
                    Some(tempfd),
                    tmp,
                    Some(dirfd),
                    name.as_str(),
                    RenameFlags::RENAME_NOREPLACE,
                ) {
                    Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
                        tracing::info!("RENAME_NOREPLACE unsupported; using link + unlink");
                        self.noreplace = false;
                        link_then_unlink(tempfd, dirfd, tmp, &name)
                    }
                    r => r,
                }
            } else {
                link_then_unlink(tempfd, dirfd, tmp, &name)
            };
            match result {
                Ok(()) => return Ok(name),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free file name in spool_dir",
        ))
    }

    /// Remove temporary files left by telemprobd processes that no longer run: in the
    /// temporary directory (`<pid>.<n>`), and those of versions that wrote them in the
    /// spool itself (`.tmp-probd.<pid>.<n>`).
    pub(super) fn remove_stale_temps(&self) {
        let old_prefix = temp_prefix();
        let in_spool = std::fs::read_dir(&self.dir_path)
            .into_iter()
            .flatten()
            .flatten();
        let in_temp = std::fs::read_dir(self.dir_path.join(TEMP_DIR))
            .into_iter()
            .flatten()
            .flatten();
        let candidates = in_spool
            .filter_map(|e| {
                let pid = e
                    .file_name()
                    .to_str()?
                    .strip_prefix(&old_prefix)?
                    .to_string();
                Some((e, pid))
            })
            .chain(in_temp.filter_map(|e| {
                let pid = e.file_name().to_str()?.to_string();
                Some((e, pid))
            }));
        for (entry, rest) in candidates {
            let pid = rest.split('.').next().and_then(|p| p.parse::<i32>().ok());
            let stale = match pid {
                Some(pid) if pid as u32 == std::process::id() => true,
                Some(pid) if pid > 0 => {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                        == Err(Errno::ESRCH)
                }
                _ => false,
            };
            if stale {
                let name = entry.file_name();
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!("removed stale temporary file {:?}", name),
                    Err(e) => tracing::warn!("cannot remove {:?}: {e}", name),
                }
            }
        }
    }
}

/// What [`check_spool_dir`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum SpoolDirState {
    Usable,
    /// Missing for now: records get `F` until it is created.
    Missing,
}

/// Is `dir` a directory this daemon can stage records in? It must be a directory where a
/// file can be created (tried: a directory of `/proc` passes `access` for root but takes
/// no file). A world-writable directory is usable but warned about: any local user could
/// remove or replace staged records there.
pub fn check_spool_dir(dir: &Path) -> io::Result<SpoolDirState> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SpoolDirState::Missing),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    // An unnamed file first: it proves the directory takes files without any name
    // appearing there for a watcher of the spool (a C telempostd reads whatever is closed
    // in it). Filesystems without O_TMPFILE get a named dotfile, removed at once.
    match nix::fcntl::open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::S_IRUSR | Mode::S_IWUSR,
    ) {
        Ok(fd) => {
            // SAFETY: open returned a new fd that nothing else owns.
            drop(unsafe { File::from_raw_fd(fd) });
            return Ok(spool_dir_state(dir, &meta));
        }
        Err(Errno::EOPNOTSUPP) | Err(Errno::EISDIR) | Err(Errno::EINVAL) => {}
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create a file: {e}"),
            ))
        }
    }
    let probe = dir.join(format!("{}{}.check", temp_prefix(), std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match created {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create a file: {e}"),
            ))
        }
    }
    Ok(spool_dir_state(dir, &meta))
}

/// A usable spool directory, with a warning when every user may write to it.
fn spool_dir_state(dir: &Path, meta: &std::fs::Metadata) -> SpoolDirState {
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o002 != 0 {
        tracing::warn!(
            "spool_dir {} is writable by every user: any of them can remove or replace \
             staged records (make it 0700, owned by the daemon's user)",
            dir.display()
        );
    }
    SpoolDirState::Usable
}

fn open_dir(path: &Path) -> io::Result<File> {
    let d = File::open(path)?;
    if !d.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "spool_dir is not a directory",
        ));
    }
    Ok(d)
}

/// Best-effort removal of `name` in the directory.
fn remove(dirfd: RawFd, name: &str) {
    let _ = nix::unistd::unlinkat(Some(dirfd), name, UnlinkatFlags::NoRemoveDir);
}

/// Exclusive publication without `RENAME_NOREPLACE`: `link` fails if `name` exists.
fn link_then_unlink(tempfd: RawFd, dirfd: RawFd, tmp: &str, name: &str) -> nix::Result<()> {
    nix::unistd::linkat(Some(tempfd), tmp, Some(dirfd), name, AtFlags::empty())?;
    nix::unistd::unlinkat(Some(tempfd), tmp, UnlinkatFlags::NoRemoveDir)
}

/// 6 random `[A-Za-z0-9]` characters, the shape of `mkstemp`'s names (exclusivity comes
/// from the no-replace rename, not from the generator).
fn random_name_part() -> String {
    (0..STAGED_NAME_RANDOM_LEN)
        .map(|_| fastrand::alphanumeric())
        .collect()
}

/// Is `name` one of the final names telemprobd creates (what telempostd picks up)?
pub fn is_final_name(name: &str) -> bool {
    parse_staged_name(name).is_some()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use libtelemetry::{encode_staged, parse_staged, Record};
    use std::os::unix::fs::PermissionsExt;

    /// A small record for the probd unit tests (the stager's use it too).
    pub(crate) fn record(payload: &str) -> Record {
        let mut r = Record::new(
            2,
            "org.test/probd/unit",
            1,
            &libtelemetry::HostInfo::fixed_for_tests(),
        )
        .unwrap();
        r.set_payload(payload.as_bytes()).unwrap();
        r
    }

    fn item(bytes: Vec<u8>) -> Item {
        Item {
            bytes,
            sender: StagedSender::Uid(1000),
        }
    }

    /// The spool's visible names, sorted.
    pub(crate) fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn batch_commit_publishes_complete_files_only() {
        let d = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(d.path().to_path_buf());
        let items: Vec<Item> = (0..5)
            .map(|i| item(encode_staged(&record(&format!("p{i}")), None)))
            .collect();
        let acks = spool.commit(&items, true, &RefusalLog::default());
        assert_eq!(acks, vec![Ack::Accepted; 5]);
        let names = listing(d.path());
        assert_eq!(names.len(), 5);
        let mut contents = Vec::new();
        for n in &names {
            assert!(is_final_name(n), "{n}");
            let p = d.path().join(n);
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let bytes = std::fs::read(&p).unwrap();
            contents.push(bytes.clone());
            parse_staged(&bytes).unwrap();
        }
        contents.sort();
        let mut expected: Vec<Vec<u8>> = items.iter().map(|i| i.bytes.clone()).collect();
        expected.sort();
        assert_eq!(contents, expected);
    }

    #[test]
    fn missing_dir_fails_and_recovers() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("spool");
        let mut spool = Spool::new(dir.clone());
        let item = vec![item(encode_staged(&record("x"), None))];
        assert_eq!(
            spool.commit(&item, true, &RefusalLog::default()),
            vec![Ack::StagingFailed]
        );
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            spool.commit(&item, true, &RefusalLog::default()),
            vec![Ack::Accepted]
        );
        // The directory replaced under the daemon: the next batch reopens it.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            spool.commit(&item, true, &RefusalLog::default()),
            vec![Ack::StagingFailed]
        );
        assert_eq!(
            spool.commit(&item, true, &RefusalLog::default()),
            vec![Ack::Accepted]
        );
        assert_eq!(listing(&dir).len(), 1);
    }

    #[test]
    fn link_fallback_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(d.path().to_path_buf());
        spool.noreplace = false;
        let item = vec![item(encode_staged(&record("y"), None))];
        assert_eq!(
            spool.commit(&item, true, &RefusalLog::default()),
            vec![Ack::Accepted]
        );
        let existing = listing(d.path());
        std::fs::write(d.path().join(".t"), b"new").unwrap();
        let dir = File::open(d.path()).unwrap();
        let err =
            link_then_unlink(dir.as_raw_fd(), dir.as_raw_fd(), ".t", &existing[0]).unwrap_err();
        assert_eq!(err, Errno::EEXIST);
        assert_eq!(
            std::fs::read(d.path().join(&existing[0])).unwrap(),
            item[0].bytes,
            "existing record untouched"
        );
    }

    #[test]
    fn records_are_written_out_of_sight_and_renamed_into_the_spool() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(d.path().to_path_buf());
        let items: Vec<Item> = (0..3)
            .map(|i| item(encode_staged(&record(&format!("u{i}")), None)))
            .collect();
        // Unflushed (batched, none): published, left for the background flush.
        assert_eq!(
            spool.commit(&items, false, &RefusalLog::default()),
            vec![Ack::Accepted; 3]
        );
        assert!(spool.take_unsynced().is_some());
        assert!(spool.take_unsynced().is_none(), "flag cleared");
        assert_eq!(listing(d.path()).len(), 3);
        let temp = d.path().join(TEMP_DIR);
        let meta = std::fs::metadata(&temp).unwrap();
        assert!(meta.is_dir() && meta.mode() & 0o777 == 0o700);
        assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 0);
        // Flushed (strict): nothing left to flush.
        assert_eq!(
            spool.commit(&items, true, &RefusalLog::default()),
            vec![Ack::Accepted; 3]
        );
        assert!(spool.take_unsynced().is_none());
        assert_eq!(listing(d.path()).len(), 6);
    }

    #[test]
    fn a_temp_dir_that_is_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join(TEMP_DIR)).unwrap();
        let mut spool = Spool::new(d.path().to_path_buf());
        let one = vec![item(encode_staged(&record("s"), None))];
        assert_eq!(
            spool.commit(&one, true, &RefusalLog::default()),
            vec![Ack::StagingFailed]
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = temp_prefix();
        let dead = d.path().join(format!("{p}999999999.1"));
        let alive = d.path().join(format!("{p}1.1")); // pid 1 always runs
        let own = d.path().join(format!("{p}{}.3", std::process::id()));
        let other = d.path().join(".tmp-postd-something");
        for f in [&dead, &alive, &own, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        let temp = d.path().join(TEMP_DIR);
        std::fs::create_dir(&temp).unwrap();
        let dead_in_temp = temp.join("999999999.7");
        let alive_in_temp = temp.join("1.7");
        for f in [&dead_in_temp, &alive_in_temp] {
            std::fs::write(f, b"partial").unwrap();
        }
        Spool::new(d.path().to_path_buf()).remove_stale_temps();
        assert!(!dead.exists() && !own.exists() && !dead_in_temp.exists());
        assert!(alive.exists() && other.exists() && alive_in_temp.exists());
    }

    #[test]
    fn names_look_like_mkstemp_and_carry_the_sender() {
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|_| format_staged_name(&random_name_part(), StagedSender::Uid(1000)))
            .collect();
        assert!(names.len() > 990);
        for n in &names {
            assert_eq!(parse_staged_name(n), Some(StagedSender::Uid(1000)), "{n}");
            assert!(is_final_name(n));
        }
        assert!(!is_final_name(".tmp-probd.1.1"));
        assert!(!is_final_name("Ab3xY9.u01"));
    }
}
