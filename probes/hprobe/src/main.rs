use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(hprobe::run(
        std::env::args_os().collect(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    ))
}
