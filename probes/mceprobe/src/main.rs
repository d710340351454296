use std::process::ExitCode;

use mceprobe::{run, Error};

fn main() -> ExitCode {
    probe_support::main("mceprobe", run, Error::exit_code)
}
