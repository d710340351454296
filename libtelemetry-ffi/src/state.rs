//! Process-wide state of the C library: the configuration file set by
//! `tm_set_config_file`, the configuration read from it (lazily, on the first send), and
//! the host facts written into every record (read once: they do not change while a
//! process runs, and re-reading ~10 files per record would dominate its cost).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use libtelemetry::{Config, ConfigError, HostInfo, Paths};

struct ConfigState {
    /// Path given to `tm_set_config_file` (absolute, checked); also sent as `CFG:`.
    explicit: Option<String>,
    /// `socket_path` of the configuration in effect, with the roots it was read under.
    loaded: Option<(Paths, PathBuf)>,
}

static CONFIG: Mutex<ConfigState> = Mutex::new(ConfigState {
    explicit: None,
    loaded: None,
});

static HOST: Mutex<Option<(Paths, Arc<HostInfo>)>> = Mutex::new(None);

/// A poisoned lock only means a panic was caught while it was held; the data (plain
/// values replaced whole) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Use `path` (already checked) from now on. The configuration is re-read on the next
/// send (the C library kept an already loaded one, which made a late call half-effective).
pub fn set_config_file(path: String) {
    let mut s = lock(&CONFIG);
    s.explicit = Some(path);
    s.loaded = None;
}

/// The path for the frame's `CFG:` field.
pub fn config_file() -> Option<String> {
    lock(&CONFIG).explicit.clone()
}

/// `socket_path` from the configuration in effect, reading it on first use. A bad file is
/// an error every time (nothing is cached), never an exit.
pub fn socket_path(paths: &Paths) -> Result<PathBuf, ConfigError> {
    let mut s = lock(&CONFIG);
    if let Some((p, socket)) = &s.loaded {
        if p == paths {
            return Ok(socket.clone());
        }
    }
    let explicit = s.explicit.as_deref().map(Path::new);
    let (cfg, _) = Config::load(paths, explicit)?;
    s.loaded = Some((paths.clone(), cfg.socket_path.clone()));
    Ok(cfg.socket_path)
}

/// Host facts under `paths`' host root, collected once per process (again only if the
/// roots change, which happens in tests).
pub fn host_info(paths: &Paths) -> Arc<HostInfo> {
    let mut h = lock(&HOST);
    if let Some((p, info)) = h.as_ref() {
        if p == paths {
            return Arc::clone(info);
        }
    }
    let info = Arc::new(HostInfo::collect(paths));
    *h = Some((paths.clone(), Arc::clone(&info)));
    info
}
