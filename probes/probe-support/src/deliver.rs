//! Building records and handing them to telemprobd through libtelemetry, retrying
//! transient failures as [`Retry`] allows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtelemetry::client::{send_record, Delivery, SendError};
use libtelemetry::config::{Config, ConfigError};
use libtelemetry::record::{Record, RecordError};
use libtelemetry::{HostInfo, Paths};
use thiserror::Error;

use crate::shutdown::Shutdown;

/// Pause between two attempts at a record that failed transiently.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum DeliverError {
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
    #[error(transparent)]
    Send(#[from] SendError),
    /// All bytes were written but telemprobd did not acknowledge them: no reply in time,
    /// or it closed the connection without one (it died before staging the record, as far
    /// as the probe can tell). Worth another attempt; the record may arrive twice.
    #[error("telemprobd did not confirm the record")]
    NotConfirmed,
}

impl DeliverError {
    /// Worth trying again later (the daemon is down, busy or slow), as opposed to a record
    /// that will never be accepted.
    pub fn is_transient(&self) -> bool {
        match self {
            DeliverError::Record(_) => false,
            DeliverError::NotConfirmed => true,
            DeliverError::Send(SendError::Rejected(ack)) => {
                *ack != libtelemetry::client::Ack::Invalid
            }
            DeliverError::Send(SendError::PathTooLong(_)) => false,
            DeliverError::Send(_) => true,
        }
    }
}

/// How a delivery ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// telemprobd acknowledged the record.
    Accepted,
    /// The host is not opted in: the record was dropped on purpose.
    NotOptedIn,
}

/// Everything needed to build and send records: config, socket, host facts.
pub struct Sender {
    paths: Paths,
    socket_path: PathBuf,
    /// The `-f` path, passed on in each frame's `CFG:` field as `tm_set_config_file` did.
    cfg_arg: Option<String>,
    host: HostInfo,
}

impl Sender {
    /// Load the configuration (`explicit` from `-f`, else the standard selection).
    pub fn new(paths: &Paths, explicit: Option<&Path>) -> Result<Sender, ConfigError> {
        let explicit_abs =
            explicit.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        let (config, _source) = Config::load(paths, explicit_abs.as_deref())?;
        Ok(Sender {
            paths: paths.clone(),
            socket_path: config.socket_path,
            cfg_arg: explicit_abs.map(|p| p.to_string_lossy().into_owned()),
            host: HostInfo::collect(paths),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A record with this host's headers.
    pub fn build(
        &self,
        severity: u32,
        classification: &str,
        payload_format_version: u32,
        payload: &[u8],
    ) -> Result<Record, RecordError> {
        let mut r = Record::new(severity, classification, payload_format_version, &self.host)?;
        r.set_payload(payload)?;
        Ok(r)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Send one record and return telemprobd's answer as the client saw it, for a probe
    /// with its own policy for a reply that did not come (most use [`Self::send`]).
    pub fn send_delivery(&self, record: &Record) -> Result<Delivery, SendError> {
        send_record(
            &self.paths,
            &self.socket_path,
            record,
            self.cfg_arg.as_deref(),
        )
    }

    /// Send one record and wait for telemprobd's verdict: `Accepted` only on its
    /// acknowledgement.
    pub fn send(&self, record: &Record) -> Result<Outcome, DeliverError> {
        match self.send_delivery(record) {
            Ok(Delivery::Acknowledged) => Ok(Outcome::Accepted),
            // This suite's telemprobd answers every record it read; a connection closed
            // without an answer means it stopped before staging the record (killed, or
            // crashed). Forgetting the record then would lose it: probes only let go of a
            // record on an acknowledgement (at least once, never lost).
            Ok(Delivery::ClosedWithoutReply) | Ok(Delivery::ReplyTimedOut) => {
                Err(DeliverError::NotConfirmed)
            }
            Err(SendError::NotOptedIn) => Ok(Outcome::NotOptedIn),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::send`], trying again after [`RETRY_PAUSE`] while the failure is transient
    /// and `retry` allows it (a stop request ends the wait and the retries). Returns the
    /// last attempt's result; an acceptance restores `retry`'s budget.
    pub fn send_retrying(
        &self,
        record: &Record,
        shutdown: &Shutdown,
        retry: &mut Retry,
    ) -> Result<Outcome, DeliverError> {
        loop {
            match self.send(record) {
                Err(e) if e.is_transient() && retry.again(shutdown) => {}
                Ok(Outcome::Accepted) => {
                    retry.failures = 0;
                    return Ok(Outcome::Accepted);
                }
                other => return other,
            }
        }
    }
}

/// A budget of attempts against transient failures: at most `attempts` sends in a row
/// fail transiently before [`Sender::send_retrying`] gives up. One budget may serve
/// several records in turn: it is restored only when a record is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    failures: u32,
}

impl Retry {
    pub fn new(attempts: u32) -> Retry {
        Retry {
            attempts,
            failures: 0,
        }
    }

    /// One-shot runs try `oneshot_attempts` times; following runs try once, since their
    /// loop comes back to the record later anyway.
    pub fn for_run(once: bool, oneshot_attempts: u32) -> Retry {
        Retry::new(if once { oneshot_attempts } else { 1 })
    }

    /// Count a transient failure; true when another attempt is due, after a pause that a
    /// stop request cuts short (then false).
    fn again(&mut self, shutdown: &Shutdown) -> bool {
        self.failures += 1;
        self.failures < self.attempts && !shutdown.wait(RETRY_PAUSE)
    }
}
