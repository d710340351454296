//! probe-support: the duration syntax, and the retry budget of deliveries against a
//! scripted stand-in for telemprobd.

use std::time::Duration;

use libtelemetry::client::{Ack, SendError};
use libtelemetry::record::Record;
use probe_support::cli::parse_duration;
use probe_support::deliver::{DeliverError, Outcome, Retry, Sender};
use probe_support::shutdown::{Shutdown, ShutdownHandle};
use telemetrics_tests::listener::TestListener;
use telemetrics_tests::TestRoot;

fn check(input: &str, expected: Result<Duration, &str>) {
    assert_eq!(
        parse_duration(input),
        expected.map_err(str::to_string),
        "{input:?}"
    );
}

#[test]
fn durations() {
    check("7", Ok(Duration::from_secs(7)));
    check(" 3s ", Ok(Duration::from_secs(3)));
    check("500ms", Ok(Duration::from_millis(500)));
    check("5m", Ok(Duration::from_secs(300)));
    check("2min", Ok(Duration::from_secs(120)));
    check("1h", Ok(Duration::from_secs(3600)));
    check("0s", Err("duration must be positive"));
    check("s", Err("invalid duration \"s\""));
    check(
        "3d",
        Err("invalid duration unit in \"3d\" (use ms, s, m or h)"),
    );
}

const OVERLOADED: u8 = Ack::Overloaded as u8;

/// A sender on a root whose socket is a scripted [`TestListener`], one record, and a
/// shutdown that is not requested until `stop` is triggered.
struct Setup {
    listener: TestListener,
    sender: Sender,
    record: Record,
    shutdown: Shutdown,
    stop: ShutdownHandle,
    _root: TestRoot,
}

impl Setup {
    fn new() -> Setup {
        let root = TestRoot::new();
        let listener = TestListener::start(&root);
        let sender = Sender::new(&root.paths, None).unwrap();
        let record = sender.build(1, "org.example/test/retry", 1, b"x").unwrap();
        let (shutdown, stop) = Shutdown::pipe().unwrap();
        Setup {
            listener,
            sender,
            record,
            shutdown,
            stop,
            _root: root,
        }
    }

    fn send_retrying(&self, retry: &mut Retry) -> Result<Outcome, DeliverError> {
        self.sender
            .send_retrying(&self.record, &self.shutdown, retry)
    }
}

fn is_overloaded(r: &Result<Outcome, DeliverError>) -> bool {
    matches!(
        r,
        Err(DeliverError::Send(SendError::Rejected(Ack::Overloaded)))
    )
}

#[test]
fn a_budget_of_one_sends_once() {
    let b = Setup::new();
    b.listener.script(&[OVERLOADED]);
    let mut retry = Retry::for_run(false, 3);
    assert!(is_overloaded(&b.send_retrying(&mut retry)));
    assert!(b.listener.frames().is_empty());
    // The budget is spent; the next record also gets one send (accepted here).
    assert_eq!(b.send_retrying(&mut retry).unwrap(), Outcome::Accepted);
    assert_eq!(b.listener.frames().len(), 1);
}

#[test]
fn one_shot_retries_until_accepted_and_acceptance_restores_the_budget() {
    let b = Setup::new();
    let mut retry = Retry::for_run(true, 2);
    b.listener.script(&[OVERLOADED]);
    assert_eq!(b.send_retrying(&mut retry).unwrap(), Outcome::Accepted);
    // Two more transient failures: the full budget of two attempts, then give up.
    b.listener.script(&[OVERLOADED, OVERLOADED]);
    assert!(is_overloaded(&b.send_retrying(&mut retry)));
    assert_eq!(b.listener.frames().len(), 1);
}

#[test]
fn a_stop_request_ends_the_retries() {
    let b = Setup::new();
    b.stop.trigger();
    b.listener.script(&[OVERLOADED, OVERLOADED]);
    let mut retry = Retry::for_run(true, 3);
    assert!(is_overloaded(&b.send_retrying(&mut retry)));
    // Only the first scripted reply was used.
    assert!(is_overloaded(&b.sender.send(&b.record)));
    assert_eq!(b.sender.send(&b.record).unwrap(), Outcome::Accepted);
}

/// Only an acknowledgement lets a probe forget a record: a daemon that read the record and
/// closed without answering (killed before staging it) leaves it undelivered.
#[test]
fn a_silent_close_is_not_an_acceptance() {
    use telemetrics_tests::listener::RecordListener;
    let root = TestRoot::new();
    let sender = Sender::new(&root.paths, None).unwrap();
    let record = sender.build(1, "org.example/test/silent", 1, b"x").unwrap();
    let silent = RecordListener::bind(&root.socket_path(), None);
    let got = sender.send(&record);
    assert!(matches!(got, Err(DeliverError::NotConfirmed)), "{got:?}");
    assert!(got.unwrap_err().is_transient());
    assert!(silent.recv_bytes(Duration::from_secs(5)).is_some());
    drop(silent);
    let _listener = TestListener::start(&root);
    assert!(matches!(sender.send(&record), Ok(Outcome::Accepted)));
}
