//! telemctl: control tool of the telemetrics suite (see telemctl(1)).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(telemctl::run(std::env::args_os().collect()))
}
