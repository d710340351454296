//! crashprobe: see the library crate and crashprobe(1).

use std::io::Write;
use std::process::ExitCode;

use crashprobe::cli::{parse_args, run, Command, Exit, USAGE};
use crashprobe::harden;

fn main() -> ExitCode {
    // Hardening first, as the kernel starts this program as root with fds it chose.
    harden::ensure_std_fds();
    if let Err(e) = harden::set_not_dumpable() {
        let _ = writeln!(std::io::stderr(), "crashprobe: {e}");
        return ExitCode::from(Exit::Setup as u8);
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let code = match parse_args(&args) {
        Ok(Command::Help) => {
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            Exit::Ok
        }
        Ok(Command::Version) => {
            let _ = writeln!(std::io::stdout(), "crashprobe {}", libtelemetry::VERSION);
            Exit::Ok
        }
        Ok(Command::Run(opts)) => run(opts),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "crashprobe: {e}\n{USAGE}");
            crashprobe::cli::drain_piped_stdin();
            Exit::Setup
        }
    };
    ExitCode::from(code as u8)
}
