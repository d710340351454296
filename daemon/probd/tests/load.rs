//! Misbehaving clients, shutdown under load and crashes under load.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use libtelemetry::client::Delivery;
use libtelemetry::fsutil::TEMP_PREFIX;
use libtelemetry::record::Header;
use libtelemetry::{encode_frame, parse_staged};
use probd::spooldir::TEMP_DIR;
use telemetrics_tests::TestRoot;

use super::{new_record, raise_fd_limit, send, staged, start, STARTUP};

#[test]
fn idle_and_slow_connections_do_not_delay_a_probe() {
    raise_fd_limit();
    let root = TestRoot::new();
    let d = start(&root);
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(root.socket_path()).unwrap())
        .collect();
    // A client sending one byte at a time, slowly.
    let frame = encode_frame(&new_record(&root, "slow"), None);
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let stop = stop.clone();
        let mut s = UnixStream::connect(root.socket_path()).unwrap();
        std::thread::spawn(move || {
            for b in frame.iter().take(50) {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Served within the client's own 1 s budget: an acknowledgement, not a timeout.
    for i in 0..5 {
        let r = new_record(&root, &format!("prompt {i}"));
        assert_eq!(send(&root, &r).unwrap(), Delivery::Acknowledged, "{i}");
    }
    stop.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    drop(idle);
    assert_eq!(staged(&root).len(), 5);
    // Idle connections are closed at the deadline, and the daemon does not mind.
    let silent = UnixStream::connect(root.socket_path()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut &silent, &mut buf).unwrap();
    assert_eq!(n, 0, "closed without a reply");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// Client threads sending records until told to stop or until the daemon goes away;
/// returns the event ids of acknowledged records and of all records sent.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    acked: Arc<Mutex<HashSet<String>>>,
    sent: Arc<Mutex<HashSet<String>>>,
}

impl Load {
    fn start(root: &TestRoot, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let sent = Arc::new(Mutex::new(HashSet::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, acked, sent) = (stop.clone(), acked.clone(), sent.clone());
                let paths = root.paths.clone();
                let socket = root.socket_path();
                let host = libtelemetry::HostInfo::collect(&paths);
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut r =
                            libtelemetry::Record::new(3, "org.test/probd/load", 1, &host).unwrap();
                        r.set_payload(format!("client {c} record {i}").as_bytes())
                            .unwrap();
                        i += 1;
                        let id = r.headers.get(Header::EventId).to_string();
                        sent.lock().unwrap().insert(id.clone());
                        match libtelemetry::send_record(&paths, &socket, &r, None) {
                            Ok(Delivery::Acknowledged) => {
                                acked.lock().unwrap().insert(id);
                            }
                            // The daemon is gone: retry until stopped, as a probe would
                            // give up; nothing to record.
                            Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            acked,
            sent,
        }
    }

    fn wait_for_acks(&self, n: usize) {
        assert!(
            telemetrics_tests::wait_until(STARTUP, || self.acked.lock().unwrap().len() >= n),
            "load never got {n} acknowledgements"
        );
    }

    fn stop(self) -> (HashSet<String>, HashSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let sent = self.sent.lock().unwrap().clone();
        (acked, sent)
    }
}

/// Every file under a final name is a complete record that a client sent, and every
/// acknowledged record is among them.
fn check_spool(root: &TestRoot, acked: &HashSet<String>, sent: &HashSet<String>) -> usize {
    let mut on_disk = HashSet::new();
    for p in root.staged_files() {
        let bytes = std::fs::read(&p).unwrap();
        let s = parse_staged(&bytes)
            .unwrap_or_else(|e| panic!("partial or corrupt file {}: {e}", p.display()));
        let id = s.headers.get(Header::EventId).to_string();
        assert!(sent.contains(&id), "unknown record {id}");
        assert!(s.body.starts_with(b"client ") && s.body.ends_with(b"\n"));
        on_disk.insert(id);
    }
    let missing: Vec<_> = acked.difference(&on_disk).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not staged: {missing:?}"
    );
    on_disk.len()
}

#[test]
fn sigterm_under_load_keeps_every_acknowledged_record() {
    let root = TestRoot::new();
    let mut d = start(&root);
    let load = Load::start(&root, 4);
    load.wait_for_acks(200);
    let status = d.terminate(STARTUP).expect("exits after SIGTERM");
    let (acked, sent) = load.stop();
    assert!(status.success(), "{status:?}\n{}", d.log());
    let n = check_spool(&root, &acked, &sent);
    assert!(n >= acked.len());
    // A clean exit leaves no temporary file behind.
    assert_eq!(temp_files(&root), Vec::<String>::new());
}

/// Temporary files in the spool: in telemprobd's temporary directory, or dotfiles of the
/// temporary prefix beside the records.
fn temp_files(root: &TestRoot) -> Vec<String> {
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut temps: Vec<String> = names(&root.spool_dir())
        .into_iter()
        .filter(|n| n.starts_with(TEMP_PREFIX) && n != TEMP_DIR)
        .collect();
    temps.extend(names(&root.spool_dir().join(TEMP_DIR)));
    temps
}

/// A cheap random number for kill timing (no crate needed).
fn jitter(max_ms: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(nanos % max_ms)
}

#[test]
fn kill_9_under_load_never_leaves_a_partial_record_or_loses_an_acknowledged_one() {
    let root = TestRoot::new();
    let mut all_acked = HashSet::new();
    let mut all_sent = HashSet::new();
    let started = Instant::now();
    let mut root = root;
    for round in 0..6 {
        // Every durability mode keeps acknowledged records across a kill of the process.
        let mode = ["strict", "batched", "none"][round % 3];
        root.set("durability", mode);
        let mut d = start(&root);
        let load = Load::start(&root, 4);
        load.wait_for_acks(10);
        std::thread::sleep(jitter(150));
        d.kill9();
        let (acked, sent) = load.stop();
        all_acked.extend(acked);
        all_sent.extend(sent);
        check_spool(&root, &all_acked, &all_sent);
        eprintln!(
            "round {round} ({mode}): {} acknowledged so far, {} staged",
            all_acked.len(),
            root.staged_files().len()
        );
    }
    // A restart clears the temporary files the killed daemons left.
    let mut d = start(&root);
    send(&root, &new_record(&root, "client after")).unwrap();
    let temps = temp_files(&root);
    assert!(temps.is_empty(), "{temps:?}");
    assert!(d.terminate(STARTUP).unwrap().success());
    eprintln!("kill -9 rounds took {:?}", started.elapsed());
}
