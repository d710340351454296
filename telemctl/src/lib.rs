//! telemctl — the control tool of the telemetrics suite: opt-in/opt-out, service control,
//! the journal viewer (the C `telem_journal`, built in), a live status report and
//! crashprobe's crash signatures (`crashes`).
//!
//! [`run`] parses the command line, dispatches, prints errors and returns the exit code
//! (0 success, 1 failure, 2 usage; see [`error`]).

pub mod cli;
pub mod crashes;
pub mod error;
pub mod journal;
pub mod optin;
pub mod output;
pub mod purge;
pub mod services;
pub mod status;
pub mod timefmt;

use std::ffi::OsString;
use std::io::Write;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use libtelemetry::Paths;

use cli::{Cli, Cmd, JournalArgs};
use error::{CtlError, EXIT_OK, EXIT_USAGE};
use journal::{JournalFormat, JournalOptions, JournalQuery};
use output::Output;
use services::Services;

/// Run telemctl with `args` (including argv\[0\]); returns the exit code.
pub fn run(args: Vec<OsString>) -> u8 {
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "telemctl".to_string());
    let command = Cli::command()
        .override_help(cli::usage(&argv0))
        .mut_subcommand("journal", |s| s.override_help(cli::journal_usage()));
    let parsed = command
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return report_usage_error(&e, &argv0),
    };
    let Some(cmd) = cli.command else {
        print!("{}", cli::usage(&argv0));
        return EXIT_USAGE;
    };
    let paths = Paths::from_env();
    let services = Services::from_env(&paths);
    let mut err = std::io::stderr();
    match dispatch(cmd, &paths, &services, &mut err) {
        Ok(()) => EXIT_OK,
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(e) => {
            if !e.is_silent() {
                let _ = writeln!(err, "{e}");
            }
            e.exit_code()
        }
    }
}

fn report_usage_error(e: &clap::Error, argv0: &str) -> u8 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            EXIT_OK
        }
        ErrorKind::InvalidSubcommand => {
            // The C client's message, on stdout.
            print!("Unknown command passed to {argv0}\n\n{}", cli::usage(argv0));
            EXIT_USAGE
        }
        _ => {
            let _ = e.print();
            EXIT_USAGE
        }
    }
}

/// Commands that change the system (and `journal`, whose files are the telemetry user's)
/// need root, unless the suite is relocated with `TELEMETRICS_ROOT`.
fn needs_root(cmd: &Cmd) -> bool {
    !matches!(cmd, Cmd::IsActive | Cmd::Status(_) | Cmd::Crashes(_))
}

fn dispatch(
    cmd: Cmd,
    paths: &Paths,
    services: &Services,
    err: &mut dyn Write,
) -> Result<(), CtlError> {
    if needs_root(&cmd) && !nix::unistd::geteuid().is_root() && !paths.is_relocated() {
        return Err(CtlError::NotRoot);
    }
    match cmd {
        Cmd::Stop => services.stop(err),
        Cmd::Start => {
            if !paths.opt_in_file().exists() {
                return Err(CtlError::NotOptedIn);
            }
            services.start(err)
        }
        Cmd::Restart => {
            if !paths.opt_in_file().exists() {
                // Stop anyway (nothing may run without opt-in), then report.
                services.stop(err)?;
                return Err(CtlError::NotOptedIn);
            }
            services.restart(err)
        }
        Cmd::IsActive => is_active(paths, services),
        Cmd::OptIn => optin::opt_in(paths, services, err),
        Cmd::OptOut => optin::opt_out(paths, services, err),
        Cmd::Journal(args) => journal_command(paths, args, err),
        Cmd::Status(args) => {
            let report = status::collect(paths, services);
            let mut out = std::io::stdout().lock();
            if args.json {
                status::write_json(&report, &mut out)
            } else {
                status::write_text(&report, &mut out)
            }
            .map_err(error::output)
        }
        Cmd::Crashes(args) => {
            let (config, state) = crashes::collect(paths)?;
            let mut out = std::io::stdout().lock();
            if args.json {
                crashes::write_json(&config, &state, &mut out)
            } else {
                crashes::write_text(&config, &state, &mut out)
            }
        }
    }
}

/// `telemprobd : <state>` / `telempostd : <state>`: from systemctl when services are
/// managed, otherwise from the daemons' status files and processes.
fn is_active(paths: &Paths, services: &Services) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for (daemon, unit) in [
        ("telemprobd", "telemprobd.socket"),
        ("telempostd", "telempostd.path"),
    ] {
        let state = if services.managed() {
            services.is_active(unit).unwrap_or_else(|| {
                ok = false;
                "unknown".to_string()
            })
        } else {
            let running = libtelemetry::status::read_status(&libtelemetry::status::status_file(
                paths, daemon,
            ))
            .ok()
            .flatten()
            .is_some_and(|s| status::process_is(s.pid, daemon));
            if running { "active" } else { "inactive" }.to_string()
        };
        writeln!(out, "{daemon} : {state}").map_err(error::output)?;
    }
    if ok {
        Ok(())
    } else {
        Err(CtlError::ServiceFailed)
    }
}

fn journal_command(paths: &Paths, a: JournalArgs, err: &mut dyn Write) -> Result<(), CtlError> {
    timefmt::init_timezone();
    let now = libtelemetry::status::now_secs();
    let time = |spec: &Option<String>| -> Result<Option<i64>, CtlError> {
        spec.as_deref()
            .map(|s| timefmt::parse_time_spec(s, now))
            .transpose()
            .map_err(CtlError::Usage)
    };
    let query = JournalQuery {
        record_id: a.record_id,
        event_id: a.event_id,
        classification: a.classification,
        boot_id: a.boot_id,
        since: time(&a.since)?,
        until: time(&a.until)?,
        lines: a.lines,
    };
    let format = if a.json {
        JournalFormat::Json
    } else if a.csv {
        JournalFormat::Csv
    } else {
        JournalFormat::Text {
            verbose: a.verbose,
            colour: output::use_colour(),
        }
    };
    let opts = JournalOptions {
        query,
        format,
        include_record: a.include_record,
        // What reaches a terminal (directly or through the pager) is sanitized.
        sanitize: output::stdout_is_tty(),
    };
    let mut out = Output::open(a.no_pager);
    journal::run(paths, &opts, &mut out, err)?;
    out.finish().map_err(error::output)
}
