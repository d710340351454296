use std::process::ExitCode;

use swupdprobe::{run, Error};

fn main() -> ExitCode {
    probe_support::main("swupdprobe", run, Error::exit_code)
}
