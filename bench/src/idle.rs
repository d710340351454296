//! `bench idle`: the resident memory of each daemon when idle, right after start and after
//! it handled `--records` records.
//!
//! Starts the release `telemprobd` and `telempostd` in a temp root (under `$TMPDIR`)
//! delivering to a counting loopback sink (v2, 201), waits `--settle` seconds and reads each
//! daemon's VmRSS (and VmHWM) from `/proc/<pid>/status`; then 8 clients send `--records`
//! records through both daemons, and once the sink has them all and `--settle` seconds have
//! passed, reads them again. One JSON line per daemon and moment (`after_start`,
//! `after_records`), plus the load average.
//!
//! Options: `--records N` (default 100000), `--settle SECONDS` (default 3), `--no-build`.

use std::time::Duration;

use serde_json::json;

use crate::deliver::{memory_kb, status_kb};
use crate::e2e::{ensure_daemons_built, load_average, Pipeline};

struct Options {
    records: usize,
    settle: Duration,
    build: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        records: 100_000,
        settle: Duration::from_secs(3),
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--no-build" {
            o.build = false;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--records" => o.records = value.parse().map_err(|e| format!("{a}: {e}"))?,
            "--settle" => {
                o.settle = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{a}: not a number of seconds"))?
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    if opts.build {
        ensure_daemons_built()?;
    }
    println!(
        "{}",
        json!({"bench": "idle", "figure": "load_average_1min", "value": load_average()})
    );
    let p = Pipeline::start("v2")?;
    std::thread::sleep(opts.settle);
    report(&p, "after_start", 0)?;
    let start = std::time::Instant::now();
    p.send(opts.records, 8, &"x".repeat(200))?;
    p.wait_delivered(opts.records, Duration::from_secs(1800))?;
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(opts.settle);
    report(&p, "after_records", opts.records)?;
    println!(
        "{}",
        json!({"bench": "idle", "figure": "load_records_per_s", "records": opts.records,
               "value": (opts.records as f64 / seconds).round(), "unit": "records/s",
               "load_average_1min": load_average()})
    );
    p.stop()
}

fn report(p: &Pipeline, moment: &str, records: usize) -> Result<(), String> {
    for d in [&p.probd, &p.postd] {
        let (hwm, rss) = memory_kb(d.pid())?;
        // Anonymous memory is what the daemon allocated; file pages are its own code and
        // libraries, shared with the page cache.
        let parts = status_kb(d.pid(), &["RssAnon:", "RssFile:"])?;
        println!(
            "{}",
            json!({"bench": "idle", "figure": format!("idle_rss_{moment}"), "daemon": d.name,
                   "value": rss, "unit": "kB", "vm_hwm_kb": hwm, "rss_anon_kb": parts[0],
                   "rss_file_kb": parts[1], "records_handled": records,
                   "load_average_1min": load_average()})
        );
    }
    Ok(())
}
