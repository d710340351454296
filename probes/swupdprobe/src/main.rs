use std::process::ExitCode;

use clap::Parser;
use swupdprobe::cli::Cli;
use swupdprobe::shutdown::Shutdown;
use swupdprobe::{exit, log, run};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
    log::init("swupdprobe");
    let shutdown = match Shutdown::from_signals() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot set up signal handling: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let paths = libtelemetry::Paths::from_env();
    match run(&cli, &paths, &shutdown) {
        Ok(summary) => {
            tracing::debug!("{summary:?}");
            ExitCode::from(exit::SUCCESS)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
