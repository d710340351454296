//! `bench e2e`: records/s from concurrent clients through both daemons to a loopback
//! collector that answers 201.
//!
//! For each protocol (v2 headers, v3 JSON) it starts the release `telemprobd` and
//! `telempostd` in a temp root (under `$TMPDIR`; `TMPDIR=/dev/shm` leaves the disk out) with
//! a counting sink (`Collector::sink`) as the server, warms up with a few hundred records,
//! then `--clients` threads send `--records` records in total with `libtelemetry::client`
//! (each waits for telemprobd's acknowledgement, as probes do). The figure is the records
//! divided by the time from the first send to the sink's 201 for the last record; the line
//! also gives the clients' own rate (ingest only), the daemons' CPU per record and the load
//! average at the start.
//!
//! Options: `--records N` (default 20000), `--clients N` (default 8), `--payload BYTES`
//! (default 200), `--mode v2|v3` (default both), `--no-build`. One JSON line per figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtelemetry::client::{send_record, Delivery};
use libtelemetry::{HostInfo, Paths, Record};
use serde_json::json;
use telemetrics_tests::collector::Collector;
use telemetrics_tests::{TestDaemon, TestRoot};

struct Options {
    records: usize,
    clients: usize,
    payload: usize,
    mode: Option<String>,
    build: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        records: 20_000,
        clients: 8,
        payload: 200,
        mode: None,
        build: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--no-build" {
            o.build = false;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let n = || value.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--records" => o.records = n()?,
            "--clients" => o.clients = n()?,
            "--payload" => o.payload = n()?,
            "--mode" => o.mode = Some(value.clone()),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.records == 0
        || o.clients == 0
        || o.payload > libtelemetry::record::MAX_PAYLOAD
        || o.mode.as_deref().is_some_and(|m| m != "v2" && m != "v3")
    {
        return Err("out-of-range option".into());
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    if opts.build {
        ensure_daemons_built()?;
    }
    for mode in ["v2", "v3"] {
        if opts.mode.as_deref().is_some_and(|m| m != mode) {
            continue;
        }
        let load = load_average();
        let p = Pipeline::start(mode)?;
        let payload = "x".repeat(opts.payload);
        // Warm up: connections, page cache, the daemons' allocations.
        let warm = 200;
        p.send(warm, opts.clients, &payload)?;
        p.wait_delivered(warm, Duration::from_secs(60))?;
        let cpu0 = p.daemon_cpu()?;
        let start = Instant::now();
        p.send(opts.records, opts.clients, &payload)?;
        let ingest = start.elapsed();
        p.wait_delivered(warm + opts.records, Duration::from_secs(900))?;
        let total = start.elapsed();
        let cpu = p.daemon_cpu()?;
        let per_record = |before: Duration, after: Duration| {
            let us = after.saturating_sub(before).as_secs_f64() * 1e6 / opts.records as f64;
            (us * 10.0).round() / 10.0
        };
        println!(
            "{}",
            json!({
                "bench": "e2e", "figure": "records_per_s", "mode": mode,
                "value": (opts.records as f64 / total.as_secs_f64()).round(),
                "unit": "records/s", "clients": opts.clients, "records": opts.records,
                "payload_bytes": opts.payload, "seconds": round2(total.as_secs_f64()),
                "ingest_records_per_s": (opts.records as f64 / ingest.as_secs_f64()).round(),
                "telemprobd_cpu_us_per_record": per_record(cpu0.0, cpu.0),
                "telempostd_cpu_us_per_record": per_record(cpu0.1, cpu.1),
                "spool_fs_tmpdir": std::env::temp_dir(), "load_average_1min": load,
            })
        );
        p.stop()?;
    }
    Ok(())
}

/// Both daemons in a temp root, delivering to a counting sink.
pub(crate) struct Pipeline {
    pub sink: Collector,
    pub root: TestRoot,
    pub probd: TestDaemon,
    pub postd: TestDaemon,
    host: HostInfo,
}

impl Pipeline {
    /// Start telemprobd (waiting for its socket) and telempostd, server = the sink at the
    /// `mode` path, no rate limit, no quota, warnings-only logs.
    pub fn start(mode: &str) -> Result<Pipeline, String> {
        let sink = Collector::sink();
        let mut root = TestRoot::new();
        let path = if mode == "v3" {
            "/v3/collector"
        } else {
            "/v2/collector"
        };
        root.set("server", &sink.url(path))
            .set("rate_limit_enabled", "false")
            .set("spool_max_size", "-1")
            .set("daemon_recycling_enabled", "false");
        let mut cmd = root.command("telemprobd");
        cmd.args(["-f", &root.config_path().to_string_lossy()]);
        cmd.env("TELEMETRICS_LOG", "warn");
        let mut probd = TestDaemon::spawn_command(&root, "telemprobd", cmd);
        probd.wait_for_socket(&root.socket_path(), Duration::from_secs(20));
        let mut cmd = root.command("telempostd");
        cmd.env("TELEMETRICS_LOG", "warn");
        let postd = TestDaemon::spawn_command(&root, "telempostd", cmd);
        let host = HostInfo::collect(&root.paths);
        Ok(Pipeline {
            sink,
            root,
            probd,
            postd,
            host,
        })
    }

    /// Send `n` records from `clients` threads; each record is retried until acknowledged.
    pub fn send(&self, n: usize, clients: usize, payload: &str) -> Result<(), String> {
        let next = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (paths, socket) = (self.root.paths.clone(), self.root.socket_path());
                let (host, payload, next) = (self.host.clone(), payload.to_string(), next.clone());
                std::thread::spawn(move || client(&paths, &socket, &host, &payload, &next, n))
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "client thread panicked")??;
        }
        Ok(())
    }

    /// Wait until the sink accepted `n` records in all.
    pub fn wait_delivered(&self, n: usize, timeout: Duration) -> Result<(), String> {
        if self.sink.wait_for(n, timeout) {
            return Ok(());
        }
        Err(format!(
            "{} of {n} records delivered after {timeout:?}; telempostd log:\n{}",
            self.sink.accepted_count(),
            self.postd.log()
        ))
    }

    /// CPU time (user + system) of telemprobd and telempostd.
    pub fn daemon_cpu(&self) -> Result<(Duration, Duration), String> {
        Ok((
            process_cpu(self.probd.pid())?,
            process_cpu(self.postd.pid())?,
        ))
    }

    /// SIGTERM both; an error unless both exit 0.
    pub fn stop(mut self) -> Result<(), String> {
        for d in [&mut self.probd, &mut self.postd] {
            let st = d.terminate(Duration::from_secs(30));
            if !st.is_some_and(|s| s.success()) {
                return Err(format!("{} did not exit cleanly: {st:?}", d.name));
            }
        }
        Ok(())
    }
}

/// Take record numbers from `next` until `total` were sent, each until acknowledged.
fn client(
    paths: &Paths,
    socket: &Path,
    host: &HostInfo,
    payload: &str,
    next: &AtomicUsize,
    total: usize,
) -> Result<(), String> {
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let mut r =
            Record::new(2, "org.clearlinux/bench/e2e", 1, host).map_err(|e| e.to_string())?;
        r.set_payload(payload.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut tries = 0;
        loop {
            match send_record(paths, socket, &r, None) {
                Ok(Delivery::Acknowledged) => break,
                outcome => {
                    tries += 1;
                    if tries > 100 {
                        return Err(format!("record not acknowledged: {outcome:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    Ok(())
}

/// The release (or debug, matching this binary) `telemprobd` and `telempostd`, refreshed by
/// cargo (it rebuilds only when their sources changed).
pub(crate) fn ensure_daemons_built() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no exe dir")?;
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    build.args([
        "build",
        "--manifest-path",
        manifest,
        "-p",
        "telemprobd",
        "-p",
        "telempostd",
    ]);
    build.args(["--bin", "telemprobd", "--bin", "telempostd"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cargo build: {e}"))?;
    let missing: Vec<PathBuf> = ["telemprobd", "telempostd"]
        .iter()
        .map(|b| dir.join(b))
        .filter(|p| !p.exists())
        .collect();
    if !status.success() || !missing.is_empty() {
        return Err(format!("cannot build the daemons ({missing:?} missing)"));
    }
    Ok(())
}

/// user + system CPU time of `pid` (clock-tick resolution).
pub(crate) fn process_cpu(pid: u32) -> Result<Duration, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(
        (ticks(11) + ticks(12)) * 1_000_000 / hz,
    ))
}

/// The 1-minute load average, to judge how quiet the machine was.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
