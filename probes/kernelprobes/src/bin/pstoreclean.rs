use std::process::ExitCode;

fn main() -> ExitCode {
    kernelprobes::cli::pstoreclean_main()
}
