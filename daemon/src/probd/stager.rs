//! Staging: one task collects records, and a commit on tokio's blocking pool publishes each
//! batch (and, as the `durability` setting says, makes it durable: [`super::durability`]).
//!
//! Handlers send decoded, validated records to the stager task and wait for the [`Ack`]. The
//! task takes every request that is queued when it wakes up (at most [`MAX_BATCH`]), hands
//! the batch to the [`Committer`] on a blocking thread and awaits it. The file work, flushes
//! above all, never runs on the runtime thread: while a commit runs (for as long as a slow
//! disk takes), the listener and the handlers keep accepting, reading, validating and
//! answering rejections, and the records that arrive meanwhile form the next batch. One
//! commit runs at a time, so the batch grows with the load (group commit). Only on a medium
//! as quick as tmpfs (or with no flush to wait for) is a batch that the last commit
//! predicts to take at most 1 ms committed on the runtime thread ([`commit_inline`]: there
//! the hand-off costs more than the commit). The committer:
//!
//! 1. writes each record to a temporary file `<pid>.<n>` (mode 0600, `O_EXCL`) in the
//!    hidden subdirectory [`TEMP_DIR`] of `spool_dir` (mode 0700, created when missing,
//!    refused unless it is a real directory of the daemon's user), where a watcher of the
//!    spool does not see it;
//! 2. when the batch is to be flushed (`strict`, or `batched` with a critical record):
//!    flushes the batch's files in one round (`fdatasync` for one, `syncfs` for more where
//!    the filesystem implements it, else `fdatasync` each: [`super::durability`]);
//! 3. renames each into `spool_dir` under a fresh final name
//!    ([`libtelemetry::format_staged_name`]: 6 random `[A-Za-z0-9]` characters, as
//!    `mkstemp`, then `.u<sender uid>`), never replacing an existing file
//!    (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks it);
//! 4. when flushing, fsyncs `spool_dir` once for the whole batch; otherwise (`batched`)
//!    the stager task starts a background flush (`syncfs`, or each file and the directory) at most
//!    [`super::durability::BATCHED_SYNC_INTERVAL`] later, and again at exit;
//! 5. only then answers [`Ack::Accepted`] to every request of the batch (a waiting handler,
//!    or the client's connection itself).
//!
//! A new `spool_dir` or `durability` (SIGHUP) and a reload of the static machine id travel
//! in the same queue as the records and are applied in order: records queued before the new
//! directory are committed to the old one (and flushed there first).
//!
//! Architecture Invariant: a final name only ever appears by rename of a complete file, and
//! in `strict` mode only after the file was flushed; a record is acknowledged only after its
//! rename (and, when flushing, the directory's flush). A crash of the process leaves at most
//! temporary files, which readers never see and the next start removes. The stager ends
//! once every handle is dropped, after committing, answering and flushing everything
//! queued.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::client::{is_opted_in, Ack};
use libtelemetry::record::Header;
use libtelemetry::{
    encode_staged, format_staged_name, parse_staged_name, staged::STAGED_NAME_RANDOM_LEN, Paths,
    Record, StagedSender,
};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use tokio::sync::{mpsc, oneshot};

use super::connections::ConnPermit;
use super::durability::{
    flush_files, open_record, sync_filesystem, Durability, FlushStrategy, PendingFlush,
    BATCHED_SYNC_INTERVAL,
};

use super::handler::send_ack;
use super::machine_id::MachineId;
use super::peer::Peer;
use super::refusals::RefusalLog;

/// Most records committed together.
pub const MAX_BATCH: usize = 256;
/// Longest time per record of a medium whose commits may run on the runtime thread (see
/// [`commit_inline`]): tmpfs takes tens of µs; a disk that flushes in earnest takes more
/// (two flushes per record).
const INLINE_MAX_TIME_PER_RECORD: Duration = Duration::from_micros(100);
/// Longest commit, as predicted from the last one, that may run on the runtime thread.
const INLINE_COMMIT_BUDGET: Duration = Duration::from_millis(1);
/// Prefix of this daemon's temporary files (a dotfile: readers of the spool skip it).
pub fn temp_prefix() -> String {
    format!("{}probd.", libtelemetry::fsutil::TEMP_PREFIX)
}
/// Severity of the records `batched` flushes before their ack (crashes and the like).
const CRITICAL_SEVERITY: &str = "4";
/// Attempts to find an unused final name before giving up on a record.
const NAME_ATTEMPTS: usize = 32;

/// The daemon's record counters (reported in the status file).
#[derive(Default)]
pub struct Counters {
    staged: AtomicU64,
    rejected: AtomicU64,
    /// Log lines for refused records, bounded per interval.
    pub refusals: RefusalLog,
    /// Signalled at each count, so the status writer sleeps while nothing changes.
    pub changed: tokio::sync::Notify,
    /// Background flushes of `batched` records done.
    pub background_flushes: AtomicU64,
}

impl Counters {
    /// Count one answered record.
    pub fn count(&self, ack: Ack) {
        let c = if ack == Ack::Accepted {
            &self.staged
        } else {
            &self.rejected
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// (staged, rejected)
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.staged.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}

enum Msg {
    Stage(Box<Request>),
    SetSpoolDir(PathBuf),
    SetDurability(Durability),
    ReloadStaticMachineId,
}

struct Request {
    record: Record,
    cfg_path: Option<String>,
    /// Who sent it (the staged file's name records the uid).
    sender: Peer,
    reply: Reply,
}

/// One record's staged bytes and the sender its name records.
pub struct Item {
    pub bytes: Vec<u8>,
    pub sender: StagedSender,
}

/// Where a request's outcome goes.
enum Reply {
    /// A handler task waits for it (and answers its client).
    Waiting(oneshot::Sender<Ack>),
    /// The stager answers the client itself, then closes the connection: the whole frame
    /// and the client's end of stream had arrived, so nothing else can come on it.
    Direct(FinalConn),
}

/// A connection that carried one complete frame and then its end of stream.
pub struct FinalConn {
    pub stream: UnixStream,
    /// Returned to the listener's semaphore when the connection is closed.
    pub permit: ConnPermit,
}

impl FinalConn {
    /// Count and send `ack`; the connection closes when `self` is dropped.
    fn answer(&self, counters: &Counters, ack: Ack) {
        counters.count(ack);
        if let Err(e) = send_ack(&self.stream, ack) {
            tracing::debug!("client left before the reply ({ack:?}): {e}");
        }
    }
}

/// Cheap handle to the stager task; the task ends when every handle is dropped, after
/// committing what was queued.
#[derive(Clone)]
pub struct StagerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    counters: Arc<Counters>,
}

impl StagerHandle {
    /// Stage `record` and wait for the outcome.
    pub async fn stage(&self, record: Record, cfg_path: Option<String>, sender: Peer) -> Ack {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            record,
            cfg_path,
            sender,
            reply: Reply::Waiting(reply),
        };
        if self.tx.send(Msg::Stage(Box::new(req))).is_err() {
            return Ack::StagingFailed;
        }
        rx.await.unwrap_or(Ack::StagingFailed)
    }

    /// Stage `record` and let the stager answer on `conn` (and count the answer) once the
    /// record is durable, without a task waiting for it.
    pub fn stage_and_answer(
        &self,
        record: Record,
        cfg_path: Option<String>,
        sender: Peer,
        conn: FinalConn,
    ) {
        let req = Request {
            record,
            cfg_path,
            sender,
            reply: Reply::Direct(conn),
        };
        if let Err(mpsc::error::SendError(Msg::Stage(req))) =
            self.tx.send(Msg::Stage(Box::new(req)))
        {
            if let Reply::Direct(conn) = req.reply {
                conn.answer(&self.counters, Ack::StagingFailed);
            }
        }
    }

    /// Stage into another directory from now on (SIGHUP).
    pub fn set_spool_dir(&self, dir: PathBuf) {
        let _ = self.tx.send(Msg::SetSpoolDir(dir));
    }

    /// Acknowledge records relative to the disk as `durability` says from now on (SIGHUP).
    pub fn set_durability(&self, durability: Durability) {
        let _ = self.tx.send(Msg::SetDurability(durability));
    }

    /// Re-read the static machine id override (SIGHUP).
    pub fn reload_static_machine_id(&self) {
        let _ = self.tx.send(Msg::ReloadStaticMachineId);
    }
}

/// The stager task's state.
pub struct Stager {
    rx: mpsc::UnboundedReceiver<Msg>,
    committer: Committer,
}

/// Run on the committing thread before a batch's files are written, with the batch's
/// record count (tests make a commit slow with it, as a slow disk would).
#[cfg(test)]
#[derive(Clone)]
pub struct CommitHook(pub Arc<dyn Fn(usize) + Send + Sync>);

#[cfg(test)]
impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

impl Stager {
    /// A stager for `spool_dir`, plus its handle. Stale temporary files of dead telemprobd
    /// processes are removed first. Run it with [`Stager::run`]. Answers the stager sends
    /// itself are counted in `counters`.
    pub fn new(
        paths: Paths,
        spool_dir: PathBuf,
        durability: Durability,
        counters: Arc<Counters>,
    ) -> (Stager, StagerHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = Committer::new(paths, spool_dir, durability, counters.clone());
        (Stager { rx, committer }, StagerHandle { tx, counters })
    }

    /// Call `hook` before each commit.
    #[cfg(test)]
    pub fn with_commit_hook(mut self, hook: Option<CommitHook>) -> Stager {
        self.committer.commit_hook = hook;
        self
    }

    /// Commit batches until every handle is gone and the queue is empty.
    pub async fn run(self) {
        let Stager { mut rx, committer } = self;
        // Rotate or create the machine id at startup, as the C daemon does.
        let Some(mut committer) = off_thread(committer, |c, (now, wall)| {
            c.machine_id.current(now, wall);
        })
        .await
        else {
            return;
        };
        // `batched`: when the flush of the records published unsynced is due.
        let mut sync_due: Option<tokio::time::Instant> = None;
        let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = sleep_until_due(sync_due), if sync_due.is_some() => {
                    sync_due = None;
                    // One flush at a time; a record published during one is flushed by
                    // the next.
                    if let Some(previous) = syncing.take() {
                        let _ = previous.await;
                    }
                    if committer.spool.strategy == Some(FlushStrategy::PerFile) {
                        // The directory flush would also make durable the names of records
                        // published while it runs, whose data is not: commits wait for it.
                        match off_thread(committer, |c, _| {
                            if let Some(pending) = c.spool.take_unsynced() {
                                flush_spool(&pending);
                                c.counters.background_flushes.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .await
                        {
                            Some(c) => committer = c,
                            None => return,
                        }
                        continue;
                    }
                    if let Some(pending) = committer.spool.take_unsynced() {
                        let counters = committer.counters.clone();
                        syncing = Some(tokio::task::spawn_blocking(move || {
                            flush_spool(&pending);
                            counters.background_flushes.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                    continue;
                }
            };
            let mut records = usize::from(matches!(msg, Msg::Stage(_)));
            let mut msgs = vec![msg];
            while records < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => {
                        records += usize::from(matches!(msg, Msg::Stage(_)));
                        msgs.push(msg);
                    }
                    Err(_) => break,
                }
            }
            let others = msgs.len() - records;
            let estimate = committer.last_time_per_record[usize::from(committer.flushes(&msgs))];
            if commit_inline(estimate, records, others) {
                let now = (tokio::time::Instant::now().into_std(), SystemTime::now());
                committer.process_guarded(msgs, now);
            } else {
                match off_thread(committer, move |c, now| c.process_guarded(msgs, now)).await {
                    Some(c) => committer = c,
                    None => return,
                }
            }
            if committer.spool.unsynced && sync_due.is_none() {
                sync_due = Some(tokio::time::Instant::now() + BATCHED_SYNC_INTERVAL);
            }
        }
        // Stopping: what was acknowledged unsynced is flushed before the daemon exits.
        if let Some(previous) = syncing.take() {
            let _ = previous.await;
        }
        if let Some(pending) = committer.spool.take_unsynced() {
            let _ = tokio::task::spawn_blocking(move || flush_spool(&pending)).await;
        }
    }
}

/// Sleep until `due` (forever when `None`; the caller's guard never polls that).
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The background flush of `batched` records.
fn flush_spool(pending: &PendingFlush) {
    if let Err(e) = pending.run() {
        tracing::error!("cannot flush the spool's filesystem: {e}; records acknowledged since the last flush may not survive a power loss");
    }
}

/// Run `work` on `committer` on a blocking thread, with the runtime's clocks (tests pause
/// them), and get the committer back; `None` only when the runtime is shutting down.
async fn off_thread<F>(mut committer: Committer, work: F) -> Option<Committer>
where
    F: FnOnce(&mut Committer, (Instant, SystemTime)) + Send + 'static,
{
    let now = (tokio::time::Instant::now().into_std(), SystemTime::now());
    let done = tokio::task::spawn_blocking(move || {
        work(&mut committer, now);
        committer
    });
    match done.await {
        Ok(committer) => Some(committer),
        Err(e) => {
            tracing::error!("staging stopped: {e}");
            None
        }
    }
}

/// Everything a commit touches. It belongs to one thread at a time: the blocking thread of
/// the current commit, or the stager task between commits.
struct Committer {
    counters: Arc<Counters>,
    paths: Paths,
    spool: Spool,
    durability: Durability,
    machine_id: MachineId,
    /// How long the last commit took per record (`None` before the first), for commits
    /// without and with a flush (a `batched` spool flushes only critical records' batches:
    /// the two take very different times on a disk).
    last_time_per_record: [Option<Duration>; 2],
    #[cfg(test)]
    commit_hook: Option<CommitHook>,
}

impl Committer {
    fn new(
        paths: Paths,
        spool_dir: PathBuf,
        durability: Durability,
        counters: Arc<Counters>,
    ) -> Committer {
        let spool = Spool::new(spool_dir);
        spool.remove_stale_temps();
        Committer {
            counters,
            durability,
            machine_id: MachineId::new(paths.clone()),
            paths,
            spool,
            last_time_per_record: [None, None],
            #[cfg(test)]
            commit_hook: None,
        }
    }

    /// [`Committer::process`], surviving a panic: the requests of the batch are dropped
    /// while unwinding, so their clients see a failure (`F`, or a connection closed without
    /// an answer), never a false `A`; the spool directory is reopened for the next batch.
    fn process_guarded(&mut self, msgs: Vec<Msg>, now: (Instant, SystemTime)) {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(msgs, now)));
        if outcome.is_err() {
            tracing::error!("a commit was aborted by a panic; staging continues");
            self.spool.dirs = None;
            self.last_time_per_record = [None, None];
        }
    }

    /// Apply `msgs` in order, committing the records among them; blocking.
    fn process(&mut self, msgs: Vec<Msg>, now: (Instant, SystemTime)) {
        let mut batch = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match msg {
                Msg::Stage(req) => batch.push(*req),
                Msg::SetSpoolDir(dir) => {
                    // Records queued so far were accepted for the old directory.
                    self.commit(std::mem::take(&mut batch), now);
                    if dir != self.spool.dir_path {
                        tracing::info!("staging records in {}", dir.display());
                        if let Some(pending) = self.spool.take_unsynced() {
                            flush_spool(&pending);
                        }
                        self.spool = Spool::new(dir);
                        self.spool.remove_stale_temps();
                    }
                }
                Msg::SetDurability(d) => {
                    if d != self.durability {
                        tracing::info!("durability={}", d.as_str());
                        self.durability = d;
                    }
                }
                Msg::ReloadStaticMachineId => self.machine_id.reload_static(),
            }
        }
        self.commit(batch, now);
    }

    /// Commit `batch` and answer every request in it.
    fn commit(&mut self, mut batch: Vec<Request>, (now, wall): (Instant, SystemTime)) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let records = batch.len();
        let flush = self.batch_flushes(batch.iter().map(|r| &r.record));
        let acks = if is_opted_in(&self.paths) {
            let machine_id = self.machine_id.current(now, wall).to_string();
            for req in &mut batch {
                req.record
                    .headers
                    .set(Header::MachineId, machine_id.as_str());
            }
            let items: Vec<Item> = batch
                .iter()
                .map(|r| Item {
                    bytes: encode_staged(&r.record, r.cfg_path.as_deref()),
                    sender: StagedSender::Uid(r.sender.uid),
                })
                .collect();
            #[cfg(test)]
            if let Some(hook) = &self.commit_hook {
                (hook.0)(items.len());
            }
            // `none` leaves its records to the kernel's writeback: they are not added to
            // what the background flush covers (records acknowledged before a switch to
            // `none` still are).
            let before = (self.spool.unsynced, self.spool.unsynced_names.len());
            let acks = self.spool.commit(&items, flush, &self.counters.refusals);
            if self.durability == Durability::None {
                self.spool.unsynced = before.0 && self.spool.unsynced;
                self.spool.unsynced_names.truncate(before.1);
            }
            acks
        } else {
            self.counters.refusals.refused(
                "not opted in",
                format_args!(
                    "not opted in ({} missing): {} record(s) refused",
                    self.paths.opt_in_file().display(),
                    batch.len()
                ),
            );
            vec![Ack::NotOptedIn; batch.len()]
        };
        // Every client is answered before any connection is closed: the answers are what
        // the clients wait for.
        let mut answered = Vec::new();
        for (req, ack) in batch.into_iter().zip(acks) {
            match req.reply {
                // A handler whose client went away no longer listens; the record stays staged.
                Reply::Waiting(tx) => {
                    let _ = tx.send(ack);
                }
                Reply::Direct(conn) => {
                    conn.answer(&self.counters, ack);
                    answered.push(conn);
                }
            }
        }
        let records = u32::try_from(records).unwrap_or(u32::MAX);
        self.last_time_per_record[usize::from(flush)] = Some(started.elapsed() / records);
    }

    /// Does a batch of `records` get flushed before its ack?
    fn batch_flushes<'a>(&self, mut records: impl Iterator<Item = &'a Record>) -> bool {
        match self.durability {
            Durability::Strict => true,
            // Critical records are worth a flush before their ack.
            Durability::Batched => {
                records.any(|r| r.headers.get(Header::Severity) == CRITICAL_SEVERITY)
            }
            Durability::None => false,
        }
    }

    /// Does the batch in `msgs` get flushed?
    fn flushes(&self, msgs: &[Msg]) -> bool {
        self.batch_flushes(msgs.iter().filter_map(|m| match m {
            Msg::Stage(req) => Some(&req.record),
            _ => None,
        }))
    }
}

/// Commit a batch on the runtime thread itself rather than on the blocking thread? Only
/// records alone (no change of directory), when the last commit took at most
/// [`INLINE_MAX_TIME_PER_RECORD`] per record and so predicts at most
/// [`INLINE_COMMIT_BUDGET`] for the batch. On a medium that quick (tmpfs, a write-back
/// cache) handing the batch to another thread and back costs more than the commit
/// (measured on tmpfs: a third of a sequential client's throughput and twice the daemon's
/// CPU time per record; with 8 clients and a budget of 250 µs still a fifth of the
/// throughput). A disk that flushes in earnest is never that quick, and one that turns slow
/// holds the runtime thread for one commit, after which commits leave it again until one is
/// quick. The first commit has no prediction and goes to the blocking thread.
fn commit_inline(last_time_per_record: Option<Duration>, records: usize, others: usize) -> bool {
    let records = u32::try_from(records).unwrap_or(u32::MAX);
    others == 0
        && records > 0
        && last_time_per_record.is_some_and(|t| {
            t <= INLINE_MAX_TIME_PER_RECORD && t.saturating_mul(records) <= INLINE_COMMIT_BUDGET
        })
}

/// Name of the hidden subdirectory of the spool where records are written before they are
/// renamed into the spool. A watcher of the spool directory (inotify is not recursive) sees
/// only complete records arrive, and a C telempostd scanning the spool skips a directory.
pub const TEMP_DIR: &str = ".tmp-probd";

/// The spool directory and the file protocol. Every operation is relative to the open
/// spool directory and its temporary subdirectory, so the files written, renamed and
/// flushed stay in the same directories even if a path is replaced meanwhile.
struct Spool {
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
    fn new(dir_path: PathBuf) -> Spool {
        Spool {
            dir_path,
            dirs: None,
            temp_prefix: format!("{}.", std::process::id()),
            temp_seq: 0,
            noreplace: true,
            unsynced: false,
            unsynced_names: Vec::new(),
            strategy: None,
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
    fn commit(&mut self, items: &[Item], flush: bool, refusals: &RefusalLog) -> Vec<Ack> {
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
                drop(file);
                *step = match self.publish(tempfd, dirfd, &tmp, sender) {
                    Ok(name) => Step::Published { name },
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

    /// A handle on the spool's filesystem to flush, if records were published since the
    /// last flush (the flag is cleared: the caller flushes).
    fn take_unsynced(&mut self) -> Option<PendingFlush> {
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
    fn remove_stale_temps(&self) {
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
mod tests {
    use super::*;
    use libtelemetry::parse_staged;
    use std::os::unix::fs::PermissionsExt;

    fn record(payload: &str) -> Record {
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

    fn me() -> Peer {
        Peer {
            uid: 1000,
            gid: 1000,
            pid: 1,
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
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

    #[tokio::test]
    async fn stager_task_answers_after_commit() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path().join("root"), "/");
        std::fs::create_dir_all(paths.default_spool_dir()).unwrap();
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        std::fs::create_dir_all(paths.etc_dir()).unwrap();
        std::fs::write(paths.static_machine_id_file(), "0123456789abcdef").unwrap();
        let (stager, handle) = Stager::new(
            paths.clone(),
            paths.default_spool_dir(),
            Durability::Strict,
            Arc::new(Counters::default()),
        );
        let task = tokio::spawn(stager.run());
        assert_eq!(handle.stage(record("a"), None, me()).await, Ack::NotOptedIn);
        std::fs::write(paths.opt_in_file(), "").unwrap();
        let acks = futures_join(&handle, 20).await;
        assert!(acks.iter().all(|a| *a == Ack::Accepted));
        assert_eq!(
            handle
                .stage(record("c"), Some("/etc/t.conf".to_string()), me())
                .await,
            Ack::Accepted
        );
        drop(handle);
        task.await.unwrap();
        let files = listing(&paths.default_spool_dir());
        assert_eq!(files.len(), 21);
        let with_cfg = files
            .iter()
            .map(|f| std::fs::read(paths.default_spool_dir().join(f)).unwrap())
            .filter(|b| b.starts_with(b"CFG:/etc/t.conf\n"))
            .count();
        assert_eq!(with_cfg, 1);
        for f in files {
            let s =
                parse_staged(&std::fs::read(paths.default_spool_dir().join(f)).unwrap()).unwrap();
            assert_eq!(s.headers.get(Header::MachineId), "0123456789abcdef");
        }
    }

    /// A root with the directories the stager needs, opted in.
    fn opted_in_root(d: &Path) -> Paths {
        let paths = Paths::new(d.join("root"), "/");
        for dir in [
            paths.default_spool_dir(),
            paths.state_dir(),
            paths.etc_dir(),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(paths.opt_in_file(), "").unwrap();
        paths
    }

    #[test]
    fn only_quick_batches_on_a_quick_medium_are_committed_inline() {
        let check = |per_record_us: Option<u64>, records, others, expected| {
            let last = per_record_us.map(Duration::from_micros);
            assert_eq!(
                commit_inline(last, records, others),
                expected,
                "{per_record_us:?} {records} {others}"
            );
        };
        check(None, 1, 0, false); // the first commit: speed unknown
        check(Some(40), 1, 0, true);
        check(Some(100), 1, 0, true);
        check(Some(101), 1, 0, false); // a disk that flushes
        check(Some(2_000_000), 1, 0, false);
        check(Some(40), 25, 0, true); // 1 ms
        check(Some(40), 26, 0, false); // overlaps with reading on the other thread
        check(Some(3), MAX_BATCH, 0, true);
        check(Some(4), MAX_BATCH, 0, false);
        check(Some(u64::MAX / 1_000_000), 2, 0, false); // no overflow
        check(Some(40), 0, 1, false); // a new spool_dir: its stale temps are removed there
        check(Some(40), 1, 1, false);
    }

    #[tokio::test]
    async fn records_queued_before_a_new_spool_dir_go_to_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let paths = opted_in_root(d.path());
        let old = paths.default_spool_dir();
        let new = d.path().join("new-spool");
        std::fs::create_dir(&new).unwrap();
        let (stager, handle) = Stager::new(
            paths,
            old.clone(),
            Durability::Strict,
            Arc::new(Counters::default()),
        );
        // All three are queued before the stager looks: one batch.
        let before = tokio::spawn({
            let h = handle.clone();
            async move { h.stage(record("before"), None, me()).await }
        });
        tokio::task::yield_now().await;
        handle.set_spool_dir(new.clone());
        let after = tokio::spawn({
            let h = handle.clone();
            async move { h.stage(record("after"), None, me()).await }
        });
        tokio::task::yield_now().await;
        let task = tokio::spawn(stager.run());
        assert_eq!(before.await.unwrap(), Ack::Accepted);
        assert_eq!(after.await.unwrap(), Ack::Accepted);
        drop(handle);
        task.await.unwrap();
        let payloads = |dir: &Path| -> Vec<Vec<u8>> {
            listing(dir)
                .iter()
                .map(|f| {
                    parse_staged(&std::fs::read(dir.join(f)).unwrap())
                        .unwrap()
                        .payload()
                        .to_vec()
                })
                .collect()
        };
        assert_eq!(payloads(&old), vec![b"before".to_vec()]);
        assert_eq!(payloads(&new), vec![b"after".to_vec()]);
    }

    #[tokio::test]
    async fn a_panic_in_a_commit_fails_its_batch_and_staging_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let paths = opted_in_root(d.path());
        let (stager, handle) = Stager::new(
            paths.clone(),
            paths.default_spool_dir(),
            Durability::Strict,
            Arc::new(Counters::default()),
        );
        let first = std::sync::atomic::AtomicBool::new(true);
        let hook = CommitHook(Arc::new(move |_| {
            if first.swap(false, Ordering::SeqCst) {
                panic!("simulated bug in a commit");
            }
        }));
        let task = tokio::spawn(stager.with_commit_hook(Some(hook)).run());
        assert_eq!(
            handle.stage(record("lost"), None, me()).await,
            Ack::StagingFailed
        );
        assert_eq!(
            handle.stage(record("kept"), None, me()).await,
            Ack::Accepted
        );
        drop(handle);
        task.await.unwrap();
        let staged: Vec<String> = listing(&paths.default_spool_dir())
            .into_iter()
            .filter(|n| is_final_name(n))
            .collect();
        assert_eq!(staged.len(), 1);
    }

    /// `batched`: acknowledged before any flush, then one background flush within the
    /// interval covers the records; nothing is flushed again while nothing new comes.
    /// `strict`: never a background flush (each batch was flushed before its ack); `none`:
    /// never one either (left to the kernel's writeback).
    #[tokio::test]
    async fn batched_records_are_flushed_in_the_background_within_the_interval() {
        for (durability, expected) in [
            (Durability::Batched, 1),
            (Durability::Strict, 0),
            (Durability::None, 0),
        ] {
            let d = tempfile::tempdir().unwrap();
            let paths = opted_in_root(d.path());
            let counters = Arc::new(Counters::default());
            let (stager, handle) = Stager::new(
                paths.clone(),
                paths.default_spool_dir(),
                durability,
                counters.clone(),
            );
            let task = tokio::spawn(stager.run());
            let acks = futures_join(&handle, 5).await;
            assert!(acks.iter().all(|a| *a == Ack::Accepted));
            let flushes = || counters.background_flushes.load(Ordering::Relaxed);
            let t0 = Instant::now();
            while flushes() < expected && t0.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let done = flushes();
            assert!(done >= expected, "{durability:?}");
            // Quiet now: no further flush comes.
            tokio::time::sleep(BATCHED_SYNC_INTERVAL * 3).await;
            assert_eq!(flushes(), done, "{durability:?}");
            if expected == 0 {
                assert_eq!(done, 0);
            }
            drop(handle);
            task.await.unwrap();
            assert_eq!(listing(&paths.default_spool_dir()).len(), 5);
        }
    }

    async fn futures_join(handle: &StagerHandle, n: usize) -> Vec<Ack> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let h = handle.clone();
                tokio::spawn(async move { h.stage(record(&format!("b{i}")), None, me()).await })
            })
            .collect();
        let mut acks = Vec::new();
        for t in tasks {
            acks.push(t.await.unwrap());
        }
        acks
    }
}
