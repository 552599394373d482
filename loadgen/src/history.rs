//! The history: one [`Attempt`] per request, streamed to `history.jsonl`, and the latency and
//! status statistics built from the same stream.
//!
//! A single [`Recorder`] task owns the file and the histograms, so users never contend on a lock:
//! they send attempts through a bounded channel (a slow disk slows the users down; nothing is
//! dropped). Per phase it keeps HdrHistograms of the corrected latency (from the *intended*
//! send time, as wrk2 does: a request that could not start on time is charged for its wait) and
//! of the service time (from the actual send), and per second of completion a compact interval
//! record (`load-intervals.jsonl`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::traffic::UserKind;

/// The outcome of a `503` answered with an HTML page (a maintenance page in front of the
/// system, not the gateway's JSON): nothing behind the front saw the request.
pub const MAINTENANCE: &str = "maintenance";

/// How many attempts may wait for the recorder before users wait.
pub const RECORDER_QUEUE: usize = 16 * 1024;
/// How long the recorder sleeps when it has nothing to write (at most this much of the queue
/// builds up meanwhile: 5 ms × the request rate, far below [`RECORDER_QUEUE`] at 100k/s).
const RECORDER_NAP: std::time::Duration = std::time::Duration::from_millis(5);
/// Latencies are recorded up to an hour, 3 significant digits, in microseconds.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Which request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /buy`.
    Buy,
    /// `GET /orders/{id}` (a buyer's poll).
    Status,
    /// An arrival the generator never sent: `error` says why (`dropped`: every user busy and
    /// the backlog full; `not_started`: the run ended first). A user the lab failed to serve is
    /// a failed request in availability, never left out.
    Unserved,
}

/// What an attempt says about the order (DESIGN.md): `ok` it was accepted (or answered),
/// `fail` it definitely had no effect, `info` unknown (a timeout or a reset after sending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Ok,
    Fail,
    Info,
}

/// One request, as `history.jsonl` holds it. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub op: Op,
    pub request_id: String,
    pub user: String,
    pub item: String,
    pub amount: u32,
    pub kind: UserKind,
    /// 1 for the first submission of a `request_id`, 2.. for the retries.
    pub attempt: u32,
    /// The phase's name.
    pub phase: String,
    #[serde(skip)]
    pub phase_index: usize,
    /// When it should have been sent (the arrival's due time, or the planned retry time).
    pub intended_us: u64,
    pub sent_us: u64,
    pub done_us: u64,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// `timeout`, `connect`, `reset`, ... when no answer came; [`MAINTENANCE`] beside a 503 that
    /// was a maintenance page (HTML) — the front's, not a gateway's answer.
    pub error: Option<String>,
    /// For a status poll: the order's status as answered (`PENDING`, `COMPLETED`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub order_status: Option<String>,
    pub class: Class,
}

impl Attempt {
    /// Corrected latency: done − intended.
    pub fn corrected_us(&self) -> u64 {
        self.done_us.saturating_sub(self.intended_us)
    }

    /// Service time: done − sent.
    pub fn service_us(&self) -> u64 {
        self.done_us.saturating_sub(self.sent_us)
    }

    /// The status code or error, as counted in the summary (`202`, `timeout`).
    pub fn outcome(&self) -> String {
        match (self.status, &self.error) {
            (Some(_), Some(e)) if e == MAINTENANCE => MAINTENANCE.into(),
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) => "unknown".into(),
        }
    }
}

/// p50/p95/p99/max of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// What the recorder knows of one phase's `POST /buy` attempts.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    pub attempts: u64,
    pub polls: u64,
    /// Arrivals recorded as [`Op::Unserved`].
    pub unserved: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub classes: BTreeMap<Class, u64>,
    pub corrected: Histogram<u64>,
    pub service: Histogram<u64>,
}

impl Default for PhaseRecord {
    fn default() -> Self {
        PhaseRecord {
            attempts: 0,
            polls: 0,
            unserved: 0,
            outcomes: BTreeMap::new(),
            classes: BTreeMap::new(),
            corrected: histogram(),
            service: histogram(),
        }
    }
}

impl PhaseRecord {
    fn add(&mut self, a: &Attempt) {
        match a.op {
            Op::Status => {
                self.polls += 1;
                return;
            }
            Op::Unserved => {
                self.unserved += 1;
                return;
            }
            Op::Buy => {}
        }
        self.attempts += 1;
        *self.outcomes.entry(a.outcome()).or_default() += 1;
        *self.classes.entry(a.class).or_default() += 1;
        let _ = self.corrected.record(a.corrected_us().clamp(1, HIST_MAX_US));
        let _ = self.service.record(a.service_us().clamp(1, HIST_MAX_US));
    }

    /// Adds another phase's record (for the run's total).
    pub fn merge(&mut self, other: &PhaseRecord) {
        self.attempts += other.attempts;
        self.polls += other.polls;
        self.unserved += other.unserved;
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.classes {
            *self.classes.entry(*k).or_default() += v;
        }
        let _ = self.corrected.add(&other.corrected);
        let _ = self.service.add(&other.service);
    }
}

/// One second of the run, by completion time (`load-intervals.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    /// Start of the second, ms since the Unix epoch.
    pub second_ms: u64,
    /// `POST /buy` attempts completed in it, by status or error.
    pub outcomes: BTreeMap<String, u64>,
    pub corrected: Percentiles,
    pub service: Percentiles,
}

/// What the recorder hands back at the end.
#[derive(Debug)]
pub struct Recorded {
    pub phases: Vec<PhaseRecord>,
    pub lines: u64,
}

/// The sending side: cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Attempt>,
}

impl Recorder {
    /// Starts the recorder task writing `dir/history.jsonl` and `dir/load-intervals.jsonl`.
    pub fn start(
        dir: &Path,
        phase_names: Vec<String>,
    ) -> std::io::Result<(Recorder, tokio::task::JoinHandle<std::io::Result<Recorded>>)> {
        let history = BufWriter::with_capacity(1 << 20, File::create(dir.join("history.jsonl"))?);
        let intervals = BufWriter::new(File::create(dir.join("load-intervals.jsonl"))?);
        let (tx, rx) = mpsc::channel(RECORDER_QUEUE);
        let task = tokio::task::spawn_blocking(move || record(rx, history, intervals, phase_names));
        Ok((Recorder { tx }, task))
    }

    /// Records one attempt; waits when the recorder is behind.
    pub async fn send(&self, attempt: Attempt) {
        if self.tx.send(attempt).await.is_err() {
            tracing::error!("the history recorder stopped early; an attempt is not recorded");
        }
    }
}

struct Current {
    second: u64,
    outcomes: BTreeMap<String, u64>,
    corrected: Histogram<u64>,
    service: Histogram<u64>,
}

impl Current {
    fn new(second: u64) -> Current {
        Current { second, outcomes: BTreeMap::new(), corrected: histogram(), service: histogram() }
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let interval = Interval {
            second_ms: self.second * 1000,
            outcomes: self.outcomes.clone(),
            corrected: Percentiles::of(&self.corrected),
            service: Percentiles::of(&self.service),
        };
        serde_json::to_writer(&mut *out, &interval)?;
        out.write_all(b"\n")
    }
}

/// The recorder's loop (a blocking thread: it writes files). Ends when every sender is gone.
fn record(
    mut rx: mpsc::Receiver<Attempt>,
    mut history: BufWriter<File>,
    mut intervals: BufWriter<File>,
    phase_names: Vec<String>,
) -> std::io::Result<Recorded> {
    let mut phases = vec![PhaseRecord::default(); phase_names.len()];
    let mut current: Option<Current> = None;
    let mut lines = 0u64;
    loop {
        // Drain what is there, then nap: parking and waking this thread for every attempt
        // (a futex per request) cost more than the writing itself.
        let mut attempt = match rx.try_recv() {
            Ok(attempt) => attempt,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                std::thread::sleep(RECORDER_NAP);
                continue;
            }
        };
        if let Some(name) = phase_names.get(attempt.phase_index) {
            attempt.phase.clone_from(name);
        }
        serde_json::to_writer(&mut history, &attempt)?;
        history.write_all(b"\n")?;
        lines += 1;
        if let Some(phase) = phases.get_mut(attempt.phase_index) {
            phase.add(&attempt);
        }
        if attempt.op == Op::Buy {
            let second = attempt.done_us / 1_000_000;
            let cur = current.get_or_insert_with(|| Current::new(second));
            if second > cur.second {
                cur.write(&mut intervals)?;
                *cur = Current::new(second);
            }
            *cur.outcomes.entry(attempt.outcome()).or_default() += 1;
            let _ = cur.corrected.record(attempt.corrected_us().clamp(1, HIST_MAX_US));
            let _ = cur.service.record(attempt.service_us().clamp(1, HIST_MAX_US));
        }
    }
    if let Some(cur) = &current {
        cur.write(&mut intervals)?;
    }
    history.flush()?;
    intervals.flush()?;
    history.get_ref().sync_all()?;
    Ok(Recorded { phases, lines })
}
