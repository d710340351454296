//! telempostd: delivers staged telemetry records to the backend. See `daemon::postd`.

use std::process::ExitCode;

fn main() -> ExitCode {
    daemon::postd::main_with_args(std::env::args_os())
}
