//! A debuginfod client: debug files (and executables) fetched by build-id over HTTP, for
//! the modules of a crash whose debug information is not on the host.
//!
//! Off unless `debuginfod_urls` names servers in telemetrics.conf: a request tells the
//! server a build-id, which says what software runs on the host.
//!
//! A crash handler must not hang, so every fetch of one crash shares one time budget
//! (`debuginfod_timeout`, at most 5 s): each request's timeout is what is left of it, and
//! the probe stops waiting when it is spent (a fetch still running is abandoned; its
//! temporary file is removed by a later trim). Requests run on a few threads at once.
//!
//! Cache, under the state directory (owned by the user the probe runs as once it has
//! dropped root): `<hex build-id>/debuginfo` and `<hex>/executable`, each stored only once
//! complete and carrying the build-id asked for (written to a temporary file in the same
//! directory, checked, then renamed); `<hex>/<kind>.missing` records that every server
//! answered 404, so the question is not asked again for [`MISS_EXPIRY`]. A cached file is
//! used as long as it exists and its modification time is refreshed on use; after a fetch
//! stored something, files unused for `debuginfod_cache_expiry` are removed, then the
//! least recently used until the cache is within `debuginfod_cache_max_size`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use object::Object;

/// How long a "not found on any server" answer is remembered (at most the cache expiry).
pub const MISS_EXPIRY: Duration = Duration::from_secs(3600);
/// Requests in flight at once.
const WORKERS: usize = 4;
/// Largest file fetched (and never more than the cache's size cap).
const MAX_DOWNLOAD: u64 = 1 << 30;
/// Cache entries looked at by one trim.
const MAX_CACHE_ENTRIES: usize = 100_000;
/// Temporary files older than this are left-overs of an abandoned fetch.
const STALE_TEMP: Duration = Duration::from_secs(600);
/// Shortest and longest build-ids asked for, in bytes.
const BUILD_ID_LEN: std::ops::RangeInclusive<usize> = 2..=64;
/// Prefix of temporary files in the cache.
const TEMP_PREFIX: &str = ".tmp-";

/// What is asked for a build-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The separate debug file (`/buildid/<hex>/debuginfo`).
    Debuginfo,
    /// The executable or shared library itself (`/buildid/<hex>/executable`).
    Executable,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Debuginfo => "debuginfo",
            Kind::Executable => "executable",
        }
    }
}

/// Settings of a client (from telemetrics.conf).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server base URLs, asked in order.
    pub servers: Vec<String>,
    pub cache_dir: PathBuf,
    /// All fetches of one crash.
    pub budget: Duration,
    pub cache_max_bytes: u64,
    pub cache_expiry: Duration,
}

/// How the fetches of one crash went (for the probe's messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Files found in the cache.
    pub cached: usize,
    /// Files fetched and stored.
    pub fetched: usize,
    /// Not found (now or remembered).
    pub missing: usize,
    /// Fetches that failed or did not finish in time.
    pub failed: usize,
}

pub struct Client {
    settings: Settings,
    agent: ureq::Agent,
    /// The budget starts with the first fetch.
    deadline: OnceLock<Instant>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .finish()
    }
}

/// The outcome of one question.
enum Answer {
    Stored(File),
    Missing,
    Failed,
}

impl Client {
    pub fn new(settings: Settings) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout(settings.budget)
            .user_agent(&format!("crashprobe/{}", libtelemetry::VERSION))
            .build();
        Client {
            settings,
            agent,
            deadline: OnceLock::new(),
        }
    }

    fn deadline(&self) -> Instant {
        *self
            .deadline
            .get_or_init(|| Instant::now() + self.settings.budget)
    }

    /// The files for `wanted` (build-id, kind), in order: from the cache, else fetched
    /// within the budget. Every file returned carries the build-id asked for.
    pub fn fetch_all(self: &Arc<Self>, wanted: &[(Vec<u8>, Kind)]) -> (Vec<Option<File>>, Outcome) {
        let deadline = self.deadline();
        let mut out: Vec<Option<File>> = Vec::with_capacity(wanted.len());
        let mut outcome = Outcome::default();
        let mut to_fetch = Vec::new();
        for (i, (id, kind)) in wanted.iter().enumerate() {
            out.push(None);
            if !BUILD_ID_LEN.contains(&id.len()) {
                continue;
            }
            match self.cached(id, *kind) {
                Some(Answer::Stored(f)) => {
                    outcome.cached += 1;
                    out[i] = Some(f);
                }
                Some(_) => outcome.missing += 1,
                None => to_fetch.push(i),
            }
        }
        if to_fetch.is_empty() {
            return (out, outcome);
        }
        let (job_tx, job_rx) = mpsc::channel::<(usize, Vec<u8>, Kind)>();
        for &i in &to_fetch {
            let _ = job_tx.send((i, wanted[i].0.clone(), wanted[i].1));
        }
        drop(job_tx);
        let jobs = Arc::new(std::sync::Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<(usize, Answer)>();
        for _ in 0..WORKERS.min(to_fetch.len()) {
            let (client, jobs, done) = (Arc::clone(self), Arc::clone(&jobs), done_tx.clone());
            // Detached: the probe stops waiting at the deadline whatever a worker does.
            let spawned = std::thread::Builder::new()
                .name("debuginfod".into())
                .spawn(move || loop {
                    let job = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((i, id, kind)) = job else { return };
                    if done.send((i, client.fetch(&id, kind))).is_err() {
                        return;
                    }
                });
            if spawned.is_err() {
                break;
            }
        }
        drop(done_tx);
        let mut pending = to_fetch.len();
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok((i, answer)) => {
                    pending -= 1;
                    match answer {
                        Answer::Stored(f) => {
                            outcome.fetched += 1;
                            out[i] = Some(f);
                        }
                        Answer::Missing => outcome.missing += 1,
                        Answer::Failed => outcome.failed += 1,
                    }
                }
                Err(_) => break,
            }
        }
        outcome.failed += pending;
        if outcome.fetched > 0 {
            self.trim();
        }
        (out, outcome)
    }

    fn entry_dir(&self, id: &[u8]) -> PathBuf {
        self.settings.cache_dir.join(crate::image::build_id_hex(id))
    }

    /// The cache's answer, if it has one.
    fn cached(&self, id: &[u8], kind: Kind) -> Option<Answer> {
        let dir = self.entry_dir(id);
        if let Some(file) = open_cached(&dir.join(kind.as_str())) {
            if verified_file(&file, id) {
                // Refreshed so the least recently used files go first.
                let _ = file.set_modified(SystemTime::now());
                return Some(Answer::Stored(file));
            }
        }
        let miss = std::fs::metadata(dir.join(format!("{}.missing", kind.as_str()))).ok()?;
        let age = miss.modified().ok()?.elapsed().ok()?;
        (age < MISS_EXPIRY.min(self.settings.cache_expiry)).then_some(Answer::Missing)
    }

    /// Ask each server in turn until one has the file.
    fn fetch(&self, id: &[u8], kind: Kind) -> Answer {
        let hex = crate::image::build_id_hex(id);
        let mut all_missing = true;
        for server in &self.settings.servers {
            let left = self.deadline().saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Answer::Failed;
            }
            let url = format!(
                "{}/buildid/{hex}/{}",
                server.trim_end_matches('/'),
                kind.as_str()
            );
            match self.agent.get(&url).timeout(left).call() {
                Ok(resp) if resp.status() == 200 => match self.store(id, kind, resp) {
                    Some(file) => return Answer::Stored(file),
                    None => all_missing = false,
                },
                Ok(_) => all_missing = false,
                Err(ureq::Error::Status(404, _)) => {}
                Err(_) => all_missing = false,
            }
        }
        if all_missing && !self.settings.servers.is_empty() {
            let dir = self.entry_dir(id);
            if make_dir(&self.settings.cache_dir)
                .and_then(|_| make_dir(&dir))
                .is_ok()
            {
                let _ = File::create(dir.join(format!("{}.missing", kind.as_str())));
            }
            return Answer::Missing;
        }
        Answer::Failed
    }

    /// Write the body to a temporary file beside its final name, check it, rename it.
    fn store(&self, id: &[u8], kind: Kind, resp: ureq::Response) -> Option<File> {
        let limit = self.settings.cache_max_bytes.min(MAX_DOWNLOAD);
        // A compressed body's length is not the file's.
        let declared = resp
            .header("Content-Length")
            .filter(|_| resp.header("Content-Encoding").is_none())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return None;
        }
        let dir = self.entry_dir(id);
        make_dir(&self.settings.cache_dir).ok()?;
        make_dir(&dir).ok()?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .ok()?;
        let mut body = resp.into_reader().take(limit + 1);
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            if Instant::now() > self.deadline() {
                return None;
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => return None,
            };
            total += n as u64;
            if total > limit {
                return None;
            }
            tmp.write_all(&buf[..n]).ok()?;
        }
        if declared.is_some_and(|n| n != total) || !verified_file(tmp.as_file(), id) {
            return None;
        }
        let final_path = dir.join(kind.as_str());
        let file = tmp.persist(&final_path).ok()?;
        let _ = std::fs::remove_file(dir.join(format!("{}.missing", kind.as_str())));
        Some(file)
    }

    /// Remove expired and stale files, then the least recently used until within the cap.
    fn trim(&self) {
        let expiry = self.settings.cache_expiry;
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.settings.cache_dir) else {
            return;
        };
        let mut looked = 0usize;
        for dir in dirs.flatten() {
            let Ok(entries) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            let mut kept = 0usize;
            for e in entries.flatten() {
                looked += 1;
                if looked > MAX_CACHE_ENTRIES {
                    break;
                }
                let Ok(md) = e.metadata() else { continue };
                let Ok(modified) = md.modified() else {
                    continue;
                };
                let age = modified.elapsed().unwrap_or_default();
                let name = e.file_name();
                let temp = name.to_string_lossy().starts_with(TEMP_PREFIX);
                if (temp && age > STALE_TEMP) || (!temp && age > expiry) {
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                kept += 1;
                if !temp && md.is_file() && md.len() > 0 {
                    files.push((modified, md.len(), e.path()));
                }
            }
            if kept == 0 {
                let _ = std::fs::remove_dir(dir.path());
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.settings.cache_max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
                if let Some(parent) = path.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }
}

/// A directory of the cache, created for the current user only.
fn make_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o750).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn open_cached(path: &Path) -> Option<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// Is `file` an ELF file whose `NT_GNU_BUILD_ID` note is `id`?
pub fn verified_file(file: &File, id: &[u8]) -> bool {
    let Ok(md) = file.metadata() else {
        return false;
    };
    if !md.is_file() || md.len() == 0 || md.len() > MAX_DOWNLOAD {
        return false;
    }
    // SAFETY: read-only mapping of a cache file this user owns; dropped before returning.
    let Ok(map) = (unsafe { memmap2::Mmap::map(file) }) else {
        return false;
    };
    verified(&map, id)
}

/// Are `data` ELF bytes whose `NT_GNU_BUILD_ID` note is `id`?
pub fn verified(data: &[u8], id: &[u8]) -> bool {
    object::File::parse(data)
        .ok()
        .and_then(|obj| obj.build_id().ok().flatten().map(|b| b == id))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(dir: &Path, servers: Vec<String>, cap: u64) -> Arc<Client> {
        Arc::new(Client::new(Settings {
            servers,
            cache_dir: dir.to_path_buf(),
            budget: Duration::from_secs(2),
            cache_max_bytes: cap,
            cache_expiry: Duration::from_secs(3600),
        }))
    }

    #[test]
    fn unreachable_servers_fail_within_the_budget_and_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(
            dir.path(),
            vec![format!("http://127.0.0.1:{port}")],
            1 << 20,
        );
        let start = Instant::now();
        let (files, outcome) = c.fetch_all(&[(vec![1, 2, 3, 4], Kind::Debuginfo)]);
        assert!(files[0].is_none());
        assert_eq!(outcome.failed, 1);
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(!dir.path().join("01020304/debuginfo.missing").exists());
    }

    #[test]
    fn a_remembered_miss_expires() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(dir.path(), Vec::new(), 1 << 20);
        let entry = dir.path().join("0102");
        std::fs::create_dir_all(&entry).unwrap();
        let marker = entry.join("debuginfo.missing");
        std::fs::write(&marker, b"").unwrap();
        assert!(matches!(
            c.cached(&[1, 2], Kind::Debuginfo),
            Some(Answer::Missing)
        ));
        File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(SystemTime::now() - MISS_EXPIRY - Duration::from_secs(1))
            .unwrap();
        assert!(c.cached(&[1, 2], Kind::Debuginfo).is_none());
    }

    #[test]
    fn cached_files_are_checked_and_trimmed_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let c = client(dir.path(), Vec::new(), 10);
        let entry = dir.path().join("0102");
        std::fs::create_dir_all(&entry).unwrap();
        // Not an ELF file with that build-id: never handed out.
        std::fs::write(entry.join("debuginfo"), b"not an ELF file at all").unwrap();
        assert!(c.cached(&[1, 2], Kind::Debuginfo).is_none());
        std::fs::write(entry.join("executable.missing"), b"").unwrap();
        assert!(matches!(
            c.cached(&[1, 2], Kind::Executable),
            Some(Answer::Missing)
        ));
        std::fs::write(entry.join(format!("{TEMP_PREFIX}x")), b"partial").unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(entry.join(format!("{TEMP_PREFIX}x")))
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A file unused for longer than the expiry goes, whatever the cap.
        let unused = dir.path().join("0a0b");
        std::fs::create_dir_all(&unused).unwrap();
        std::fs::write(unused.join("debuginfo"), b"x").unwrap();
        File::options()
            .write(true)
            .open(unused.join("debuginfo"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        c.trim();
        assert!(!unused.exists(), "expired, and its directory with it");
        assert!(
            !entry.join(format!("{TEMP_PREFIX}x")).exists(),
            "stale temp"
        );
        assert!(!entry.join("debuginfo").exists(), "over the 10-byte cap");
        assert!(
            entry.join("executable.missing").exists(),
            "empty, within cap"
        );
    }
}
