//! The bounded pools of worker threads that read, parse, POST and (once accepted) delete
//! spooled records, so the event loop does no file I/O per record; what they report back.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtelemetry::config::DeliveryMode;
use libtelemetry::staged::StagedSender;
use libtelemetry::{Paths, StagedRecord};

use super::delivery::{otlp_request_with_body, target_for, HttpSender, Outcome, Target};
use super::spool::Lane;

/// One spooled record handed to a worker, which reads, parses, posts and (once accepted)
/// deletes it, so the event loop does no file I/O per record.
pub struct Job {
    /// Record names and the bytes reserved for each in the rate limiter: one record, or an
    /// OTLP batch.
    pub records: Vec<(String, u64)>,
    pub spool_dir: Arc<PathBuf>,
    /// The default target (the daemon's configuration).
    pub target: Arc<Target>,
    pub paths: Arc<Paths>,
    /// The lane the job was dispatched in: `None` for the default backend, or the server
    /// of the records' override. A record found to belong to another lane is not sent
    /// ([`JobResult::Rerouted`]).
    pub lane: Option<Lane>,
}

impl std::fmt::Debug for Job {
    /// The records and the lane (the lane is an override's server: for tests, not logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("records", &self.records)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

/// What happened to a job's record.
pub enum JobResult {
    /// POSTed. When accepted, the file was deleted (`remove_error` says if that failed).
    Posted {
        outcome: Outcome,
        staged: Box<StagedRecord>,
        remove_error: Option<String>,
    },
    /// The file disappeared before it could be read.
    Vanished,
    /// The file is not a record this daemon may read or parse: quarantine it.
    Quarantine(String),
    /// A passing read error.
    Unreadable(String),
    /// Not attempted: sending was paused (backend gate closed, shutting down) while the job
    /// waited in the queue.
    Skipped,
    /// Not attempted: the OTLP batch reached `otlp_batch_max_bytes` before it (the event
    /// loop's choice of records is an estimate); it goes in a later batch.
    Deferred,
    /// Not attempted: the record's override sends it to another server than the job's
    /// lane; it goes in this lane (`None`: the default one).
    Rerouted(Option<Lane>),
}

/// What happened to one record of a job.
pub struct ItemResult {
    pub name: String,
    /// Bytes reserved in the rate limiter.
    pub size: u64,
    pub result: JobResult,
}

/// A worker's report on a job.
pub struct Completion {
    pub items: Vec<ItemResult>,
    pub elapsed: Duration,
    /// When the worker finished (wall clock: the status file's last delivery).
    pub finished: std::time::SystemTime,
    /// The job's lane.
    pub lane: Option<Lane>,
}

/// Read and parse a record; `Err` is the result to report.
fn load(job: &Job, name: &str) -> Result<StagedRecord, JobResult> {
    use super::pickup::{self, PickupError};
    let bytes = match pickup::read(&job.spool_dir, name) {
        Ok((b, _)) => b,
        Err(PickupError::Vanished) => return Err(JobResult::Vanished),
        Err(e) if e.is_permanent() => return Err(JobResult::Quarantine(e.to_string())),
        Err(e) => return Err(JobResult::Unreadable(e.to_string())),
    };
    libtelemetry::parse_staged(&bytes)
        .map_err(|e| JobResult::Quarantine(format!("cannot parse: {e}")))
}

/// The result of a POST for one record to a backend of `mode`, deleting its file once
/// accepted. An OTLP refusal that must not be retried quarantines the record (what counts is
/// the mode of the backend the record went to, which a `CFG:` override may change).
fn posted(
    job: &Job,
    name: &str,
    mode: DeliveryMode,
    outcome: Outcome,
    staged: StagedRecord,
) -> JobResult {
    if outcome.is_otlp_permanent() && mode == DeliveryMode::Otlp {
        return JobResult::Quarantine(format!(
            "the OTLP backend refused it ({})",
            outcome.detail()
        ));
    }
    let mut remove_error = None;
    if outcome.is_accepted() {
        match std::fs::remove_file(job.spool_dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => remove_error = Some(e.to_string()),
        }
    }
    JobResult::Posted {
        outcome,
        staged: Box::new(staged),
        remove_error,
    }
}

fn process(job: &Job, sender: &HttpSender) -> Vec<ItemResult> {
    let mut items = Vec::with_capacity(job.records.len());
    // Records that go in this job's OTLP batch, and its body, built as they are added.
    let mut batch: Vec<(String, u64, StagedRecord)> = Vec::new();
    let mut body = super::otlp::LogBatch::new(std::time::SystemTime::now());
    let max_bytes = job.target.otlp.as_ref().map_or(usize::MAX, |o| o.max_bytes);
    let mut full = false;
    for (name, size) in &job.records {
        let mut report = |result| {
            items.push(ItemResult {
                name: name.clone(),
                size: *size,
                result,
            })
        };
        if full {
            report(JobResult::Deferred);
            continue;
        }
        let staged = match load(job, name) {
            Ok(s) => s,
            Err(r) => {
                report(r);
                continue;
            }
        };
        let from = libtelemetry::parse_staged_name(name).unwrap_or(StagedSender::Unknown);
        let target = match target_for(&staged, from, &job.target, &job.paths) {
            Ok(t) => t,
            Err(e) if e.is_refused() => {
                report(JobResult::Quarantine(e.to_string()));
                continue;
            }
            Err(e) => {
                report(posted(
                    job,
                    name,
                    job.target.mode,
                    Outcome::Invalid(e.to_string()),
                    staged,
                ));
                continue;
            }
        };
        let lane = (target.is_override() && target.server != job.target.server)
            .then(|| Lane::from(target.server.as_str()));
        if lane != job.lane {
            report(JobResult::Rerouted(lane));
            continue;
        }
        if job.target.mode == DeliveryMode::Otlp && *target == *job.target {
            if body.add(&staged, max_bytes) {
                batch.push((name.clone(), *size, staged));
            } else {
                // Oldest first: the rest waits for the next batch too.
                full = true;
                report(JobResult::Deferred);
            }
            continue;
        }
        // A v2/v3 record, or an OTLP record overridden to another backend: alone.
        let outcome = sender.post(&target, &staged);
        report(posted(job, name, target.mode, outcome, staged));
    }
    if !batch.is_empty() {
        let outcome = match otlp_request_with_body(&job.target, body.finish()) {
            Ok(req) => sender.send(&job.target, &req),
            Err(e) => Outcome::Invalid(e.to_string()),
        };
        for (name, size, staged) in batch {
            let result = posted(job, &name, DeliveryMode::Otlp, outcome.clone(), staged);
            items.push(ItemResult { name, size, result });
        }
    }
    items
}

/// A fixed pool of worker threads processing jobs; completions go back through a channel.
///
/// The queue may hold more jobs than there are workers, so a worker starts its next record
/// without waiting for the event loop; at most `count` POSTs run at once. Jobs still queued
/// when sending is paused ([`Workers::set_paused`]) come back as [`JobResult::Skipped`].
pub struct Workers {
    jobs: mpsc::Sender<Job>,
    count: usize,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl Workers {
    /// `name` names the threads (`<name>-<n>`).
    pub fn start<E: Send + 'static>(
        name: &str,
        count: usize,
        sender: Arc<HttpSender>,
        done: mpsc::Sender<E>,
        wrap: fn(Completion) -> E,
    ) -> std::io::Result<Workers> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx: Arc<Mutex<mpsc::Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let count = count.max(1);
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for i in 0..count {
            let rx = Arc::clone(&rx);
            let paused = Arc::clone(&paused);
            let sender = Arc::clone(&sender);
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .stack_size(512 * 1024)
                .spawn(move || loop {
                    let job = {
                        let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                        match guard.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    let start = std::time::Instant::now();
                    let items = if paused.load(std::sync::atomic::Ordering::SeqCst) {
                        job.records
                            .iter()
                            .map(|(name, size)| ItemResult {
                                name: name.clone(),
                                size: *size,
                                result: JobResult::Skipped,
                            })
                            .collect()
                    } else {
                        process(&job, &sender)
                    };
                    let c = Completion {
                        items,
                        elapsed: start.elapsed(),
                        finished: std::time::SystemTime::now(),
                        lane: job.lane.clone(),
                    };
                    if done.send(wrap(c)).is_err() {
                        return;
                    }
                })?;
        }
        Ok(Workers {
            jobs,
            count,
            paused,
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Pause (or resume) sending: queued jobs not yet started are skipped.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Queue a job; `Err` gives it back when the workers are gone.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|e| e.0)
    }
}
