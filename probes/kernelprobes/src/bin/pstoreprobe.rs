use std::process::ExitCode;

fn main() -> ExitCode {
    kernelprobes::cli::pstoreprobe_main()
}
