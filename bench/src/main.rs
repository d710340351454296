//! Benchmarks: `cargo run --release -p bench -- <ingest|deliver|crash|idle> [options]`.
//! Each prints one JSON line per figure.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known: [&str; 0] = [];
    if let Some(cmd) = args.first().filter(|c| known.contains(&c.as_str())) {
        eprintln!("bench {cmd}: not implemented");
        return ExitCode::FAILURE;
    }
    eprintln!("usage: bench <ingest|deliver|crash|idle> [options]");
    ExitCode::from(2)
}
