use std::process::ExitCode;

fn main() -> ExitCode {
    kernelprobes::cli::journalprobe_main()
}
