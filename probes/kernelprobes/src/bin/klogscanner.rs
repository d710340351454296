use std::process::ExitCode;

fn main() -> ExitCode {
    kernelprobes::cli::klogscanner_main()
}
