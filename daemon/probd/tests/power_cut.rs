//! Power cuts under load, which killing processes cannot simulate: the spool lives on a
//! FUSE filesystem of this test ([`VolatileFs`]) that keeps every change in memory as
//! volatile until a flush covers it, and on a "power cut" throws away what was not covered.
//!
//! The model is a journaling filesystem's: the durable state is a snapshot, the volatile
//! state the changes after it. A file's data becomes durable when the file is fsynced
//! (`fsync`/`fdatasync`: FUSE_FSYNC); a directory's names (creates, renames, unlinks) when
//! the directory is fsynced (FUSE_FSYNCDIR). A durable name whose file's data never became
//! durable shows the data last made durable (empty if none). `syncfs` flushes nothing here,
//! as on every FUSE filesystem but virtiofs: Linux sends no FUSE_SYNCFS otherwise.
//!
//! Each cut: telemprobd runs with its spool on the mount while clients send records; at a
//! random moment the daemon is killed (-9), the volatile state is dropped, the filesystem is
//! remounted on what is left and the spool is checked against the acknowledgements:
//! strict loses no acknowledged record; batched loses only records acknowledged within the
//! sync interval before the cut; every surviving staged file parses (none is torn).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, ENOENT, ENOTDIR, ENOTEMPTY};
use libtelemetry::client::Delivery;
use libtelemetry::parse_staged;
use telemetrics_tests::{TestDaemon, TestRoot};

use crate::{is_root, start};

const ROOT_INO: u64 = 1;
/// The kernel asks again for every name and attribute: nothing it caches outlives a cut.
const TTL: Duration = Duration::ZERO;

/// One inode: its volatile and durable data (files) or names (directories).
struct Node {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    data: Vec<u8>,
    durable_data: Vec<u8>,
    names: BTreeMap<OsString, u64>,
    durable_names: BTreeMap<OsString, u64>,
}

impl Node {
    fn new(kind: FileType, perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            kind,
            perm,
            uid,
            gid,
            data: Vec::new(),
            durable_data: Vec::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
        }
    }
}

/// The filesystem's state, shared by the FUSE server and the test.
pub struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// fsync / fsyncdir requests served (the test checks flushes reach the server).
    pub fsyncs: u64,
    pub fsyncdirs: u64,
}

impl Model {
    fn new() -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, Node::new(FileType::Directory, 0o755, 0, 0));
        Model {
            nodes,
            next_ino: ROOT_INO + 1,
            fsyncs: 0,
            fsyncdirs: 0,
        }
    }

    /// The power cut: only what a flush covered is left.
    fn cut(&mut self) {
        for node in self.nodes.values_mut() {
            node.data = node.durable_data.clone();
            node.names = node.durable_names.clone();
        }
        // Inodes no durable name reaches are gone.
        let mut reachable = HashSet::from([ROOT_INO]);
        let mut todo = vec![ROOT_INO];
        while let Some(ino) = todo.pop() {
            for &child in self.nodes[&ino].names.values() {
                if reachable.insert(child) {
                    todo.push(child);
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let size = match n.kind {
            FileType::Directory => 4096,
            _ => n.data.len() as u64,
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: n.kind,
            perm: n.perm,
            nlink: if n.kind == FileType::Directory { 2 } else { 1 },
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut Node, i32> {
        match self.nodes.get_mut(&ino) {
            Some(n) if n.kind == FileType::Directory => Ok(n),
            Some(_) => Err(ENOTDIR),
            None => Err(ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, i32> {
        if self.dir(parent)?.names.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.dir(parent)?.names.insert(name.to_owned(), ino);
        Ok(self.attr(ino).expect("just added"))
    }

    /// Durable files of the root directory (the spool): name → data.
    pub fn durable_spool(&self) -> Vec<(String, Vec<u8>)> {
        self.nodes[&ROOT_INO]
            .names
            .iter()
            .filter_map(|(name, ino)| {
                let n = &self.nodes[ino];
                (n.kind == FileType::RegularFile)
                    .then(|| (name.to_string_lossy().into_owned(), n.data.clone()))
            })
            .collect()
    }
}

/// The FUSE server over a shared [`Model`].
struct VolatileFs(Arc<Mutex<Model>>);

impl Filesystem for VolatileFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut m = self.0.lock().unwrap();
        let ino = match m.dir(parent) {
            Ok(d) => d.names.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        match ino.and_then(|i| m.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.0.lock().unwrap().attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut m = self.0.lock().unwrap();
        let Some(n) = m.nodes.get_mut(&ino) else {
            return reply.error(ENOENT);
        };
        if let Some(mode) = mode {
            n.perm = (mode & 0o7777) as u16;
        }
        if let Some(size) = size {
            n.data.resize(size as usize, 0);
        }
        reply.attr(&TTL, &m.attr(ino).expect("exists"));
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let node = Node::new(
            FileType::Directory,
            (mode & !umask & 0o7777) as u16,
            req.uid(),
            req.gid(),
        );
        match self.0.lock().unwrap().add(parent, name, node) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let node = Node::new(
            FileType::RegularFile,
            (mode & !umask & 0o7777) as u16,
            req.uid(),
            req.gid(),
        );
        match self.0.lock().unwrap().add(parent, name, node) {
            Ok(a) => reply.created(&TTL, &a, 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut m = self.0.lock().unwrap();
        match m.dir(parent).map(|d| d.names.remove(name)) {
            Ok(Some(_)) => reply.ok(),
            Ok(None) => reply.error(ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut m = self.0.lock().unwrap();
        let ino = match m.dir(parent).map(|d| d.names.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(ENOENT),
            Err(e) => return reply.error(e),
        };
        match m.dir(ino) {
            Ok(d) if !d.names.is_empty() => return reply.error(ENOTEMPTY),
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        m.dir(parent).expect("checked").names.remove(name);
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return reply.error(EINVAL);
        }
        let mut m = self.0.lock().unwrap();
        let ino = match m.dir(parent).map(|d| d.names.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(ENOENT),
            Err(e) => return reply.error(e),
        };
        match m.dir(newparent) {
            Ok(d) if flags & libc::RENAME_NOREPLACE != 0 && d.names.contains_key(newname) => {
                return reply.error(EEXIST)
            }
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        m.dir(parent).expect("checked").names.remove(name);
        m.dir(newparent)
            .expect("checked")
            .names
            .insert(newname.to_owned(), ino);
        reply.ok();
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut m = self.0.lock().unwrap();
        match m.dir(newparent) {
            Ok(d) if d.names.contains_key(newname) => return reply.error(EEXIST),
            Ok(d) => {
                d.names.insert(newname.to_owned(), ino);
            }
            Err(e) => return reply.error(e),
        }
        match m.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.0.lock().unwrap().nodes.contains_key(&ino) {
            true => reply.opened(0, 0),
            false => reply.error(ENOENT),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let m = self.0.lock().unwrap();
        let Some(n) = m.nodes.get(&ino) else {
            return reply.error(ENOENT);
        };
        let start = (offset.max(0) as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut m = self.0.lock().unwrap();
        let Some(n) = m.nodes.get_mut(&ino) else {
            return reply.error(ENOENT);
        };
        let start = offset.max(0) as usize;
        if n.data.len() < start + data.len() {
            n.data.resize(start + data.len(), 0);
        }
        n.data[start..start + data.len()].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        let mut m = self.0.lock().unwrap();
        m.fsyncs += 1;
        match m.nodes.get_mut(&ino) {
            Some(n) => {
                n.durable_data = n.data.clone();
                reply.ok()
            }
            None => reply.error(ENOENT),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut m = self.0.lock().unwrap();
        let names: Vec<(OsString, u64)> = match m.dir(ino) {
            Ok(d) => d.names.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(e) => return reply.error(e),
        };
        let mut entries = vec![
            (OsString::from("."), ino, FileType::Directory),
            (OsString::from(".."), ROOT_INO, FileType::Directory),
        ];
        for (name, child) in names {
            let kind = m
                .nodes
                .get(&child)
                .map_or(FileType::RegularFile, |n| n.kind);
            entries.push((name, child, kind));
        }
        for (i, (name, child, kind)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*child, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        let mut m = self.0.lock().unwrap();
        m.fsyncdirs += 1;
        match m.dir(ino) {
            Ok(d) => {
                d.durable_names = d.names.clone();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096);
    }
}

/// The mounted [`VolatileFs`].
struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mounted {
    fn mount(model: &Arc<Mutex<Model>>, mountpoint: &Path) -> Mounted {
        let options = [
            MountOption::FSName("volatilefs".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(VolatileFs(model.clone()), mountpoint, &options)
            .expect("mount the test's FUSE filesystem");
        Mounted {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        }
    }

    /// Detach the mount (nothing of the killed daemon holds it any more) and stop serving.
    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
                .expect("no NUL in a temp path");
            // SAFETY: a valid C string; umount2 takes nothing else.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            session.join();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Can this process mount a FUSE filesystem?
fn fuse_available() -> Result<(), &'static str> {
    if !is_root() {
        return Err("not root");
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing");
    }
    Ok(())
}

/// What the cuts of one mode did to acknowledged records.
#[derive(Debug, Default)]
struct Tally {
    cuts: usize,
    acknowledged: usize,
    survived: usize,
    lost: usize,
    /// Lost records acknowledged more than the allowed window before their cut.
    lost_too_old: usize,
    /// Longest time from an ack to the cut among lost records.
    oldest_lost: Duration,
    torn: usize,
}

/// Longest time from a lost record's ack to the cut allowed in `batched`: the sync interval,
/// plus the flush itself and scheduling on a loaded machine.
const BATCHED_WINDOW: Duration = Duration::from_millis(100 + 900);

/// Run `cuts` power cuts of telemprobd with `durability` under load from `clients`.
fn power_cuts(durability: &str, cuts: usize, clients: usize, seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut root = TestRoot::new();
    let spool = root.dir().join("fuse-spool");
    std::fs::create_dir(&spool).unwrap();
    root.set("spool_dir", spool.to_str().unwrap());
    root.set("durability", durability);
    let model = Arc::new(Mutex::new(Model::new()));
    let mut mounted = Mounted::mount(&model, &spool);
    let next_id = Arc::new(AtomicU64::new(0));
    // payload → ack time, for every record acknowledged so far.
    let mut acked: HashMap<String, Instant> = HashMap::new();
    let mut tally = Tally::default();
    let tag = format!("{durability}-{seed}");
    for _ in 0..cuts {
        let mut daemon: TestDaemon = start(&root);
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..clients)
            .map(|_| {
                let (root_paths, socket) = (root.paths.clone(), root.socket_path());
                let (stop, next_id, tag) = (stop.clone(), next_id.clone(), tag.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let payload = format!("{tag}-{id}");
                        let r = new_record_in(&root_paths, &payload);
                        let sent =
                            libtelemetry::client::send_record(&root_paths, &socket, &r, None);
                        // Only an `A` counts; a failure is what a cut gives.
                        if let Ok(Delivery::Acknowledged) = sent {
                            mine.push((payload, Instant::now()));
                        }
                    }
                    mine
                })
            })
            .collect();
        // Let some records through first, then cut at a random moment.
        std::thread::sleep(Duration::from_millis(rng.u64(20..400)));
        daemon.kill9();
        let cut_at = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            for (payload, at) in s.join().unwrap() {
                acked.insert(payload, at);
            }
        }
        mounted.unmount();
        model.lock().unwrap().cut();
        tally.cuts += 1;
        // What is left, checked against every acknowledgement (this cut's and earlier).
        let mut present = HashSet::new();
        for (name, data) in model.lock().unwrap().durable_spool() {
            match parse_staged(&data) {
                Ok(s) => {
                    present.insert(String::from_utf8_lossy(s.payload()).into_owned());
                }
                Err(e) => {
                    eprintln!(
                        "{durability}: torn staged file {name} ({} bytes): {e}",
                        data.len()
                    );
                    tally.torn += 1;
                }
            }
        }
        let lost: Vec<(String, Duration)> = acked
            .iter()
            .filter(|(p, _)| !present.contains(*p))
            .map(|(p, at)| (p.clone(), cut_at.saturating_duration_since(*at)))
            .collect();
        for (payload, age) in &lost {
            tally.lost += 1;
            tally.oldest_lost = tally.oldest_lost.max(*age);
            if *age > BATCHED_WINDOW {
                tally.lost_too_old += 1;
                eprintln!("{durability}: {payload} lost, acknowledged {age:?} before the cut");
            }
            acked.remove(payload);
        }
        mounted = Mounted::mount(&model, &spool);
    }
    drop(mounted);
    tally.acknowledged = acked.len() + tally.lost;
    tally.survived = acked.len();
    let m = model.lock().unwrap();
    eprintln!(
        "power cuts, durability={durability}, seed {seed}: {tally:?}; fsync {} fsyncdir {}",
        m.fsyncs, m.fsyncdirs
    );
    tally
}

/// A record as a probe builds it with `paths`, with `payload` (for sender threads).
fn new_record_in(paths: &libtelemetry::Paths, payload: &str) -> libtelemetry::Record {
    let host = libtelemetry::HostInfo::collect(paths);
    let mut r = libtelemetry::Record::new(2, "org.test/probd/power-cut", 1, &host).expect("record");
    r.set_payload(payload.as_bytes()).expect("payload");
    r
}

fn seed() -> u64 {
    std::env::var("TELEMETRICS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// A flush on the FUSE spool reaches the server; `syncfs` does not (so the daemon must not
/// count on it there).
#[test]
fn a_flush_reaches_the_fuse_server_but_syncfs_does_not() {
    if let Err(why) = fuse_available() {
        eprintln!("skipped: cannot mount a FUSE filesystem ({why})");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let model = Arc::new(Mutex::new(Model::new()));
    let mounted = Mounted::mount(&model, d.path());
    let f = std::fs::File::create(d.path().join("a")).unwrap();
    std::io::Write::write_all(&mut &f, b"data\n").unwrap();
    // SAFETY: a valid open fd.
    let synced = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    assert_eq!(synced, 0);
    assert_eq!(model.lock().unwrap().fsyncs, 0, "syncfs reached the server");
    f.sync_data().unwrap();
    std::fs::File::open(d.path()).unwrap().sync_all().unwrap();
    let m = model.lock().unwrap();
    assert_eq!((m.fsyncs, m.fsyncdirs), (1, 1));
    drop(m);
    drop(f);
    drop(mounted);
    let mut m = model.lock().unwrap();
    m.cut();
    assert_eq!(
        m.durable_spool(),
        vec![("a".to_string(), b"data\n".to_vec())]
    );
}

/// An unflushed name or unflushed data does not survive a cut.
#[test]
fn a_cut_keeps_only_what_a_flush_covered() {
    let mut m = Model::new();
    let a = m
        .add(
            ROOT_INO,
            OsStr::new("a"),
            Node::new(FileType::RegularFile, 0o600, 0, 0),
        )
        .unwrap()
        .ino;
    m.nodes.get_mut(&a).unwrap().data = b"one\n".to_vec();
    m.nodes.get_mut(&ROOT_INO).unwrap().durable_names = m.nodes[&ROOT_INO].names.clone();
    let b = m
        .add(
            ROOT_INO,
            OsStr::new("b"),
            Node::new(FileType::RegularFile, 0o600, 0, 0),
        )
        .unwrap()
        .ino;
    m.nodes.get_mut(&b).unwrap().data = b"two\n".to_vec();
    m.nodes.get_mut(&b).unwrap().durable_data = b"two\n".to_vec();
    m.cut();
    // `a`'s name was flushed but not its data; `b`'s data but not its name.
    assert_eq!(m.durable_spool(), vec![("a".to_string(), Vec::new())]);
    assert!(!m.nodes.contains_key(&b));
}

fn check(tally: &Tally, durability: &str) {
    assert_eq!(tally.torn, 0, "{durability}: torn staged files: {tally:?}");
    match durability {
        "strict" => assert_eq!(tally.lost, 0, "strict lost acknowledged records: {tally:?}"),
        "batched" => assert_eq!(
            tally.lost_too_old, 0,
            "batched lost records acknowledged more than {BATCHED_WINDOW:?} before a cut: {tally:?}"
        ),
        _ => {}
    }
    assert!(
        tally.acknowledged > 0,
        "{durability}: nothing was acknowledged"
    );
}

fn run_modes(strict: usize, batched: usize, none: usize) {
    if let Err(why) = fuse_available() {
        eprintln!("skipped: cannot mount a FUSE filesystem ({why})");
        return;
    }
    let seed = seed();
    eprintln!("power cuts: seed {seed} (TELEMETRICS_TEST_SEED={seed} repeats it)");
    for (mode, cuts) in [("strict", strict), ("batched", batched), ("none", none)] {
        let tally = power_cuts(mode, cuts, 4, seed);
        check(&tally, mode);
    }
}

#[test]
fn power_cuts_lose_only_what_each_durability_allows() {
    run_modes(50, 25, 8);
}

#[test]
#[ignore = "long: hundreds of power cuts"]
fn power_cuts_lose_only_what_each_durability_allows_long() {
    run_modes(300, 200, 50);
}
