//! Command line and the probe's top-level flow.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use libtelemetry::getopt::{Getopt, LongOpt, OptError};
use libtelemetry::{Config, CrashFrames, HostInfo, Paths, Record};

use crate::analysis::{report_for, AnalysisOptions, Report};
use crate::diag::say;
use crate::harden;
use crate::payload::{privacy_filter, process_label, Filtered, PAYLOAD_FORMAT_VERSION};
use crate::reader::CoreImage;
use crate::symbolize::FrameStyle;

/// Environment variable with `:`-separated debug roots (overridden by `--debug-root`).
pub const DEBUG_ROOT_ENV: &str = "CRASHPROBE_DEBUG_ROOT";

/// Configuration key (in `[settings]` of telemetrics.conf) choosing how frames are named:
/// `compatible` (the default, as the C probe) or `rich`.
pub const FRAMES_KEY: &str = "crashprobe_frames";

/// The environment variable elfutils, gdb and systemd read server URLs from; honoured only
/// when `debuginfod_urls` contains `env`.
pub const DEBUGINFOD_URLS_ENV: &str = "DEBUGINFOD_URLS";

/// Where processes' files are opened from (`/proc/<pid>/map_files/`).
const PROC_ROOT: &str = "/proc";

/// Exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The crash record (or a filtered record) was sent.
    Ok = 0,
    /// Bad options, hardening or configuration failure, unusable input.
    Setup = 1,
    /// The core could not be analysed; a `crash/error` record was sent.
    CoreError = 2,
    /// The record could not be sent (not opted in, daemon unreachable or rejecting).
    Send = 3,
}

pub const USAGE: &str = "\
Usage: crashprobe -p NAME [OPTIONS]

Reads an ELF core (from stdin or -c), unwinds every thread and sends a crash record.
Meant for kernel.core_pattern = |/usr/bin/crashprobe -p %e -E %E -s %s -P %P

Options:
  -f, --config-file FILE   Use FILE as the configuration file
  -c, --core-file FILE     Read the core from FILE instead of stdin
  -p, --process-name NAME  Name of the crashed process (required)
  -E, --process-path PATH  Path of the crashed executable ('/' or '!' separated)
  -s, --signal N           Signal number that caused the crash
  -P, --pid PID            PID of the crashed process (%P): its mapped files are opened
                           through /proc/PID/map_files/ before dropping root
  -v, --verbose            Print the payload after sending it
  -V, --version            Print the version and exit
  -h, --help               Print this help and exit
      --debug-root DIRS    ':'-separated roots of separate debug files
                           (default /usr/lib/debug; also $CRASHPROBE_DEBUG_ROOT)
      --sysroot DIR        Analyse offline: look up the files the core names under DIR
                           (a copy of the crashed machine's files)
      --user NAME          User to run as when started by root
                           (default telemetry; also $CRASHPROBE_USER)
";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub config_file: Option<PathBuf>,
    pub core_file: Option<PathBuf>,
    pub process_name: Option<String>,
    pub process_path: Option<String>,
    pub signal: Option<i64>,
    pub pid: Option<u32>,
    pub verbose: bool,
    pub debug_roots: Option<String>,
    pub user: Option<String>,
    pub sysroot: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// glibc getopt_long's diagnostic (`invalid option -- 'x'`, ...).
    #[error("{0}")]
    Getopt(OptError),
    #[error("invalid signal number '{0}'")]
    BadSignal(String),
    #[error("invalid process id '{0}'")]
    BadPid(String),
    #[error("unexpected argument '{0}'")]
    Extra(String),
}

/// getopt_long's option string, as the C probe's plus `-P`.
const SHORT_OPTS: &str = "f:c:p:E:s:P:vVh";
/// Long options without a short form are reported with these private codes.
const OPT_DEBUG_ROOT: char = '\u{100}';
const OPT_USER: char = '\u{101}';
const OPT_SYSROOT: char = '\u{102}';
const LONG_OPTS: &[LongOpt] = &[
    LongOpt::with_arg("config-file", 'f'),
    LongOpt::with_arg("core-file", 'c'),
    LongOpt::with_arg("process-name", 'p'),
    LongOpt::with_arg("process-path", 'E'),
    LongOpt::with_arg("signal", 's'),
    LongOpt::with_arg("pid", 'P'),
    LongOpt::flag("verbose", 'v'),
    LongOpt::flag("version", 'V'),
    LongOpt::flag("help", 'h'),
    LongOpt::with_arg("debug-root", OPT_DEBUG_ROOT),
    LongOpt::with_arg("user", OPT_USER),
    LongOpt::with_arg("sysroot", OPT_SYSROOT),
];

/// getopt_long parsing, as glibc does it (`-pNAME`, `-p NAME`, `--process-name=NAME`,
/// unambiguous prefixes such as `--proc`, clustered flags, `--`); `-h` and `-V` act when
/// reached, as in the C probe. Operands are refused.
pub fn parse_args(args: &[OsString]) -> Result<Command, UsageError> {
    let mut o = Options::default();
    let mut getopt = Getopt::new(args.to_vec(), SHORT_OPTS, LONG_OPTS);
    for item in getopt.by_ref() {
        let opt = item.map_err(UsageError::Getopt)?;
        let value = opt
            .arg
            .as_ref()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        match opt.short {
            'f' => o.config_file = Some(PathBuf::from(&value)),
            'c' => o.core_file = Some(PathBuf::from(&value)),
            'p' => o.process_name = Some(value),
            'E' => o.process_path = Some(value),
            's' => {
                o.signal = Some(
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| UsageError::BadSignal(value.clone()))?,
                )
            }
            'P' => {
                o.pid = Some(
                    value
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| UsageError::BadPid(value.clone()))?,
                )
            }
            'v' => o.verbose = true,
            'V' => return Ok(Command::Version),
            'h' => return Ok(Command::Help),
            OPT_DEBUG_ROOT => o.debug_roots = Some(value),
            OPT_USER => o.user = Some(value),
            OPT_SYSROOT => o.sysroot = Some(PathBuf::from(&value)),
            _ => {}
        }
    }
    if let Some(extra) = getopt.operands().first() {
        return Err(UsageError::Extra(extra.to_string_lossy().into_owned()));
    }
    Ok(Command::Run(o))
}

/// Where the core comes from.
enum Input {
    File(File),
    Pipe(File),
}

/// The whole probe after the first hardening steps; returns the exit code.
pub fn run(opts: Options) -> Exit {
    let paths = Paths::from_env();
    let user = opts
        .user
        .clone()
        .or_else(|| {
            std::env::var(harden::USER_ENV)
                .ok()
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| harden::DEFAULT_USER.to_string());
    // Early failures still consume a core the kernel is piping in.
    let fail = |msg: &str| {
        say(msg);
        if opts.core_file.is_none() {
            drain_piped_stdin();
        }
        Exit::Setup
    };
    // The crashed process still exists while the kernel pipes its core: its mapped files
    // are opened now, as root, and only read after root is dropped.
    let process_files = opts.pid.filter(|p| *p > 0).map(|pid| {
        std::sync::Arc::new(crate::modules::ProcessFiles::open(
            std::path::Path::new(PROC_ROOT),
            pid,
        ))
    });
    if let Err(e) = harden::drop_privileges(&user, &paths.state_dir()) {
        return fail(&format!("cannot drop privileges: {e}"));
    }
    let Some(process_name) = opts.process_name.clone() else {
        return fail("Missing required -p option. See --help output");
    };
    if let Err(e) = harden::apply_budget(&harden::Budget::default()) {
        return fail(&format!("cannot set resource limits: {e}"));
    }
    let (config, _) = match Config::load(&paths, opts.config_file.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&format!("{e}")),
    };
    let input = match open_input(&opts) {
        Ok(i) => i,
        Err(msg) => {
            say(&msg);
            return Exit::Setup;
        }
    };
    let process = process_label(opts.process_path.as_deref(), &process_name);
    let filters_off = std::fs::symlink_metadata(paths.no_privacy_filters_file()).is_ok();
    let filtered = opts
        .process_path
        .as_deref()
        .filter(|_| !filters_off)
        .and_then(privacy_filter);

    let mut analysis = AnalysisOptions::default();
    analysis.symbols.process_files = process_files;
    analysis.symbols.sysroot = opts.sysroot.clone();
    analysis.symbols.executable = opts
        .process_path
        .as_deref()
        .map(|p| PathBuf::from(p.replace('!', "/")));
    for bad in config.deferred_errors_for(libtelemetry::config::KeyReader::Crashprobe) {
        say(&format!("{}; the default is used", bad.to_error()));
    }
    analysis.symbols.style = match config.crashprobe_frames {
        CrashFrames::Compatible => FrameStyle::Compatible,
        CrashFrames::Rich => FrameStyle::Rich,
    };
    analysis.symbols.debuginfod = debuginfod_client(&paths, &config);
    let roots = opts
        .debug_roots
        .clone()
        .or_else(|| std::env::var(DEBUG_ROOT_ENV).ok().filter(|r| !r.is_empty()));
    if let Some(roots) = roots {
        analysis.symbols.debug_roots = std::env::split_paths(&roots).collect();
    }
    // The crashed machine's separate debug files come with its other files.
    if let Some(sysroot) = &opts.sysroot {
        analysis
            .symbols
            .debug_roots
            .insert(0, sysroot.join("usr/lib/debug"));
    }
    let report = if !libtelemetry::is_opted_in(&paths) {
        drain(input);
        say("not opted in to telemetry; no record sent");
        return Exit::Send;
    } else if let Some(f) = filtered {
        drain(input);
        filtered_report(f)
    } else {
        let core = match input {
            Input::File(f) => CoreImage::from_file(&f),
            Input::Pipe(f) => {
                harden::grow_pipe(f.as_raw_fd());
                let fd = f.as_raw_fd();
                CoreImage::from_stream(&f, Some(fd), &analysis.limits).0
            }
        };
        report_for(core, &process, opts.signal, &analysis)
    };
    // Crash loops: past the per-signature limit a crash is counted, not sent.
    let mut report = report;
    let gate = crate::crashloop::gate(&paths, &config, &mut report.payload);
    if gate.is_suppressed() {
        return Exit::Ok;
    }
    let exit = send(&paths, &config, &opts, &report);
    gate.finish(&paths, exit != Exit::Send);
    exit
}

/// The debuginfod client when `debuginfod_urls` names servers; `DEBUGINFOD_URLS` is read
/// only when the key says `env`.
fn debuginfod_client(
    paths: &Paths,
    config: &Config,
) -> Option<std::sync::Arc<crate::debuginfod::Client>> {
    let env = std::env::var(DEBUGINFOD_URLS_ENV).ok();
    let servers = config.debuginfod_urls.resolve(env.as_deref());
    if servers.is_empty() {
        return None;
    }
    Some(std::sync::Arc::new(crate::debuginfod::Client::new(
        crate::debuginfod::Settings {
            servers,
            cache_dir: paths.debuginfod_cache_dir(),
            budget: config.debuginfod_timeout,
            cache_max_bytes: config.debuginfod_cache_max_bytes,
            cache_expiry: config.debuginfod_cache_expiry,
        },
    )))
}

fn filtered_report(f: Filtered) -> Report {
    Report {
        classification: f.classification(),
        severity: crate::payload::SEVERITY_FILTERED,
        payload: f.payload().to_string(),
    }
}

fn open_input(opts: &Options) -> Result<Input, String> {
    if let Some(path) = &opts.core_file {
        let f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("cannot open core file {}: {e}", path.display()))?;
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        if !regular {
            return Err(format!(
                "core file {} is not a regular file",
                path.display()
            ));
        }
        return Ok(Input::File(f));
    }
    // SAFETY: dup of fd 0 gives a new descriptor that the File then owns alone.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err("no core on stdin (fd 0 is closed); use -c FILE".into());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let stdin = unsafe { File::from_raw_fd(fd) };
    let md = stdin
        .metadata()
        .map_err(|e| format!("cannot inspect stdin: {e}"))?;
    let ft = md.file_type();
    if ft.is_file() {
        Ok(Input::File(stdin))
    } else if ft.is_fifo() || ft.is_socket() {
        Ok(Input::Pipe(stdin))
    } else {
        Err("stdin is neither a pipe nor a regular file; use -c FILE".into())
    }
}

/// Read standard input to its end when it is a pipe (a core the kernel is writing); used
/// on the way out after an error, so no exit path leaves part of a core unread.
pub fn drain_piped_stdin() {
    if let Ok(input) = open_input(&Options::default()) {
        drain(input);
    }
}

/// Consume a pipe to EOF (the kernel waits for it); files are left alone.
fn drain(input: Input) {
    if let Input::Pipe(f) = input {
        let fd = f.as_raw_fd();
        crate::reader::drain(&f, Some(fd));
    }
}

fn send(paths: &Paths, config: &Config, opts: &Options, report: &Report) -> Exit {
    let host = HostInfo::collect(paths);
    let record = Record::new(
        report.severity,
        report.classification,
        PAYLOAD_FORMAT_VERSION,
        &host,
    )
    .and_then(|mut r| r.set_payload(report.payload.as_bytes()).map(|_| r));
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            say(&format!("cannot build record: {e}"));
            return Exit::Send;
        }
    };
    let cfg_path = opts
        .config_file
        .as_ref()
        .and_then(|p| std::str::from_utf8(p.as_os_str().as_bytes()).ok());
    match libtelemetry::send_record(paths, &config.socket_path, &record, cfg_path) {
        Ok(_) => {
            if opts.verbose {
                let _ = std::io::stdout().write_all(report.payload.as_bytes());
            }
            if report.is_error() {
                Exit::CoreError
            } else {
                Exit::Ok
            }
        }
        Err(e) => {
            say(&format!("cannot send record: {e}"));
            Exit::Send
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn options() {
        let check = |a: &[&str], want: Result<Command, UsageError>| {
            assert_eq!(parse_args(&args(a)), want, "{a:?}")
        };
        let run = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            Ok(Command::Run(o))
        };
        check(
            &["-p", "x", "-E", "!usr!bin!x", "-s", "11"],
            run(|o| {
                o.process_name = Some("x".into());
                o.process_path = Some("!usr!bin!x".into());
                o.signal = Some(11);
            }),
        );
        check(
            &["-px", "--signal=6", "-v", "--core-file", "c"],
            run(|o| {
                o.process_name = Some("x".into());
                o.signal = Some(6);
                o.verbose = true;
                o.core_file = Some("c".into());
            }),
        );
        check(&["-h"], Ok(Command::Help));
        check(&["-vV"], Ok(Command::Version));
        check(
            &["-x"],
            Err(UsageError::Getopt(OptError::InvalidShort('x'))),
        );
        check(
            &["-p"],
            Err(UsageError::Getopt(OptError::ShortNeedsArg('p'))),
        );
        check(
            &["--bogus"],
            Err(UsageError::Getopt(OptError::UnrecognizedLong(
                "bogus".into(),
            ))),
        );
        check(&["-s", "x"], Err(UsageError::BadSignal("x".into())));
        check(&["-P", "-3"], Err(UsageError::BadPid("-3".into())));
        check(
            &[
                "--process-n=x",
                "-P",
                "42",
                "--debug-root",
                "/d",
                "--user=u",
            ],
            run(|o| {
                o.process_name = Some("x".into());
                o.pid = Some(42);
                o.debug_roots = Some("/d".into());
                o.user = Some("u".into());
            }),
        );
        assert_eq!(
            parse_args(&args(&["-x"])).unwrap_err().to_string(),
            "invalid option -- 'x'"
        );
        check(&["stray"], Err(UsageError::Extra("stray".into())));
    }
}
