//! The probes' shared `main()` (feature `cli`).

use std::fmt::{Debug, Display};
use std::process::ExitCode;

use clap::Parser;
use libtelemetry::Paths;

use crate::exit;
use crate::log;
use crate::shutdown::Shutdown;

/// A probe's `main()`: parse the command line `C` (usage errors exit with
/// [`exit::USAGE`], `--help` and `--version` with [`exit::SUCCESS`]), log as `name`, turn
/// SIGTERM/SIGINT into a [`Shutdown`] before any thread starts, then `run` with the paths
/// of the environment and map its error through `exit_code`.
pub fn main<C, S, E>(
    name: &'static str,
    run: impl FnOnce(&C, &Paths, &Shutdown) -> Result<S, E>,
    exit_code: impl FnOnce(&E) -> u8,
) -> ExitCode
where
    C: Parser,
    S: Debug,
    E: Display,
{
    let cli = match C::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    log::init(name);
    let shutdown = match Shutdown::from_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot set up signal handling: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let paths = Paths::from_env();
    match run(&cli, &paths, &shutdown) {
        Ok(summary) => {
            tracing::debug!("{summary:?}");
            ExitCode::from(exit::SUCCESS)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
