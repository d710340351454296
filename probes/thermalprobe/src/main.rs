use std::process::ExitCode;

use thermalprobe::{run, Error};

fn main() -> ExitCode {
    probe_support::main("thermalprobe", run, Error::exit_code)
}
