//! telemprobd: receives records from probes on a Unix socket and stages them durably in the
//! spool directory, where telempostd picks them up.
//!
//! One current-thread tokio runtime runs:
//! * [`listener`]: the accept loop (connection cap, SIGHUP reload, idle exit, shutdown);
//! * [`handler`]: a task per connection whose frame was not complete at accept (frame
//!   reassembly under a deadline, validation, the one-byte reply);
//! * [`stager`]: one task collecting records into batches, each group-committed (temp →
//!   fsync → rename → one directory fsync per batch) on a blocking thread before its
//!   records are acknowledged, so a slow disk never stalls the tasks above (on a medium
//!   as quick as tmpfs a small batch is committed in place, and a record arriving alone
//!   that finds the stager idle is committed by the listener itself, see [`stager`]); the
//!   commit answers the queued connections that held one whole frame at accept itself;
//! * a status writer (counters for `telemctl status`).
//!
//! File work that can wait on the disk runs on tokio's blocking pool, capped at one thread:
//! the daemon has two threads at most.
//!
//! [`socket`] finds the listening socket (systemd activation or bind), [`machine_id`] keeps
//! the rotating machine id, [`cli`] parses the command line. [`main`] is the whole program;
//! [`serve`] is the daemon on an already open socket, with shutdown passed in as a future.
//!
//! Exit status: 0 after SIGTERM/SIGINT or the idle exit, 1 on a usage, configuration or
//! socket error (as the C daemon).

/// The C command line, shared with the other daemon.
pub use daemon_common::cli;
pub mod conn;
pub mod connections;
pub mod counters;
pub mod durability;
pub mod handler;
pub mod listener;
pub mod machine_id;
pub mod peer;
pub mod refusals;
pub mod socket;
pub mod spooldir;
pub mod stager;
mod status;
pub mod trust;

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use libtelemetry::config::{check_config_path, ConfigError, ConfigSource};
use libtelemetry::{Config, Paths};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use counters::Counters;
use daemon_common::notify::notify;
use listener::Listener;
use socket::SocketError;
use stager::Stager;
use status::StatusWriter;

/// Name used for logs and the status file.
pub const DAEMON: &str = "telemprobd";
/// Time a client has to deliver a frame (and to start the next one).
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Most connections served at once (fewer if the fd limit is lower).
pub const MAX_CONNECTIONS: usize = 4096;
/// fds kept free for everything but client connections.
const RESERVED_FDS: u64 = 64;
/// Idle time before exiting when `daemon_recycling_enabled` (C: 300 s).
pub const IDLE_EXIT: Duration = Duration::from_secs(300);
/// Shortest interval between two status file writes.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ProbdError {
    #[error("Configuration file path not valid: {0}")]
    ConfigPath(#[source] ConfigError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Socket(#[from] SocketError),
    #[error("spool_dir {path} is not usable: {source}")]
    SpoolDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Durability(#[from] durability::BadDurability),
    #[error("cannot set up the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ProbdError {
    /// Every error exits 1, as in C.
    pub fn exit_code(&self) -> u8 {
        1
    }
}

/// Why the daemon stopped (both exit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// SIGTERM, SIGINT or the caller's shutdown future.
    Shutdown,
    /// `daemon_recycling_enabled` and no client for [`IDLE_EXIT`].
    Idle,
}

/// What [`serve`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub paths: Paths,
    /// `-f`, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    pub config: Config,
    pub max_connections: usize,
    /// Connections one unprivileged uid may hold at once ([`connections::share_of`]).
    pub connections_per_uid: usize,
    /// Connections root may hold beyond `max_connections`.
    pub root_reserve: usize,
    pub frame_deadline: Duration,
    /// `Some` when `daemon_recycling_enabled`.
    pub idle_exit: Option<Duration>,
    pub status_interval: Duration,
    /// When records are acknowledged relative to the disk (`durability`).
    pub durability: durability::Durability,
    /// Run before each commit (see [`stager::CommitHook`]).
    #[cfg(test)]
    pub commit_hook: Option<stager::CommitHook>,
}

impl Settings {
    pub fn new(paths: Paths, config_file: Option<PathBuf>, config: Config) -> Settings {
        let durability = durability::durability_of(&config).unwrap_or_default();
        Settings {
            idle_exit: config.daemon_recycling_enabled.then_some(IDLE_EXIT),
            paths,
            config_file,
            config,
            max_connections: MAX_CONNECTIONS,
            connections_per_uid: connections::share_of(MAX_CONNECTIONS),
            root_reserve: connections::ROOT_RESERVE,
            frame_deadline: FRAME_DEADLINE,
            status_interval: STATUS_INTERVAL,
            // A bad value is refused by `run`; in-process callers get the default.
            durability,
            #[cfg(test)]
            commit_hook: None,
        }
    }
}

/// The telemprobd program.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| DAEMON.to_string());
    main_with_args(&argv0, args.collect())
}

/// The program with explicit arguments (after `argv[0]`).
pub fn main_with_args(argv0: &str, args: Vec<OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from(argv0)).chain(args);
    daemon_common::cli::main(argv, DAEMON, |opts| {
        daemon_common::logging::init(DAEMON);
        match run(opts) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// Load the configuration, open the socket and serve until a signal or the idle exit.
pub fn run(opts: cli::Options) -> Result<ExitReason, ProbdError> {
    let paths = Paths::from_env();
    if let Some(p) = &opts.config_file {
        check_config_path(p).map_err(ProbdError::ConfigPath)?;
    }
    let (config, source) = Config::load(&paths, opts.config_file.as_deref())?;
    daemon_common::logging::warn_config(&config);
    tracing::info!(
        "{DAEMON} {} starting ({})",
        libtelemetry::VERSION,
        describe(&source)
    );
    socket::check_socket_path(&config.socket_path)?;
    let durability = durability::durability_of(&config)?;
    match spooldir::check_spool_dir(&config.spool_dir) {
        Ok(spooldir::SpoolDirState::Usable) => {}
        Ok(spooldir::SpoolDirState::Missing) => tracing::warn!(
            "spool_dir {} does not exist yet: records are refused until it does",
            config.spool_dir.display()
        ),
        Err(source) => {
            return Err(ProbdError::SpoolDir {
                path: config.spool_dir.clone(),
                source,
            })
        }
    }
    let mut settings = Settings::new(paths, opts.config_file, config);
    settings.durability = durability;
    settings.max_connections = connection_limit(raise_fd_limit());
    settings.connections_per_uid = connections::share_of(settings.max_connections);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Commits and status writes take turns on one thread (memory stays small).
        .max_blocking_threads(1)
        .build()
        .map_err(ProbdError::Runtime)?;
    runtime.block_on(async move {
        // Handlers first: a signal must never find the daemon with its default action once
        // the socket accepts connections.
        let mut term = signal(SignalKind::terminate()).map_err(ProbdError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ProbdError::Runtime)?;
        let mut hup = signal(SignalKind::hangup()).map_err(ProbdError::Runtime)?;
        let (listener, source) = socket::open_listener(&settings.config.socket_path)?;
        tracing::info!(
            "listening on {} ({:?}), at most {} connections, {} per unprivileged uid; \
             durability={}",
            settings.config.socket_path.display(),
            source,
            settings.max_connections,
            settings.connections_per_uid,
            settings.durability.as_str()
        );
        let (reload_tx, reload_rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reload_tx.try_send(());
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight records"),
                _ = int.recv() => tracing::info!("SIGINT: finishing in-flight records"),
            }
        };
        let reason = serve(listener, settings, reload_rx, shutdown)
            .await
            .map_err(ProbdError::Runtime)?;
        tracing::info!("{DAEMON} exiting");
        Ok(reason)
    })
}

/// The daemon on an open, non-blocking listening socket, until `shutdown` completes (or
/// the idle exit). In-flight records are finished before it returns.
pub async fn serve(
    listener: UnixListener,
    settings: Settings,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<ExitReason> {
    let counters = Arc::new(Counters::default());
    let (stager, stager_handle) = Stager::new(
        settings.paths.clone(),
        settings.config.spool_dir.clone(),
        settings.durability,
        counters.clone(),
    );
    #[cfg(test)]
    let stager = stager.with_commit_hook(settings.commit_hook.clone());
    let stager_task = tokio::spawn(stager.run());
    let status = StatusWriter::new(&settings.paths, counters.clone());
    status.write_now();
    let (stop_status, status_stopped) = watch::channel(false);
    let status_task = tokio::spawn(status.clone().run(settings.status_interval, status_stopped));

    let refusal_summaries = tokio::spawn({
        let counters = counters.clone();
        async move { counters.refusals.run().await }
    });
    let mut listener = Listener::new(listener, &settings, stager_handle, counters.clone())?;
    notify("READY=1");
    let reason = listener.run(reload, shutdown).await;
    notify("STOPPING=1");
    listener.finish().await;
    // Every handle of the stager is gone now: it commits what is queued and ends.
    let _ = stager_task.await;
    let _ = stop_status.send(true);
    let _ = status_task.await;
    refusal_summaries.abort();
    counters.refusals.flush();
    status.write_now();
    Ok(reason)
}

/// A short description of where the configuration came from, for logs.
pub fn describe(source: &ConfigSource) -> String {
    match source.path() {
        Some(p) => format!("configuration {}", p.display()),
        None => "built-in configuration".to_string(),
    }
}

/// Raise the soft fd limit to the hard one (idle clients must not starve the daemon of
/// fds); returns the soft limit in effect.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

fn connection_limit(nofile: u64) -> usize {
    let usable = nofile
        .saturating_sub(RESERVED_FDS + connections::ROOT_RESERVE as u64)
        .max(16);
    usize::try_from(usable).map_or(MAX_CONNECTIONS, |u| u.min(MAX_CONNECTIONS))
}

#[cfg(test)]
mod tests;
