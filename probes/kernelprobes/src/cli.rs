//! Command lines of the four probes and what each one runs. The `main.rs` files only call
//! these functions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser};
use libtelemetry::client::Delivery;
use libtelemetry::{Paths, SendError};

use crate::error::{ProbeError, EXIT_OK, EXIT_USAGE};
use crate::oops::{Oops, PayloadOptions};
use crate::{journal, kmsg, oops, privs, pstore};
use probe_support::deliver::Sender;

/// Largest file `klogscanner --parse-file` reads.
const MAX_PARSE_FILE: u64 = 64 * 1024 * 1024;

/// `-f FILE` (also `--config_file`) of klogscanner, pstoreprobe and journalprobe.
#[derive(Debug, Args)]
pub struct ConfigFileArg {
    /// Configuration file to use instead of the default ones.
    #[arg(
        short = 'f',
        long = "config-file",
        alias = "config_file",
        value_name = "FILE"
    )]
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "klogscanner",
    version = libtelemetry::VERSION,
    about = "Report kernel oopses found in the kernel log (/dev/kmsg)"
)]
pub struct KlogscannerArgs {
    #[command(flatten)]
    pub config: ConfigFileArg,
    /// Account to switch to, when started as root, once the kernel log is open.
    #[arg(short = 'u', long = "user", value_name = "NAME", default_value = privs::DEFAULT_USER)]
    pub user: String,
    /// Scan the records already in the kernel log too, not only new ones.
    #[arg(long = "from-start")]
    pub from_start: bool,
    /// Parse FILE (kernel log text, one message per line) and print the records that
    /// would be sent, instead of reading the kernel log. Nothing is sent.
    #[arg(long = "parse-file", value_name = "FILE")]
    pub parse_file: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "pstoreprobe",
    version = libtelemetry::VERSION,
    about = "Report kernel oopses saved in pstore dumps"
)]
pub struct PstoreprobeArgs {
    #[command(flatten)]
    pub config: ConfigFileArg,
    /// Directory holding the dumps copied by pstoreclean.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "pstoreclean",
    version = libtelemetry::VERSION,
    about = "Move pstore entries into the telemetry cache directory"
)]
pub struct PstorecleanArgs {
    /// Where pstore is (or gets) mounted.
    #[arg(long = "pstore-dir", value_name = "DIR")]
    pub pstore_dir: Option<PathBuf>,
    /// Directory the entries are moved to.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not mount pstore; read the pstore directory as it is.
    #[arg(long = "no-mount")]
    pub no_mount: bool,
}

#[derive(Debug, Parser)]
#[command(
    name = "journalprobe",
    version = libtelemetry::VERSION,
    about = "Report services of this boot that exited with an error"
)]
pub struct JournalprobeArgs {
    #[command(flatten)]
    pub config: ConfigFileArg,
    /// Report only entries logged from now on.
    #[arg(short = 't', long = "tail")]
    pub tail: bool,
    /// The journalctl program [default: $TELEMETRICS_JOURNALCTL, else /usr/bin/journalctl].
    #[arg(long = "journalctl", value_name = "PATH")]
    pub journalctl: Option<PathBuf>,
}

/// A probe's `main()`: set up logging, parse the command line `T` (on error or
/// `--help`/`--version`, exit as clap says), run, and map the error to its exit code.
fn probe_main<T: Parser>(name: &'static str, run: fn(&T) -> Result<(), ProbeError>) -> ExitCode {
    probe_support::log::init(name);
    let args = match T::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            tracing::error!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Payload format version of every record these probes send.
pub const PAYLOAD_VERSION: u32 = 1;

/// Whether the host turned the privacy filters off (register values may be sent).
fn privacy_filters_disabled(paths: &Paths) -> bool {
    std::fs::symlink_metadata(paths.no_privacy_filters_file()).is_ok()
}

/// Build and send one record.
fn send(
    sender: &Sender,
    classification: &str,
    severity: u32,
    payload: &str,
) -> Result<Delivery, ProbeError> {
    let record = sender.build(
        severity,
        classification,
        PAYLOAD_VERSION,
        payload.as_bytes(),
    )?;
    Ok(sender.send_delivery(&record)?)
}

/// Send one payload; true when telemprobd took it. Failures are logged, not fatal.
fn deliver(sender: &Sender, classification: &str, severity: u32, payload: &str) -> bool {
    match send(sender, classification, severity, payload) {
        // No reply in time: telemprobd is still starting (socket activation) and the
        // record waits in the socket's queue.
        Ok(Delivery::Acknowledged) | Ok(Delivery::ReplyTimedOut) => true,
        // telemprobd answers every record it read: a close without an answer means it
        // stopped before staging this one, so it is not counted (pstoreprobe keeps the dump).
        Ok(Delivery::ClosedWithoutReply) => {
            tracing::warn!(
                "{classification} record not confirmed: telemprobd closed the connection"
            );
            false
        }
        Err(ProbeError::Send(SendError::NotOptedIn)) => {
            tracing::info!("not opted in to telemetry; {classification} record not sent");
            false
        }
        Err(e) => {
            tracing::warn!("{classification} record not sent: {e}");
            false
        }
    }
}

fn deliver_oops(sender: &Sender, oops: &Oops) -> bool {
    let options = kmsg::payload_options(privacy_filters_disabled(sender.paths()));
    tracing::info!("{}: {}", oops.classification(), oops.reason());
    deliver(
        sender,
        oops.classification(),
        oops.severity(),
        &oops.payload(options),
    )
}

pub fn klogscanner_main() -> ExitCode {
    probe_main("klogscanner", run_klogscanner)
}

fn run_klogscanner(args: &KlogscannerArgs) -> Result<(), ProbeError> {
    if let Some(file) = &args.parse_file {
        return print_parsed(file);
    }
    let paths = Paths::from_env();
    if let Some(manager) = kmsg::detect_container(&paths) {
        tracing::info!(
            "running in a container ({manager}); the host's kernel log is not ours to report"
        );
        return Ok(());
    }
    let sender = Sender::new(&paths, args.config.config_file.as_deref())?;
    let path = kmsg::kmsg_path(&paths);
    let mut file = kmsg::open_kmsg(&path, args.from_start)?;
    if let Some(uid) = privs::drop_root(&args.user)? {
        tracing::debug!("running as uid {uid}");
    }
    let summary = kmsg::scan(&mut file, &path, kmsg::IDLE_FLUSH, |oops| {
        deliver_oops(&sender, oops)
    })?;
    tracing::info!(
        oopses = summary.oopses,
        delivered = summary.delivered,
        overruns = summary.overruns,
        "end of the kernel log"
    );
    Ok(())
}

/// `--parse-file`: every record as `# <classification> severity <n>` and its payload.
fn print_parsed(file: &Path) -> Result<(), ProbeError> {
    use std::io::{Read, Write};
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_PARSE_FILE).read_to_end(&mut bytes))
        .map_err(|e| ProbeError::io(file, e))?;
    let mut out = std::io::stdout().lock();
    for found in oops::parse_text(&bytes) {
        let payload = found.payload(PayloadOptions::default());
        writeln!(
            out,
            "# {} severity {}",
            found.classification(),
            found.severity()
        )
        .and_then(|_| out.write_all(payload.as_bytes()))
        .map_err(|e| ProbeError::io("stdout", e))?;
    }
    Ok(())
}

pub fn pstoreprobe_main() -> ExitCode {
    probe_main("pstoreprobe", run_pstoreprobe)
}

fn run_pstoreprobe(args: &PstoreprobeArgs) -> Result<(), ProbeError> {
    let paths = Paths::from_env();
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| paths.pstore_cache_dir());
    let sender = Sender::new(&paths, args.config.config_file.as_deref())?;
    let summary = pstore::probe(&cache_dir, |oops| deliver_oops(&sender, oops))?;
    tracing::info!(
        dumps = summary.dumps,
        oopses = summary.oopses,
        delivered = summary.delivered,
        "pstore dumps processed"
    );
    if summary.failed > 0 {
        return Err(ProbeError::NotDelivered(summary.failed));
    }
    Ok(())
}

pub fn pstoreclean_main() -> ExitCode {
    probe_main("pstoreclean", run_pstoreclean)
}

fn run_pstoreclean(args: &PstorecleanArgs) -> Result<(), ProbeError> {
    let paths = Paths::from_env();
    let pstore_dir = args
        .pstore_dir
        .clone()
        .unwrap_or_else(|| paths.dev_dir().join("pstore"));
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| paths.pstore_cache_dir());
    let mode = if args.no_mount {
        pstore::MountMode::UseAsIs
    } else if !nix::unistd::geteuid().is_root() {
        tracing::info!(
            "not running as root: pstore is not mounted, {} is read as it is",
            pstore_dir.display()
        );
        pstore::MountMode::UseAsIs
    } else if paths.host_root() != Path::new("/") {
        // Never mount the real pstore into a relocated host tree.
        tracing::info!("host root is relocated: pstore is not mounted");
        pstore::MountMode::UseAsIs
    } else {
        pstore::MountMode::Mount
    };
    let summary = pstore::clean(&pstore_dir, &cache_dir, mode)?;
    tracing::info!(
        copied = summary.copied,
        removed_stale = summary.removed_stale,
        "pstore entries moved to {}",
        cache_dir.display()
    );
    Ok(())
}

pub fn journalprobe_main() -> ExitCode {
    probe_main("journalprobe", run_journalprobe)
}

fn run_journalprobe(args: &JournalprobeArgs) -> Result<(), ProbeError> {
    let paths = Paths::from_env();
    let sender = Sender::new(&paths, args.config.config_file.as_deref())?;
    let boot_id = libtelemetry::journal::read_boot_id(&paths)
        .map_err(|e| ProbeError::io(paths.boot_id_file(), e))?;
    let filter = journal::EntryFilter::new(&boot_id, privacy_filters_disabled(&paths));
    let program = journal::journalctl_program(args.journalctl.as_deref());
    let argv = journal::journalctl_args(&filter, args.tail);
    let summary = journal::follow(&program, &argv, &filter, |payload| {
        deliver(&sender, journal::CLASSIFICATION, journal::SEVERITY, payload)
    })?;
    tracing::info!(
        entries = summary.entries,
        delivered = summary.delivered,
        "journal follow ended"
    );
    Ok(())
}
