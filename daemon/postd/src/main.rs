//! telempostd: delivers staged telemetry records to the backend. See the `postd` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    postd::main_with_args(std::env::args_os())
}
