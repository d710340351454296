//! The command line both daemons share with their C originals: `getopt_long "f:hV"` with
//! `-f/--config_file <path>`, `-h/--help` and `-V/--version`, parsed by
//! [`libtelemetry::getopt`] so that clusters (`-hV`), attached arguments (`-f/x`),
//! `--name=value` and unambiguous prefixes (`--conf=/x`) behave, and are diagnosed, exactly
//! as glibc does (`telemprobd: invalid option -- 'x'`), and the usage text both C daemons
//! printed. Each daemon re-exports this module as its own `cli`.
//!
//! Options are taken in order and the first `-h` or `-V` wins, as in C (`-f` checks its path
//! later, at start-up). One deliberate difference: an operand (`telemprobd extra`), which the
//! C daemons ignored, is refused like a bad option, since a daemon started with one is
//! misconfigured.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use libtelemetry::getopt::{Getopt, LongOpt, OptError};

/// The C `optstring`.
pub const SHORT_OPTS: &str = "f:hV";
/// The C `struct option` table.
pub const LONG_OPTS: &[LongOpt] = &[
    LongOpt::flag("help", 'h'),
    LongOpt::with_arg("config_file", 'f'),
    LongOpt::flag("version", 'V'),
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

/// Options of a daemon run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `-f`: the configuration file that overrides the default ones.
    pub config_file: Option<PathBuf>,
}

/// A command line the daemon refuses. `Display` gives the message without the program name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// What glibc's getopt reports (its message, byte for byte).
    Option(OptError),
    /// An operand; the daemons take none.
    Operand(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::Option(e) => e.fmt(f),
            UsageError::Operand(s) => write!(f, "unexpected argument '{s}'"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Parse the arguments after `argv[0]`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut opts = Options::default();
    let mut getopt = Getopt::new(args.into_iter().collect(), SHORT_OPTS, LONG_OPTS);
    for item in getopt.by_ref() {
        let opt = item.map_err(UsageError::Option)?;
        match opt.short {
            'h' => return Ok(Command::Help),
            'V' => return Ok(Command::Version),
            'f' => opts.config_file = opt.arg.map(PathBuf::from),
            _ => {}
        }
    }
    if let Some(operand) = getopt.operands().first() {
        return Err(UsageError::Operand(operand.to_string_lossy().into_owned()));
    }
    Ok(Command::Run(opts))
}

/// The usage text of the C daemons (telemprobd and telempostd printed the same lines).
pub fn usage(argv0: &str) -> String {
    format!(
        "{argv0}: Usage\n  \
-f,  --config_file    Configuration file. This overides the other default configuration files\n  \
-h,  --help           Display this help message\n  \
-V,  --version        Print the program version\n"
    )
}

/// The whole command-line side of a daemon: `args` with `argv[0]` first (`default_name` when
/// missing). `-h` prints [`usage`] on stdout and `-V` the version, both exiting 0; a refused
/// command line prints the message and the usage on stderr and exits 1; otherwise `run`.
pub fn main(
    args: impl IntoIterator<Item = OsString>,
    default_name: &str,
    run: impl FnOnce(Options) -> ExitCode,
) -> ExitCode {
    let mut args = args.into_iter();
    let argv0 = args
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| default_name.to_string());
    match parse(args) {
        Ok(Command::Run(opts)) => run(opts),
        Ok(Command::Help) => {
            print!("{}", usage(&argv0));
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("{}", libtelemetry::VERSION);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{argv0}: {e}\n{}", usage(&argv0));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Command, UsageError>) {
        let parsed = parse(args.iter().map(OsString::from));
        assert_eq!(parsed, expected, "args {args:?}");
    }

    fn run_with(path: &str) -> Result<Command, UsageError> {
        Ok(Command::Run(Options {
            config_file: Some(PathBuf::from(path)),
        }))
    }

    #[test]
    fn usage_is_the_c_text() {
        assert_eq!(
            usage("telempostd"),
            "telempostd: Usage\n  \
-f,  --config_file    Configuration file. This overides the other default configuration files\n  \
-h,  --help           Display this help message\n  \
-V,  --version        Print the program version\n"
        );
    }

    #[test]
    fn command_lines() {
        check(&[], Ok(Command::Run(Options::default())));
        check(&["-h"], Ok(Command::Help));
        check(&["--help"], Ok(Command::Help));
        check(&["-V"], Ok(Command::Version));
        check(&["--version", "-h"], Ok(Command::Version));
        check(&["-hV"], Ok(Command::Help));
        check(&["-Vh"], Ok(Command::Version));
        check(&["-f", "/a", "-V"], Ok(Command::Version));
        check(&["-f", "/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["-f/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["--config_file", "/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["--config_file=/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["--conf=/x"], run_with("/x"));
        check(&["--c", "/x"], run_with("/x"));
        check(&["--config_file="], run_with(""));
        check(&["-f", "/a", "-f", "/b"], run_with("/b"));
        check(
            &["-f"],
            Err(UsageError::Option(OptError::ShortNeedsArg('f'))),
        );
        check(
            &["--config_file"],
            Err(UsageError::Option(OptError::LongNeedsArg(
                "config_file".into(),
            ))),
        );
        check(
            &["-x"],
            Err(UsageError::Option(OptError::InvalidShort('x'))),
        );
        check(
            &["--bogus"],
            Err(UsageError::Option(OptError::UnrecognizedLong(
                "bogus".into(),
            ))),
        );
        check(&["extra"], Err(UsageError::Operand("extra".into())));
        check(&["extra", "-h"], Ok(Command::Help));
    }

    #[test]
    fn messages_are_glibc_s() {
        let msg = |args: &[&str]| {
            parse(args.iter().map(OsString::from))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(msg(&["-x"]), "invalid option -- 'x'");
        assert_eq!(msg(&["-f"]), "option requires an argument -- 'f'");
        assert_eq!(
            msg(&["--config_file"]),
            "option '--config_file' requires an argument"
        );
        assert_eq!(
            msg(&["--help=1"]),
            "option '--help' doesn't allow an argument"
        );
        assert_eq!(msg(&["--bogus=1"]), "unrecognized option '--bogus=1'");
        assert_eq!(msg(&["extra"]), "unexpected argument 'extra'");
    }
}
