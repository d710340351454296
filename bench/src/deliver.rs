//! `bench deliver`: how fast telempostd empties a spool into a loopback collector that
//! answers 201, and its idle memory.
//!
//! For each protocol (v2 headers, v3 JSON, OTLP JSON in batches of 100) and each delivery shape it stages `--records`
//! records in a temp root (under `$TMPDIR`), starts the release `telempostd`, and times the
//! records from the first to the last one the collector accepted (start-up excluded). Shapes:
//! * `new-connection`: `delivery_keep_alive=false`, one record in flight: a new TCP
//!   connection per record, one after the other, the way the C daemon (a new curl handle per
//!   record) delivers;
//! * `keep-alive`: one record in flight over a reused connection;
//! * `parallel`: the default, up to `delivery_max_in_flight` (4) records in flight over
//!   reused connections, the number in flight adapting to the sink
//!   (`delivery_concurrency=adaptive`);
//! * `parallel-fixed`: the same with `delivery_concurrency=fixed` (always 4);
//! * `slow-adaptive`, `slow-fixed`: up to 8 in flight against a slow sink (20 ms per
//!   request, 2 workers: requests beyond 2 queue in it), adaptive against fixed;
//! * `uwsgi-keep-alive`, `uwsgi-new-connection`: one record in flight against a sink that
//!   closes the connection 5 ms after each answer without `Connection: close` (as uWSGI's
//!   `http-socket`), with and without keep-alive: stale connections must cost no failed
//!   attempt.
//!
//! Each line also reports the most requests the sink had in service at once
//! (`sink_max_concurrent`) and their mean number (`sink_mean_concurrent`, time in service
//! over the timed span: the in-flight level telempostd kept), and telempostd's
//! `failed_attempts`.
//!
//! The collector is `telemetrics_tests::collector::Collector::sink` (validates, counts, keeps
//! nothing). Its own capacity is measured first with raw keep-alive clients, to show it is
//! not the bottleneck. Then telempostd's VmRSS when idle with an empty spool.
//!
//! Options: `--records N` (default 2000), `--payload BYTES` (default 200), `--mode v2|v3|otlp`
//! and `--shape new-connection|keep-alive|parallel` to run only some of them.
//! Prints one JSON line per figure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use libtelemetry::record::{Headers, Record};
use serde_json::json;
use telemetrics_tests::collector::{Behavior, Collector};
use telemetrics_tests::{TestDaemon, TestRoot};

struct Options {
    records: usize,
    payload: usize,
    /// Only this protocol / shape (all when `None`).
    mode: Option<String>,
    shape: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        records: 2000,
        payload: 200,
        mode: None,
        shape: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let n = || value.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--records" => o.records = n()?,
            "--payload" => o.payload = n()?,
            "--mode" => o.mode = Some(value.clone()),
            "--shape" => o.shape = Some(value.clone()),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.records < 2 || o.payload > libtelemetry::record::MAX_PAYLOAD {
        return Err("out-of-range option".into());
    }
    Ok(o)
}

/// A record the v2 collector accepts.
fn record(i: usize, payload: usize) -> Record {
    let values = [
        "4".to_string(),
        "org.clearlinux/bench/deliver".into(),
        "2".into(),
        "5768134ac73df19cbf582da092628002".into(),
        "1795614028".into(),
        "x86_64".into(),
        "blank|blank|blank".into(),
        "12".into(),
        "6.1.0-18-amd64".into(),
        "1".into(),
        "debian".into(),
        "no_bn_file|no_bv_file".into(),
        "Intel(R) Core(TM) i7-5650U CPU @ 2.20GHz".into(),
        "no_bv_file".into(),
        format!("{i:032x}"),
    ];
    Record {
        headers: Headers(values),
        payload: "x".repeat(payload).into_bytes(),
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    ensure_daemon_built()?;
    sink_capacity(&opts)?;
    for mode in ["v2", "v3", "otlp"] {
        for (shape, keep_alive, in_flight) in [
            ("new-connection", false, 1),
            ("keep-alive", true, 1),
            ("parallel", true, 4),
            ("parallel-fixed", true, 4),
            ("slow-adaptive", true, 8),
            ("slow-fixed", true, 8),
            ("uwsgi-keep-alive", true, 1),
            ("uwsgi-new-connection", false, 1),
        ] {
            let skip = |want: &Option<String>, v: &str| want.as_deref().is_some_and(|w| w != v);
            if skip(&opts.mode, mode) || skip(&opts.shape, shape) {
                continue;
            }
            drain(&opts, mode, shape, keep_alive, in_flight)?;
        }
    }
    idle_memory()
}

/// Time telempostd emptying a spool of `opts.records` records.
fn drain(
    opts: &Options,
    mode: &str,
    shape: &str,
    keep_alive: bool,
    in_flight: usize,
) -> Result<(), String> {
    let sink = Collector::sink();
    if shape.starts_with("slow") {
        sink.set_behavior(Behavior::Slow(Duration::from_millis(20)));
        sink.set_workers(Some(2));
    }
    if shape.starts_with("uwsgi") {
        sink.set_behavior(Behavior::CloseAfterAnswer(Duration::from_millis(5)));
    }
    let concurrency = if shape.ends_with("fixed") {
        "fixed"
    } else {
        "adaptive"
    };
    let mut root = TestRoot::new();
    let path = match mode {
        "v3" => "/v3/collector",
        "otlp" => "/v1/logs",
        _ => "/v2/collector",
    };
    root.set("server", &sink.url(path))
        .set("rate_limit_enabled", "false")
        .set("spool_max_size", "-1")
        .set(
            "delivery_keep_alive",
            if keep_alive { "true" } else { "false" },
        )
        .set("delivery_max_in_flight", &in_flight.to_string())
        .set("delivery_concurrency", concurrency);
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    for i in 0..opts.records {
        let p = root.spool_dir().join(format!("{i:06}"));
        std::fs::write(
            &p,
            libtelemetry::encode_staged(&record(i, opts.payload), None),
        )
        .map_err(|e| e.to_string())?;
        // Older than telempostd's settle time for files found by a scan.
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(old))
            .map_err(|e| e.to_string())?;
    }
    let mut cmd = root.command("telempostd");
    cmd.env("TELEMETRICS_LOG", "warn");
    let mut daemon = TestDaemon::spawn_command(&root, "telempostd", cmd);
    let limit = Duration::from_secs(600);
    if !sink.wait_for(1, Duration::from_secs(30)) {
        return Err(format!("no delivery; log:\n{}", daemon.log()));
    }
    let first = Instant::now();
    // Records the first request carried are not in the timed span.
    let first_records = sink.accepted_records();
    if !sink.wait_for_records(opts.records, limit) {
        return Err(format!(
            "{} of {} delivered; log:\n{}",
            sink.accepted_records(),
            opts.records,
            daemon.log()
        ));
    }
    let secs = first.elapsed().as_secs_f64();
    let busy = sink.busy_seconds();
    let timed = opts.records.saturating_sub(first_records).max(1);
    let (hwm, rss) = memory_kb(daemon.pid())?;
    daemon.signal(libc::SIGTERM);
    let _ = daemon.wait_timeout(Duration::from_secs(20));
    let failed = libtelemetry::status::read_status(&libtelemetry::status::status_file(
        &root.paths,
        "telempostd",
    ))
    .ok()
    .flatten()
    .map_or(0, |st| {
        st.counter(libtelemetry::status::COUNTER_FAILED_ATTEMPTS)
    });
    println!(
        "{}",
        json!({
            "bench": "deliver", "mode": mode, "shape": shape,
            "records": opts.records, "payload_bytes": opts.payload,
            "keep_alive": keep_alive, "in_flight": in_flight,
            "concurrency": concurrency, "sink_max_concurrent": sink.max_concurrent(),
            "sink_mean_concurrent": round(busy / secs),
            "failed_attempts": failed,
            "seconds": round(secs),
            "records_per_s": round(timed as f64 / secs),
            "requests": sink.accepted_count(),
            "connections": sink.connections(),
            "daemon_vm_hwm_kb": hwm, "daemon_vm_rss_kb": rss,
        })
    );
    Ok(())
}

/// The sink alone: 4 raw keep-alive clients POSTing valid v2 records.
fn sink_capacity(opts: &Options) -> Result<(), String> {
    let sink = Collector::sink();
    let rec = record(0, opts.payload);
    let mut req = String::from("POST /v2/collector HTTP/1.1\r\nHost: bench\r\n");
    for (name, value) in libtelemetry::record::HEADER_NAMES
        .iter()
        .zip(rec.headers.0.iter())
    {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = format!("{}\n", String::from_utf8_lossy(&rec.payload));
    req.push_str(&format!(
        "X-Telemetry-TID: {}\r\nContent-Type: application/text\r\nContent-Length: {}\r\n\r\n{body}",
        telemetrics_tests::collector::TELEMETRY_ID,
        body.len()
    ));
    let clients = 4;
    let per_client = opts.records / clients;
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let addr = sink.addr();
            let req = req.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                let mut r = BufReader::new(s);
                for _ in 0..per_client {
                    w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                    read_response(&mut r)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "client panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = per_client * clients;
    if sink.accepted_count() != n {
        return Err(format!("sink accepted {} of {n}", sink.accepted_count()));
    }
    println!(
        "{}",
        json!({
            "bench": "deliver", "figure": "sink_capacity", "clients": clients,
            "records": n, "records_per_s": round(n as f64 / secs),
        })
    );
    Ok(())
}

/// Read one response (status line, headers, Content-Length body); error unless 201.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<(), String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("HTTP/1.1 201") {
        return Err(format!("sink answered {line:?}"));
    }
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("Content-Length:") {
            len = v.trim().parse().map_err(|_| "bad Content-Length")?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())
}

/// telempostd idle with an empty spool.
fn idle_memory() -> Result<(), String> {
    let sink = Collector::sink();
    let mut root = TestRoot::new();
    root.set("server", &sink.v2_url());
    let mut cmd = root.command("telempostd");
    cmd.env("TELEMETRICS_LOG", "warn");
    let mut daemon = TestDaemon::spawn_command(&root, "telempostd", cmd);
    std::thread::sleep(Duration::from_secs(2));
    let (hwm, rss) = memory_kb(daemon.pid())?;
    daemon.signal(libc::SIGTERM);
    let _ = daemon.wait_timeout(Duration::from_secs(20));
    println!(
        "{}",
        json!({"bench": "deliver", "figure": "idle_memory", "daemon_vm_hwm_kb": hwm, "daemon_vm_rss_kb": rss})
    );
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// (VmHWM, VmRSS) in kB from `/proc/<pid>/status` (also used by the ingest bench).
pub(crate) fn memory_kb(pid: u32) -> Result<(u64, u64), String> {
    let v = status_kb(pid, &["VmHWM:", "VmRSS:"])?;
    Ok((v[0], v[1]))
}

/// The `kB` fields `names` of `/proc/<pid>/status`, in that order.
pub(crate) fn status_kb(pid: u32, names: &[&str]) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    names.iter().map(|n| field(n)).collect()
}

/// The `telempostd` next to this binary (same profile), built if missing or stale.
fn ensure_daemon_built() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no exe dir")?;
    let daemon = dir.join("telempostd");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "-p", "telempostd", "--bin", "telempostd"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() || !daemon.exists() {
        return Err(format!("cannot build {}", daemon.display()));
    }
    Ok(daemon)
}
