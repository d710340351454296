//! telemprobd: the spool daemon (probes' Unix socket → staged records). See
//! `daemon::probd`.

use std::process::ExitCode;

fn main() -> ExitCode {
    daemon::probd::main()
}
