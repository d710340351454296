//! Every attack of one unprivileged local user at once (the `hostile-user` helper, run as
//! uid 65534) while a root probe sends 100 records: telemprobd and telempostd run as root in
//! a temp root laid out as the units lay it out (socket 0666, spool 0750, the attacker's
//! files in a directory it owns). Root's records must all be acknowledged and delivered,
//! each soon after its send, and both daemons must give their memory back once the attack
//! ends. The figures are printed as one JSON line (`--nocapture` to see it).
//!
//! The attacks: `CFG:` files whose `cainfo=` is a FIFO or `/dev/zero`, or which are swapped
//! for a FIFO once accepted; junk records (3,000 at once before root's records, a steady
//! stream during, 3,000 at once after); thousands of connections holding half a frame,
//! reopened as telemprobd closes them; one record every 2 s whose `CFG:` names a server that
//! never answers; malformed frames (`header_size` too large, a 16th header line). Planting
//! files in the spool is not among them: the spool is 0750 and owned by the daemon user, so
//! the attacker cannot write there (the helper checks, and the test asserts it).
//!
//! Knobs: `TELEMETRICS_HOSTILE_MAX_LATENCY_MS` (the bound on each of root's records from
//! send to arrival at the collector; 5000 by default for a loaded CI machine, the target is
//! 2000 and the JSON line says how many took longer), `TELEMETRICS_HOSTILE_MAX_RSS_KIB`
//! (when set, both daemons must be back under it within 10 s of the attack's end — the
//! acceptance figure is 8192 for the release build; unset, the RSS is only reported). The figures that count are those of the
//! release build: `cargo build --release --workspace` then
//! `cargo test --release -p telemetrics-tests --test e2e hostile -- --nocapture`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use libtelemetry::client::{send_record, Delivery};
use libtelemetry::status::{read_status, status_file};
use libtelemetry::{HostInfo, Record};
use telemetrics_tests::collector::{Collector, SilentServer};
use telemetrics_tests::{wait_until, TestDaemon, TestRoot};

/// The uid (and gid) of `nobody`: the attacker.
const NOBODY: u32 = 65534;
const ROOT_RECORDS: usize = 100;
/// Pace of root's records.
const ROOT_PAUSE: Duration = Duration::from_millis(120);
const ROOT_CLASSIFICATION: &str = "org.test/hostile/root";
const START: Duration = Duration::from_secs(20);
/// Longest wait for the attacker's bursts (3,000 sends each on a loaded machine).
const BURST: Duration = Duration::from_secs(90);
/// How long after the attack both daemons must be back under the RSS bound.
const RSS_SETTLE: Duration = Duration::from_secs(10);

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of process `pid`, in KiB (0 when it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The RSS (KiB) each daemon must be back under after the attack, from its RSS before:
/// 8 MiB for optimized builds; unoptimized builds idle above that, so for them the bound is
/// what they used before plus 4 MiB (a daemon that kept what the attack made it allocate
/// would be tens of MiB over). `TELEMETRICS_HOSTILE_MAX_RSS_KIB` sets it for both.
fn rss_bound(before: (u64, u64)) -> (u64, u64) {
    const OPTIMIZED: u64 = 8 * 1024;
    if let Some(b) = std::env::var("TELEMETRICS_HOSTILE_MAX_RSS_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return (b, b);
    }
    if cfg!(debug_assertions) {
        let relative = |b: u64| OPTIMIZED.max(b + 4 * 1024);
        (relative(before.0), relative(before.1))
    } else {
        (OPTIMIZED, OPTIMIZED)
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Lay out the root as the units do for other users: every directory from the temp dir
/// down to the socket searchable (the socket itself is 0666, telemprobd makes it so), the
/// host facts readable, the spool 0750; and a directory the attacker owns.
fn open_to_other_users(root: &TestRoot) -> std::path::PathBuf {
    let mut dir = root.socket_path().parent().unwrap().to_path_buf();
    loop {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        chmod(&dir, mode | 0o011);
        if dir == root.dir() || !dir.pop() {
            break;
        }
    }
    chmod(&root.spool_dir(), 0o750);
    let own = root.dir().join("attacker");
    std::fs::create_dir(&own).unwrap();
    chmod(&own, 0o755);
    std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).unwrap();
    own
}

/// The attacker process and its stdout lines.
struct Attacker {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Attacker {
    fn start(root: &TestRoot, own: &Path, collector: &Collector, silent: &SilentServer) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostile-user"));
        root.apply_env(&mut cmd);
        cmd.arg(root.socket_path())
            .arg(own)
            .arg(root.spool_dir())
            .arg(collector.v2_url())
            .arg(silent.url("/v2/collector"))
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start hostile-user");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Attacker { child, lines }
    }

    /// The JSON after `prefix` on the next line starting with it, within `timeout`.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => {
                    let rest = l[prefix.len()..].trim();
                    return serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
                }
                Ok(_) => {}
                Err(e) => panic!("hostile-user: no {prefix:?} line within {timeout:?}: {e}"),
            }
        }
    }

    fn command(&mut self, cmd: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").expect("write to hostile-user");
        stdin.flush().unwrap();
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Largest RSS of each daemon seen while running.
struct RssPeaks {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl RssPeaks {
    fn start(probd: u32, postd: u32) -> RssPeaks {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut a, mut b) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                a = rss_kib(probd).max(a);
                b = rss_kib(postd).max(b);
                std::thread::sleep(Duration::from_millis(50));
            }
            (a, b)
        });
        RssPeaks {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[test]
fn one_user_attacking_every_way_at_once_delays_no_root_record() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run the attacker as a second user (uid {NOBODY})");
        return;
    }
    let max_latency = Duration::from_millis(env_u64("TELEMETRICS_HOSTILE_MAX_LATENCY_MS", 5000));
    let started = Instant::now();
    let collector = Collector::start();
    let silent = SilentServer::start();
    let mut root = TestRoot::new();
    // Default limits (rate limit, quota, expiry) as shipped; the daemon stays one process
    // for the whole run so that its memory can be followed.
    root.set("server", &collector.v2_url())
        .set("daemon_recycling_enabled", "false");
    let own = open_to_other_users(&root);
    let cfg = root.config_path();
    let mut probd = TestDaemon::spawn(&root, "telemprobd", &["-f", cfg.to_str().unwrap()]);
    probd.wait_for_socket(&root.socket_path(), START);
    let mut postd = TestDaemon::spawn(&root, "telempostd", &[]);

    let host = HostInfo::collect(&root.paths);
    let root_record = |i: usize| {
        let mut r = Record::new(4, ROOT_CLASSIFICATION, 1, &host).unwrap();
        r.set_event_id(&format!("{:032x}", 0xbeef_0000 + i))
            .unwrap();
        r.set_payload(format!("root record {i}\n").as_bytes())
            .unwrap();
        r
    };
    // A first record through the whole pipeline: both daemons are up and settled.
    let warm = root_record(ROOT_RECORDS);
    assert_eq!(
        send_record(&root.paths, &root.socket_path(), &warm, None).unwrap(),
        Delivery::Acknowledged
    );
    assert!(
        collector.wait_for(1, START),
        "warm-up record:\n{}",
        postd.log()
    );
    let (probd_pid, postd_pid) = (probd.pid(), postd.pid());
    let rss_before = (rss_kib(probd_pid), rss_kib(postd_pid));
    let max_rss = rss_bound(rss_before);
    let peaks = RssPeaks::start(probd_pid, postd_pid);

    let attack_started = Instant::now();
    let mut attacker = Attacker::start(&root, &own, &collector, &silent);
    let ready = attacker.expect("ready", BURST);
    let first_burst_s = attack_started.elapsed().as_secs_f64();
    assert_eq!(ready["uid"], NOBODY, "the attacker runs as nobody");
    assert_eq!(
        ready["spool_writable"], false,
        "the attacker can write in the spool: the layout is not the units'"
    );

    // Root's probe, at a steady pace, during the attack.
    let root_started = Instant::now();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut not_acked = Vec::new();
    let mut slowest_send = Duration::ZERO;
    for i in 0..ROOT_RECORDS {
        let r = root_record(i);
        let id = r
            .headers
            .get(libtelemetry::record::Header::EventId)
            .to_string();
        let t0 = Instant::now();
        match send_record(&root.paths, &root.socket_path(), &r, None) {
            Ok(Delivery::Acknowledged) => {}
            other => not_acked.push(format!("{i}: {other:?}")),
        }
        slowest_send = slowest_send.max(t0.elapsed());
        sent_at.insert(id, t0);
        std::thread::sleep(ROOT_PAUSE.saturating_sub(t0.elapsed()));
    }
    let root_phase_s = root_started.elapsed().as_secs_f64();
    let after_started = Instant::now();
    attacker.command("after");
    attacker.expect("after-done", BURST);
    let second_burst_s = after_started.elapsed().as_secs_f64();
    attacker.command("stop");
    let stats = attacker.expect("stats", BURST);
    let attack_ended = Instant::now();
    let attack_s = attack_started.elapsed().as_secs_f64();
    drop(attacker);

    // Memory given back after the attack.
    let mut rss_after = (rss_kib(probd_pid), rss_kib(postd_pid));
    let settled = wait_until(RSS_SETTLE, || {
        rss_after = (rss_kib(probd_pid), rss_kib(postd_pid));
        rss_after.0 <= max_rss.0 && rss_after.1 <= max_rss.1
    });
    let settle_s = attack_ended.elapsed().as_secs_f64();
    // And where they stand at the end of that time.
    std::thread::sleep(RSS_SETTLE.saturating_sub(attack_ended.elapsed()));
    let rss_end = (rss_kib(probd_pid), rss_kib(postd_pid));
    let rss_peak = peaks.finish();

    // Every root record at the collector; latency from its send to its arrival.
    let arrived = |c: &Collector| -> HashMap<String, Instant> {
        c.requests()
            .iter()
            .filter(|r| r.header("classification") == Some(ROOT_CLASSIFICATION))
            .filter_map(|r| Some((r.header("event_id")?.to_string(), r.received)))
            .collect()
    };
    wait_until(Duration::from_secs(30), || {
        let a = arrived(&collector);
        sent_at.keys().all(|id| a.contains_key(id))
    });
    let got = arrived(&collector);
    let lost: Vec<&String> = sent_at.keys().filter(|id| !got.contains_key(*id)).collect();
    let mut latencies: Vec<f64> = sent_at
        .iter()
        .filter_map(|(id, t0)| Some(got.get(id)?.saturating_duration_since(*t0).as_secs_f64()))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let over_2s = latencies.iter().filter(|l| **l > 2.0).count();
    let junk_delivered = collector
        .requests()
        .iter()
        .filter(|r| {
            r.header("classification")
                .is_some_and(|c| c.starts_with("org.test/junk/"))
        })
        .count();
    let counters = read_status(&status_file(&root.paths, "telempostd"))
        .ok()
        .flatten()
        .map(|s| {
            serde_json::json!({
                "delivered": s.counter("delivered"),
                "quarantined": s.counter(libtelemetry::status::COUNTER_QUARANTINED),
                "evicted": s.counter(libtelemetry::status::COUNTER_EVICTED),
                "dropped": s.counter(libtelemetry::status::COUNTER_DROPPED),
            })
        });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "test": "hostile",
            "root_records": ROOT_RECORDS, "root_not_acked": not_acked.len(),
            "root_lost": lost.len(), "root_over_2s": over_2s,
            "latency_s": {
                "p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99),
                "max": latencies.last().copied().unwrap_or(f64::NAN),
            },
            "slowest_root_send_ms": slowest_send.as_millis() as u64,
            "rss_kib": {
                "telemprobd": {
                    "before": rss_before.0, "peak": rss_peak.0,
                    "after": rss_after.0, "after_10s": rss_end.0,
                },
                "telempostd": {
                    "before": rss_before.1, "peak": rss_peak.1,
                    "after": rss_after.1, "after_10s": rss_end.1,
                },
                "settled_within_s": if settled { Some(settle_s) } else { None },
                "bound": [max_rss.0, max_rss.1],
            },
            "attacker": stats,
            "attacker_fd_limit": ready["fd_limit"],
            "junk_delivered": junk_delivered,
            "hanging_server_connections": silent.connections(),
            "telempostd_counters": counters,
            "phases_s": {
                "first_burst": first_burst_s, "root_records": root_phase_s,
                "second_burst": second_burst_s, "attack": attack_s,
            },
            "seconds": started.elapsed().as_secs_f64(),
            "loadavg": load.trim(),
        })
    );

    assert!(probd.is_running(), "telemprobd died:\n{}", probd.log());
    assert!(postd.is_running(), "telempostd died:\n{}", postd.log());
    assert!(
        not_acked.is_empty(),
        "root's records not acknowledged: {not_acked:?}"
    );
    assert!(lost.is_empty(), "root's records lost: {lost:?}");
    let worst = latencies.last().copied().unwrap_or(0.0);
    assert!(
        worst <= max_latency.as_secs_f64(),
        "a root record took {worst:.3} s from send to the collector (bound {max_latency:?})"
    );
    // Memory is a measured figure (the JSON line), asserted only when asked for: a bound
    // that holds for the release build on an idle machine is no pass/fail rule for every
    // build and load the suite runs under.
    if std::env::var_os("TELEMETRICS_HOSTILE_MAX_RSS_KIB").is_some() {
        assert!(
            settled,
            "RSS (KiB) of telemprobd/telempostd {rss_after:?} 10 s after the attack \
             (bounds {max_rss:?})"
        );
    }
    assert!(
        silent.connections() >= 1,
        "no record of the hanging-server attack reached telempostd: the test attacked less \
         than it should"
    );
    assert!(
        counters
            .as_ref()
            .is_some_and(|c| c["quarantined"].as_u64() >= Some(1)),
        "no record with a hostile cainfo reached telempostd: the test attacked less than it \
         should ({counters:?})"
    );
    assert_eq!(
        stats["malformed_accepted"], 0,
        "a malformed frame was acknowledged"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() == 0 }
}
