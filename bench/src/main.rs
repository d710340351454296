//! Benchmarks: `cargo run --release -p bench -- <ingest|deliver|e2e|idle|crash> [options]`.
//! Each prints one JSON line per figure.
//!
//! Every benchmark is a module `<name>` with `pub fn run(args: &[String]) -> Result<(),
//! String>` (the arguments after its name), listed once in `benches!`.

use std::process::ExitCode;

/// A benchmark: its name and entry point (arguments after the name).
type Bench = (&'static str, fn(&[String]) -> Result<(), String>);

/// Declares the benchmark modules and the dispatch table in one list.
macro_rules! benches {
    ($($name:ident),* $(,)?) => {
        $(mod $name;)*
        const BENCHES: &[Bench] = &[$((stringify!($name), $name::run)),*];
    };
}

benches!(ingest, crash, deliver, e2e, idle);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        return usage();
    };
    let Some((_, run)) = BENCHES.iter().find(|(n, _)| n == name) else {
        return usage();
    };
    match run(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    let names: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
    eprintln!("usage: bench <{}> [options]", names.join("|"));
    ExitCode::from(2)
}
