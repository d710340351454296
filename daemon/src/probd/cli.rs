//! Command line of telemprobd (§4.1): `-f/--config_file <path>`, `-h/--help`, `-V/--version`.
//!
//! Parsed by hand in the `getopt_long "f:hV"` style: `-f path`, `-fpath`, `--config_file path`
//! and `--config_file=path` are all accepted; the first `-h` or `-V` wins.

use std::ffi::OsString;
use std::path::PathBuf;

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unrecognized option '{0}'")]
    UnknownOption(String),
    #[error("option '{0}' requires an argument")]
    MissingArgument(String),
    #[error("unexpected argument '{0}'")]
    UnexpectedArgument(String),
}

/// Parse the arguments after `argv[0]`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        match text.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-f" | "--config_file" => {
                let value = args
                    .next()
                    .ok_or_else(|| UsageError::MissingArgument(text.clone()))?;
                opts.config_file = Some(PathBuf::from(value));
            }
            _ => {
                if let Some(value) = text.strip_prefix("--config_file=") {
                    opts.config_file = Some(PathBuf::from(value));
                } else if text.starts_with("--") {
                    return Err(UsageError::UnknownOption(text));
                } else if let Some(value) = text.strip_prefix("-f") {
                    opts.config_file = Some(PathBuf::from(value));
                } else if text.starts_with('-') && text.len() > 1 {
                    return Err(UsageError::UnknownOption(text));
                } else {
                    return Err(UsageError::UnexpectedArgument(text));
                }
            }
        }
    }
    Ok(Command::Run(opts))
}

/// The usage text of the C daemon.
pub fn usage(argv0: &str) -> String {
    format!(
        "{argv0}: Usage\n  \
-f,  --config_file    Configuration file. This overides the other default configuration files\n  \
-h,  --help           Display this help message\n  \
-V,  --version        Print the program version\n"
    )
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
    fn command_lines() {
        check(&[], Ok(Command::Run(Options::default())));
        check(&["-h"], Ok(Command::Help));
        check(&["--help"], Ok(Command::Help));
        check(&["-V"], Ok(Command::Version));
        check(&["--version", "-h"], Ok(Command::Version));
        check(&["-f", "/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["-f/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["--config_file", "/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["--config_file=/etc/t.conf"], run_with("/etc/t.conf"));
        check(&["-f", "/a", "-f", "/b"], run_with("/b"));
        check(&["-f"], Err(UsageError::MissingArgument("-f".into())));
        check(&["-x"], Err(UsageError::UnknownOption("-x".into())));
        check(
            &["--bogus"],
            Err(UsageError::UnknownOption("--bogus".into())),
        );
        check(
            &["extra"],
            Err(UsageError::UnexpectedArgument("extra".into())),
        );
    }

    #[test]
    fn usage_names_the_three_options() {
        let u = usage("telemprobd");
        assert!(u.starts_with("telemprobd: Usage\n"));
        for opt in ["--config_file", "--help", "--version"] {
            assert!(u.contains(opt), "{opt}");
        }
    }
}
