//! `bench ingest`: how fast telemprobd stages records, and its memory.
//!
//! Starts the release `telemprobd` in a temp root (under `$TMPDIR`, so
//! `TMPDIR=/dev/shm` measures the daemon without disk latency), then for `--seconds` each:
//! one sequential client, and `--clients` concurrent clients, all sending with
//! `libtelemetry::client` and waiting for the acknowledgement. Prints one JSON line per
//! figure: records/s, p50/p99 latency of one send, CPU time per record of the daemon and of
//! the clients, the machine's load average, the daemon's VmHWM/VmRSS.
//!
//! Options: `--seconds N` (default 3), `--clients N` (default 8), `--payload BYTES`
//! (default 200), `--rounds N` (default 1: repeat both runs N times and report each
//! figure's median, with `min` and `max`; on a shared machine single runs vary a lot),
//! `--durability MODES` (comma-separated `strict`, `batched`, `none`; default `batched`: one
//! daemon per mode, the rounds interleaved across them, every figure tagged with its mode),
//! `--no-build` (use the `telemprobd` next to this binary as it is; by default
//! `cargo build` refreshes it first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtelemetry::client::{send_record, Delivery};
use libtelemetry::{HostInfo, Paths, Record};
use serde_json::json;
use telemetrics_tests::{TestDaemon, TestRoot};

use crate::deliver::memory_kb;

struct Options {
    build: bool,
    seconds: f64,
    clients: usize,
    payload: usize,
    rounds: usize,
    /// `durability` modes measured, each with its own daemon.
    modes: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        build: true,
        seconds: 3.0,
        clients: 8,
        payload: 200,
        rounds: 1,
        modes: vec!["batched".to_string()],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--clients" => o.clients = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--payload" => o.payload = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("{a}: {e}"))?,
            "--durability" => {
                o.modes = value()?.split(',').map(str::to_string).collect();
                if o
                    .modes
                    .iter()
                    .any(|m| !["strict", "batched", "none"].contains(&m.as_str()))
                {
                    return Err(format!("{a}: strict, batched and/or none"));
                }
            }
            "--no-build" => o.build = false,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.payload > libtelemetry::record::MAX_PAYLOAD
        || o.clients == 0
        || o.seconds <= 0.0
        || o.rounds == 0
    {
        return Err("out-of-range option".into());
    }
    Ok(o)
}

/// One telemprobd under test, with a durability mode.
struct Bench {
    mode: String,
    root: TestRoot,
    daemon: TestDaemon,
    host: HostInfo,
    figures: Figures,
    total_acked: usize,
}

impl Bench {
    fn start(mode: &str) -> Bench {
        let mut root = TestRoot::new();
        root.set("durability", mode);
        let mut cmd = root.command("telemprobd");
        cmd.args(["-f", &root.config_path().to_string_lossy()]);
        // Per-record log lines would measure the terminal, not the daemon.
        cmd.env("TELEMETRICS_LOG", "warn");
        let mut daemon = TestDaemon::spawn_command(&root, "telemprobd", cmd);
        daemon.wait_for_socket(&root.socket_path(), Duration::from_secs(20));
        let host = HostInfo::collect(&root.paths);
        Bench {
            mode: mode.to_string(),
            root,
            daemon,
            host,
            figures: Figures::default(),
            total_acked: 0,
        }
    }

    /// One round: a sequential client, then `opts.clients` concurrent ones.
    fn round(&mut self, opts: &Options, payload: &str) -> Result<(), String> {
        let duration = Duration::from_secs_f64(opts.seconds);
        let figures = &mut self.figures;
        figures.add("load_average_1min", "", None, load_average());
        for n in [1, opts.clients] {
            let daemon_cpu0 = process_cpu(self.daemon.pid())?;
            let client_cpu0 = own_cpu();
            let r = clients(&self.root, &self.host, payload, n, duration)?;
            let daemon_cpu = process_cpu(self.daemon.pid())? - daemon_cpu0;
            let client_cpu = own_cpu() - client_cpu0;
            self.total_acked += r.acked;
            let mut lat = r.latencies_us;
            lat.sort_unstable();
            let rate = r.acked as f64 / r.elapsed.as_secs_f64();
            let label = if n == 1 { "sequential" } else { "concurrent" };
            let c = Some(n);
            let name = format!("{label}_records_per_s");
            figures.add(&name, "records/s", c, rate.round());
            figures.count(&name, r.acked, r.failed);
            // CPU time per record, which the machine's other load does not inflate much: on
            // an idle machine a sequential client's rate is bounded by 1 / (daemon + client
            // CPU).
            let per_record = |d: Duration| {
                (d.as_secs_f64() * 1e6 / r.acked.max(1) as f64 * 10.0).round() / 10.0
            };
            let name = format!("{label}_daemon_cpu_per_record");
            figures.add(&name, "us", c, per_record(daemon_cpu));
            let name = format!("{label}_client_cpu_per_record");
            figures.add(&name, "us", c, per_record(client_cpu));
            for (name, q) in [("p50", 0.50), ("p99", 0.99)] {
                let name = format!("{label}_{name}_send_latency");
                figures.add(&name, "us", c, f64::from(percentile(&lat, q)));
            }
        }
        Ok(())
    }

    /// Print the figures (medians over the rounds) and the memory, stop the daemon and
    /// check every acknowledged record is in the spool.
    fn finish(mut self, opts: &Options) -> Result<(), String> {
        let fs = filesystem_name(&self.root.spool_dir());
        let ctx = |extra: serde_json::Value| {
            let mut v = json!({"bench": "ingest", "spool_fs": fs, "durability": self.mode,
                "payload_bytes": opts.payload});
            if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            v
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for f in &self.figures.list {
            let mut v = ctx(json!({"figure": f.name, "unit": f.unit, "value": median(&f.values)}));
            if let Some(m) = v.as_object_mut() {
                if let Some(n) = f.clients {
                    m.insert("clients".into(), json!(n));
                }
                if f.name == "load_average_1min" {
                    m.insert("cpus".into(), json!(cpus));
                }
                if let Some((records, failed)) = f.sends {
                    m.insert("records".into(), json!(records));
                    m.insert("failed".into(), json!(failed));
                }
                if opts.rounds > 1 {
                    let min = f.values.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = f.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    m.insert("rounds".into(), json!(opts.rounds));
                    m.insert("min".into(), json!(min));
                    m.insert("max".into(), json!(max));
                }
            }
            println!("{v}");
        }
        let (hwm, rss) = memory_kb(self.daemon.pid())?;
        println!(
            "{}",
            ctx(json!({"figure": "daemon_vm_hwm", "value": hwm, "unit": "kB"}))
        );
        println!(
            "{}",
            ctx(json!({"figure": "daemon_vm_rss", "value": rss, "unit": "kB"}))
        );
        let status = self.daemon.terminate(Duration::from_secs(30));
        if !status.is_some_and(|s| s.success()) {
            return Err(format!("telemprobd did not exit cleanly: {status:?}"));
        }
        let staged = self.root.staged_files().len();
        if staged < self.total_acked {
            return Err(format!(
                "{} records acknowledged but only {staged} staged",
                self.total_acked
            ));
        }
        Ok(())
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    if opts.build {
        ensure_daemon_built()?;
    }
    let payload = "x".repeat(opts.payload);
    let mut benches: Vec<Bench> = opts.modes.iter().map(|m| Bench::start(m)).collect();
    for b in &benches {
        // Warm up (page cache, the daemon's allocations).
        let _ = clients(&b.root, &b.host, &payload, 1, Duration::from_millis(300))?;
    }
    // Rounds interleaved across the modes, so a change in the machine's load hits all.
    for _ in 0..opts.rounds {
        for b in &mut benches {
            b.round(&opts, &payload)?;
        }
    }
    for b in benches {
        b.finish(&opts)?;
    }
    Ok(())
}

/// Figures collected over the rounds, in first-seen order; each is reported as the median.
#[derive(Default)]
struct Figures {
    list: Vec<Figure>,
}

struct Figure {
    name: String,
    unit: &'static str,
    clients: Option<usize>,
    values: Vec<f64>,
    /// Acknowledged and failed sends over all rounds, for a rate.
    sends: Option<(usize, usize)>,
}

impl Figures {
    fn add(&mut self, name: &str, unit: &'static str, clients: Option<usize>, value: f64) {
        match self.list.iter_mut().find(|f| f.name == name) {
            Some(f) => f.values.push(value),
            None => self.list.push(Figure {
                name: name.to_string(),
                unit,
                clients,
                values: vec![value],
                sends: None,
            }),
        }
    }

    fn count(&mut self, name: &str, acked: usize, failed: usize) {
        if let Some(f) = self.list.iter_mut().find(|f| f.name == name) {
            let (a, b) = f.sends.unwrap_or((0, 0));
            f.sends = Some((a + acked, b + failed));
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct RunResult {
    acked: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// `n` client threads sending records for `duration`.
fn clients(
    root: &TestRoot,
    host: &HostInfo,
    payload: &str,
    n: usize,
    duration: Duration,
) -> Result<RunResult, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            let paths = root.paths.clone();
            let socket = root.socket_path();
            let host = host.clone();
            let payload = payload.to_string();
            std::thread::spawn(move || client(&paths, &socket, &host, &payload, &stop))
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut result = RunResult {
        acked: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in threads {
        let (acked, failed, lat) = t.join().map_err(|_| "client thread panicked")??;
        result.acked += acked;
        result.failed += failed;
        result.latencies_us.extend(lat);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

type ClientResult = Result<(usize, usize, Vec<u32>), String>;

fn client(
    paths: &Paths,
    socket: &Path,
    host: &HostInfo,
    payload: &str,
    stop: &AtomicBool,
) -> ClientResult {
    let (mut acked, mut failed) = (0, 0);
    let mut latencies = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let mut r =
            Record::new(2, "org.bench/ingest/record", 1, host).map_err(|e| e.to_string())?;
        r.set_payload(payload.as_bytes())
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let outcome = send_record(paths, socket, &r, None);
        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match outcome {
            Ok(Delivery::Acknowledged) => {
                acked += 1;
                latencies.push(us);
            }
            _ => failed += 1,
        }
    }
    Ok((acked, failed, latencies))
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// user + system CPU time of `pid` (10 ms resolution).
fn process_cpu(pid: u32) -> Result<Duration, String> {
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
    let total = ticks(11) + ticks(12);
    Ok(Duration::from_micros(total * 1_000_000 / hz))
}

/// user + system CPU time of this process (all client threads).
fn own_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-parameter.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

/// The release `telemprobd` next to this binary, built if missing.
fn ensure_daemon_built() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no exe dir")?;
    let daemon = dir.join("telemprobd");
    let profile_is_release = dir.ends_with("release");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    build.args(["build", "--manifest-path", manifest]);
    build.args(["-p", "telemprobd", "--bin", "telemprobd"]);
    if profile_is_release {
        build.arg("--release");
    }
    // Always ask cargo: it rebuilds only when the daemon's sources changed.
    let status = build.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() || !daemon.exists() {
        return Err(format!("cannot build {}", daemon.display()));
    }
    Ok(daemon)
}

/// The spool's filesystem type, for the record.
fn filesystem_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path pointer and out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as i64 {
        0x0102_1994 => "tmpfs".into(),
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("{other:#x}"),
    }
}
