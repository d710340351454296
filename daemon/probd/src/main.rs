//! telemprobd: the spool daemon (probes' Unix socket → staged records). See
//! the `probd` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    probd::main()
}
