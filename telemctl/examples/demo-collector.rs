//! A loopback telemetrics collector for `scripts/demo`: the test harness's collector, which
//! validates v2 and v3 requests as the public telemetrics-backend collector does and answers
//! 201. Prints its address (`127.0.0.1:<port>`) on the first line, then one line per request,
//! until killed.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use telemetrics_tests::collector::Collector;

fn main() -> ExitCode {
    let collector = Collector::start();
    let mut out = std::io::stdout();
    if writeln!(out, "{}", collector.addr())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let mut seen = 0;
    loop {
        collector.wait_for_attempts(seen + 1, Duration::from_secs(1));
        let attempts = collector.attempts();
        for r in attempts.iter().skip(seen) {
            let class = r
                .header("classification")
                .map(str::to_string)
                .or_else(|| {
                    r.json()
                        .and_then(|j| j["classification"].as_str().map(str::to_string))
                })
                .unwrap_or_else(|| "-".to_string());
            let line = format!(
                "{} {} -> {} classification={class} payload_bytes={}",
                r.method,
                r.path,
                r.status,
                r.body.len()
            );
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return ExitCode::SUCCESS;
            }
        }
        seen = attempts.len();
    }
}
