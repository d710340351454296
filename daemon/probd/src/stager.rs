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
//! the hand-off costs more than the commit). On such a medium, a record that finds the
//! stager idle (nothing queued, no commit running) is committed by the caller itself
//! ([`StagerHandle::stage_now`], the listener's common case): the committer waits between
//! commits in a slot the handles share, on the runtime thread, so a sequential client pays
//! neither the hand-off to the stager task nor its wake-up. The committer (steps 1 to 4 are
//! the file protocol of [`super::spooldir`]):
//!
//! 1. writes each record to a temporary file `<pid>.<n>` (mode 0600, `O_EXCL`) in the
//!    hidden subdirectory [`super::spooldir::TEMP_DIR`] of `spool_dir` (mode 0700, created
//!    when missing, refused unless it is a real directory of the daemon's user), where a
//!    watcher of the spool does not see it;
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
//!    or the client's connection itself); the records' files are closed after the answers.
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

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::client::{is_opted_in, Ack};
use libtelemetry::record::Header;
use libtelemetry::{encode_staged, Paths, Record, StagedSender};
use tokio::sync::{mpsc, oneshot, Notify};

use super::conn::FinalConn;
use super::counters::Counters;
use super::durability::{Durability, FlushStrategy, PendingFlush, BATCHED_SYNC_INTERVAL};
use super::machine_id::MachineId;
use super::peer::Peer;
use super::spooldir::{Item, Spool};

/// Most records committed together.
pub const MAX_BATCH: usize = 256;
/// Longest time per record of a medium whose commits may run on the runtime thread (see
/// [`commit_inline`]): tmpfs takes tens of µs; a disk that flushes in earnest takes more
/// (two flushes per record).
const INLINE_MAX_TIME_PER_RECORD: Duration = Duration::from_micros(100);
/// Longest commit, as predicted from the last one, that may run on the runtime thread.
const INLINE_COMMIT_BUDGET: Duration = Duration::from_millis(1);
/// Severity of the records `batched` flushes before their ack (crashes and the like).
const CRITICAL_SEVERITY: &str = "4";

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

/// Where a request's outcome goes.
enum Reply {
    /// A handler task waits for it (and answers its client).
    Waiting(oneshot::Sender<Ack>),
    /// The stager answers the client itself, then closes the connection: the whole frame
    /// and the client's end of stream had arrived, so nothing else can come on it.
    Direct(FinalConn),
}

/// A record for the stager task: one [`StagerHandle::stage_now`] could not commit at
/// once, or one that is not to be committed in place ([`Deferred::new`]).
pub struct Deferred(Box<Request>);

impl Deferred {
    /// `record` from `sender`, to be queued with [`StagerHandle::answer_later`].
    pub fn new(record: Record, cfg_path: Option<String>, sender: Peer) -> Deferred {
        // The reply is replaced by the connection when queued.
        let (reply, _) = oneshot::channel();
        Deferred(Box::new(Request {
            record,
            cfg_path,
            sender,
            reply: Reply::Waiting(reply),
        }))
    }
}

/// The still open files of a record [`StagerHandle::stage_now`] committed: dropped (closed)
/// once the client has its answer, since the close is not needed for any guarantee.
pub struct Committed {
    _files: Vec<std::fs::File>,
}

/// Cheap handle to the stager task; the task ends when every handle is dropped, after
/// committing what was queued.
#[derive(Clone)]
pub struct StagerHandle {
    tx: mpsc::UnboundedSender<Msg>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
}

/// What the stager task shares with its handles, all on the runtime thread (the lock is
/// never contended: the blocking thread gets the committer by value).
struct Shared {
    state: Mutex<State>,
    /// Signalled when an inline commit left records to flush in the background and no
    /// flush was due yet, so the stager task arms its timer.
    sync_armed: Notify,
}

struct State {
    /// The committer while it is idle; `None` while a commit or flush has it on the
    /// blocking thread (and before the machine id was first rotated).
    committer: Option<Committer>,
    /// Messages sent to the stager task and not yet taken by it.
    queued: usize,
    /// `batched`: when the flush of the records published unsynced is due.
    sync_due: Option<tokio::time::Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// After a commit: records published unsynced get their background flush within
    /// [`BATCHED_SYNC_INTERVAL`]; true when this armed it.
    fn arm_sync(&mut self) -> bool {
        let unsynced = self
            .committer
            .as_ref()
            .is_some_and(|c| c.spool.has_unsynced());
        if unsynced && self.sync_due.is_none() {
            self.sync_due = Some(tokio::time::Instant::now() + BATCHED_SYNC_INTERVAL);
            return true;
        }
        false
    }
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
        if self.send(Msg::Stage(Box::new(req))).is_err() {
            return Ack::StagingFailed;
        }
        rx.await.unwrap_or(Ack::StagingFailed)
    }

    /// Queue `msg` for the stager task.
    fn send(&self, msg: Msg) -> Result<(), mpsc::error::SendError<Msg>> {
        self.shared.lock().queued += 1;
        self.tx.send(msg).inspect_err(|_| {
            self.shared.lock().queued -= 1;
        })
    }

    /// Stage `record` here and now, on the calling thread, when the stager is idle and its
    /// medium quick ([`commit_inline`]): the outcome, or the record back when it has to
    /// wait for the stager task ([`StagerHandle::answer_later`]).
    pub fn stage_now(
        &self,
        record: Record,
        cfg_path: Option<String>,
        sender: Peer,
    ) -> Result<(Ack, Committed), Deferred> {
        let (reply, mut rx) = oneshot::channel();
        let req = Box::new(Request {
            record,
            cfg_path,
            sender,
            reply: Reply::Waiting(reply),
        });
        match self.commit_now(req) {
            // A panic in the commit dropped the reply: a failure, never a false `A`.
            Ok(committed) => Ok((rx.try_recv().unwrap_or(Ack::StagingFailed), committed)),
            Err(req) => Err(Deferred(req)),
        }
    }

    /// Queue a record [`StagerHandle::stage_now`] gave back; the stager answers on `conn`
    /// (and counts the answer) once the record is durable, then closes it, without a task
    /// waiting for it.
    pub fn answer_later(&self, deferred: Deferred, conn: FinalConn) {
        let mut req = deferred.0;
        req.reply = Reply::Direct(conn);
        self.queue_direct(req);
    }

    /// Queue `req` (its reply a connection); answered `F` at once when the stager is gone.
    fn queue_direct(&self, req: Box<Request>) {
        if let Err(mpsc::error::SendError(Msg::Stage(req))) = self.send(Msg::Stage(req)) {
            if let Reply::Direct(conn) = req.reply {
                conn.answer(&self.counters, Ack::StagingFailed);
            }
        }
    }

    /// Commit `req` here and now, as the stager task would on the runtime thread, when
    /// nothing is queued before it, no commit runs and the last commit predicts a quick
    /// one. This saves a sequential client the hand-off to the stager task and the wait
    /// for it on every record. Gives `req` back otherwise.
    fn commit_now(&self, req: Box<Request>) -> Result<Committed, Box<Request>> {
        let mut state = self.shared.lock();
        if state.queued != 0 {
            return Err(req);
        }
        let Some(committer) = state.committer.as_mut() else {
            return Err(req);
        };
        let estimate = committer.last_time_per_record
            [usize::from(committer.batch_flushes(std::iter::once(&req.record)))];
        if !commit_inline(estimate, 1, 0) {
            return Err(req);
        }
        let now = (tokio::time::Instant::now().into_std(), SystemTime::now());
        committer.process_guarded(vec![Msg::Stage(req)], now);
        let files = committer.spool.close_files();
        if state.arm_sync() {
            self.shared.sync_armed.notify_one();
        }
        Ok(Committed { _files: files })
    }

    /// Stage into another directory from now on (SIGHUP).
    pub fn set_spool_dir(&self, dir: PathBuf) {
        let _ = self.send(Msg::SetSpoolDir(dir));
    }

    /// Acknowledge records relative to the disk as `durability` says from now on (SIGHUP).
    pub fn set_durability(&self, durability: Durability) {
        let _ = self.send(Msg::SetDurability(durability));
    }

    /// Re-read the static machine id override (SIGHUP).
    pub fn reload_static_machine_id(&self) {
        let _ = self.send(Msg::ReloadStaticMachineId);
    }
}

/// The stager task's state.
pub struct Stager {
    rx: mpsc::UnboundedReceiver<Msg>,
    committer: Committer,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                committer: None,
                queued: 0,
                sync_due: None,
            }),
            sync_armed: Notify::new(),
        });
        (
            Stager {
                rx,
                committer,
                shared: shared.clone(),
            },
            StagerHandle {
                tx,
                counters,
                shared,
            },
        )
    }

    /// Call `hook` before each commit.
    #[cfg(test)]
    pub fn with_commit_hook(mut self, hook: Option<CommitHook>) -> Stager {
        self.committer.commit_hook = hook;
        self
    }

    /// Commit batches until every handle is gone and the queue is empty.
    pub async fn run(self) {
        let Stager {
            mut rx,
            committer,
            shared,
        } = self;
        // Rotate or create the machine id at startup, as the C daemon does.
        let Some(committer) = off_thread(committer, |c, (now, wall)| {
            c.machine_id.current(now, wall);
        })
        .await
        else {
            return;
        };
        shared.lock().committer = Some(committer);
        let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let sync_due = shared.lock().sync_due;
            let msg = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                // An inline commit armed the flush: sleep until it is due.
                _ = shared.sync_armed.notified() => continue,
                _ = sleep_until_due(sync_due), if sync_due.is_some() => {
                    shared.lock().sync_due = None;
                    // One flush at a time; a record published during one is flushed by
                    // the next.
                    if let Some(previous) = syncing.take() {
                        let _ = previous.await;
                    }
                    // `PerFile`: the directory flush would also make durable the names of
                    // records published while it runs, whose data is not: the flush takes
                    // the committer, so commits wait for it. Otherwise (`syncfs`) commits
                    // go on while it runs.
                    let per_file = {
                        let mut state = shared.lock();
                        match state.committer.as_mut() {
                            None => continue,
                            Some(c) if c.spool.strategy() == Some(FlushStrategy::PerFile) => {
                                state.committer.take()
                            }
                            Some(c) => {
                                if let Some(pending) = c.spool.take_unsynced() {
                                    let counters = c.counters.clone();
                                    syncing = Some(tokio::task::spawn_blocking(move || {
                                        flush_spool(&pending);
                                        counters.background_flushes.fetch_add(1, Ordering::Relaxed);
                                    }));
                                }
                                None
                            }
                        }
                    };
                    if let Some(committer) = per_file {
                        match off_thread(committer, |c, _| {
                            if let Some(pending) = c.spool.take_unsynced() {
                                flush_spool(&pending);
                                c.counters.background_flushes.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                        .await
                        {
                            Some(c) => shared.lock().committer = Some(c),
                            None => return,
                        }
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
            let committer = {
                let mut state = shared.lock();
                state.queued = state.queued.saturating_sub(msgs.len());
                state.committer.take()
            };
            // Only the stager task takes the committer away, and it always puts it back.
            let Some(mut committer) = committer else {
                tracing::error!("staging stopped: the committer is gone");
                return;
            };
            let others = msgs.len() - records;
            let estimate = committer.last_time_per_record[usize::from(committer.flushes(&msgs))];
            if commit_inline(estimate, records, others) {
                let now = (tokio::time::Instant::now().into_std(), SystemTime::now());
                committer.process_guarded(msgs, now);
                drop(committer.spool.close_files());
            } else {
                // Handles queue their records meanwhile (no committer to commit inline).
                let work = move |c: &mut Committer, now| {
                    c.process_guarded(msgs, now);
                    drop(c.spool.close_files());
                };
                match off_thread(committer, work).await {
                    Some(c) => committer = c,
                    None => return,
                }
            }
            let mut state = shared.lock();
            state.committer = Some(committer);
            state.arm_sync();
        }
        // Stopping: what was acknowledged unsynced is flushed before the daemon exits.
        if let Some(previous) = syncing.take() {
            let _ = previous.await;
        }
        let pending = shared
            .lock()
            .committer
            .as_mut()
            .and_then(|c| c.spool.take_unsynced());
        if let Some(pending) = pending {
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
            self.spool.close();
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
                    if dir != self.spool.dir_path() {
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
            let before = self.spool.unsynced_mark();
            let acks = self.spool.commit(&items, flush, &self.counters.refusals);
            if self.durability == Durability::None {
                self.spool.forget_unsynced_since(before);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spooldir::is_final_name;
    use crate::spooldir::tests::{listing, record};
    use libtelemetry::parse_staged;
    use std::path::Path;

    fn me() -> Peer {
        Peer {
            uid: 1000,
            gid: 1000,
            pid: 1,
        }
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

    /// A stager (not yet running) staging into an opted-in temp root's default spool dir,
    /// with its root, counters and handle.
    struct TestStager {
        dir: tempfile::TempDir,
        paths: Paths,
        counters: Arc<Counters>,
        stager: Stager,
        handle: StagerHandle,
    }

    fn test_stager(durability: Durability) -> TestStager {
        let dir = tempfile::tempdir().unwrap();
        let paths = opted_in_root(dir.path());
        let counters = Arc::new(Counters::default());
        let (stager, handle) = Stager::new(
            paths.clone(),
            paths.default_spool_dir(),
            durability,
            counters.clone(),
        );
        TestStager {
            dir,
            paths,
            counters,
            stager,
            handle,
        }
    }

    /// A running stager (in an opted-in temp root) whose first commit panics.
    fn stager_whose_first_commit_panics(
        durability: Durability,
    ) -> (
        tempfile::TempDir,
        Paths,
        StagerHandle,
        tokio::task::JoinHandle<()>,
    ) {
        let TestStager {
            dir,
            paths,
            stager,
            handle,
            ..
        } = test_stager(durability);
        let first = std::sync::atomic::AtomicBool::new(true);
        let hook = CommitHook(Arc::new(move |_| {
            if first.swap(false, Ordering::SeqCst) {
                panic!("simulated bug in a commit");
            }
        }));
        let task = tokio::spawn(stager.with_commit_hook(Some(hook)).run());
        (dir, paths, handle, task)
    }

    #[tokio::test]
    async fn a_panic_in_a_commit_fails_its_batch_and_staging_goes_on() {
        let (_dir, paths, handle, task) = stager_whose_first_commit_panics(Durability::Strict);
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
            let TestStager {
                dir: _dir,
                paths,
                counters,
                stager,
                handle,
            } = test_stager(durability);
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

    /// Make the committer predict commits of `per_record` (the medium's speed is measured
    /// by the commits themselves, which a loaded machine makes vary).
    fn predict(handle: &StagerHandle, per_record: Option<Duration>) {
        let mut state = handle.shared.lock();
        let committer = state.committer.as_mut().expect("the committer is idle");
        committer.last_time_per_record = [per_record, per_record];
    }

    /// Wait until the stager task has rotated the machine id and the committer is idle.
    async fn until_idle(handle: &StagerHandle) {
        let t0 = Instant::now();
        while handle.shared.lock().committer.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the stager never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A record that finds the stager idle on a quick medium is committed by the caller and
    /// arms the background flush of `batched`; one that would have to wait (medium unknown
    /// or slow, something queued before it) is given back for the stager task.
    #[tokio::test]
    async fn an_idle_stager_commits_in_place_only_on_a_quick_medium() {
        let TestStager {
            dir: _dir,
            paths,
            counters,
            stager,
            handle,
        } = test_stager(Durability::Batched);
        let task = tokio::spawn(stager.run());
        until_idle(&handle).await;
        let payloads = || -> Vec<Vec<u8>> {
            let dir = paths.default_spool_dir();
            let mut p: Vec<Vec<u8>> = listing(&dir)
                .iter()
                .filter(|n| is_final_name(n))
                .map(|f| {
                    parse_staged(&std::fs::read(dir.join(f)).unwrap())
                        .unwrap()
                        .payload()
                        .to_vec()
                })
                .collect();
            p.sort();
            p
        };
        for (prediction, queued) in [
            (None, 0),
            (Some(Duration::from_millis(5)), 0),
            (Some(Duration::from_micros(10)), 1),
        ] {
            predict(&handle, prediction);
            handle.shared.lock().queued = queued;
            assert!(
                handle.stage_now(record("later"), None, me()).is_err(),
                "{prediction:?} {queued}"
            );
            handle.shared.lock().queued = 0;
        }
        assert!(payloads().is_empty());
        predict(&handle, Some(Duration::from_micros(10)));
        let (ack, committed) = handle
            .stage_now(record("now"), None, me())
            .unwrap_or_else(|_| panic!("not committed in place"));
        assert_eq!(ack, Ack::Accepted);
        drop(committed);
        assert_eq!(payloads(), vec![b"now".to_vec()]);
        // The background flush comes within the interval, armed by the inline commit.
        let t0 = Instant::now();
        while counters.background_flushes.load(Ordering::Relaxed) == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no background flush"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(handle);
        task.await.unwrap();
    }

    /// A panic in a commit made in place fails its record (`F`, never `A`); the next one is
    /// staged.
    #[tokio::test]
    async fn a_panic_in_a_commit_in_place_fails_only_its_record() {
        let (_dir, paths, handle, task) = stager_whose_first_commit_panics(Durability::Batched);
        until_idle(&handle).await;
        for expected in [Ack::StagingFailed, Ack::Accepted] {
            predict(&handle, Some(Duration::from_micros(10)));
            match handle.stage_now(record("x"), None, me()) {
                Ok((ack, _)) => assert_eq!(ack, expected),
                Err(_) => panic!("not committed in place"),
            }
        }
        drop(handle);
        task.await.unwrap();
        let staged = listing(&paths.default_spool_dir())
            .into_iter()
            .filter(|n| is_final_name(n))
            .count();
        assert_eq!(staged, 1);
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
