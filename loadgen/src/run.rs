//! One load run: the arrival feeder, the goose attack that plays the orders, the recorder, the
//! progress line, and the summary (`load-summary.json`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use goose::config::GooseConfiguration;
use goose::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use hdrhistogram::Histogram;

use crate::history::{histogram, Percentiles, PhaseRecord, Recorder};
use crate::schedule::ArrivalSchedule;
use crate::traffic::Traffic;
use crate::users::{self, unix_us_now, Behaviour, Clock, Shared};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    pub schedule: ArrivalSchedule,
    pub traffic: Traffic,
    pub behaviour: Behaviour,
    /// Where `history.jsonl`, `load-intervals.jsonl` and `load-summary.json` go.
    pub out: PathBuf,
    /// goose users: the most requests in flight at once.
    pub max_in_flight: usize,
    /// Arrivals that may wait for a free user; beyond this they are dropped (and counted).
    pub max_backlog: usize,
    /// After the schedule, how long the users may take to finish; arrivals still waiting then
    /// are counted as not started.
    pub drain: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// Counters a caller can watch while the run goes (a drill's abort condition).
    pub live: Option<Arc<Live>>,
}

/// `POST /buy` answers so far, good and bad as DESIGN.md counts availability: good are 2xx,
/// 409 (a true duplicate), 429 (a user over the limit) and 400 (invalid input); bad are the
/// other 5xx and 4xx, timeouts and connection errors.
#[derive(Debug, Default)]
pub struct Live {
    pub good: AtomicU64,
    pub bad: AtomicU64,
    /// When the schedule's clock started (arrival 0 is due then): set once every user is up.
    /// A fault timeline that must line up with the load waits for it.
    pub clock_start: std::sync::OnceLock<Instant>,
}

impl Live {
    /// Waits (at most `limit`) until the schedule's clock has started; its start.
    pub async fn started(&self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(start) = self.clock_start.get() {
                return Some(*start);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a `POST /buy` answer counts as good.
    pub fn is_good(status: Option<u16>) -> bool {
        matches!(status, Some(200..=299 | 400 | 409 | 429))
    }
}

/// Per-phase figures in `load-summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub name: String,
    /// `warm:20s@100`.
    pub spec: String,
    pub duration_s: f64,
    /// Arrivals the schedule offered.
    pub offered: u64,
    /// Arrivals started (each one order; a retrier's retries and an abuser's burst belong to it).
    pub started: u64,
    /// Arrivals dropped because every user was busy and the backlog was full.
    pub dropped: u64,
    /// Arrivals still waiting when the drain ended.
    pub not_started: u64,
    /// Arrivals started per second of the phase.
    pub achieved_rate: f64,
    /// `POST /buy` requests (retries and bursts included) and `GET /orders` polls.
    pub buy_requests: u64,
    pub polls: u64,
    /// `POST /buy` requests by status code or error (`202`, `429`, `timeout`).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// By class: ok, fail, info.
    pub classes: std::collections::BTreeMap<String, u64>,
    /// From the intended send time (coordinated omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time.
    pub service: Percentiles,
}

/// goose's own view, as a cross-check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GooseCrossCheck {
    /// Requests goose counted, by request name.
    pub requests: std::collections::BTreeMap<String, u64>,
    pub mean_ms: std::collections::BTreeMap<String, f64>,
    pub max_ms: std::collections::BTreeMap<String, f64>,
    pub users: usize,
}

/// `load-summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSummary {
    pub target: String,
    pub seed: u64,
    pub mix: String,
    pub phases_spec: String,
    pub started_unix_ms: u64,
    pub ended_unix_ms: u64,
    /// Interrupted (Ctrl-C / SIGTERM) before the schedule ended.
    pub interrupted: bool,
    pub history_lines: u64,
    pub phases: Vec<PhaseSummary>,
    pub total: PhaseSummary,
    pub goose: Option<GooseCrossCheck>,
    /// Whether the generator kept its own schedule (absent in runs recorded before it existed).
    #[serde(default)]
    pub generator: Option<GeneratorHealth>,
}

/// The generator's own health: was it, not the system, the bottleneck? The feeder hands each
/// arrival to the backlog without waiting on the system, so its lateness is the generator's
/// alone (CPU starvation of the lab process); a backlog with users free is the same sign.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorHealth {
    /// How late the feeder offered arrivals, from their due time.
    pub feeder_late: Percentiles,
    /// Arrivals offered at least `LATE_MS` late.
    pub late_arrivals: u64,
    /// The most arrivals waiting for a free user at once (sampled each 100 ms).
    pub peak_backlog: u64,
    /// Of the samples with arrivals waiting, how many found a user free (the generator slow to
    /// take work, not the system slow to answer).
    pub backlog_with_free_users: u64,
    pub backlog_samples: u64,
    /// The most requests in flight at once (sampled), of `max_in_flight`.
    pub peak_in_flight: u64,
    pub max_in_flight: u64,
    /// Users up when the clock started, of `max_in_flight` (fewer: the wait for them ran out),
    /// and how long goose took to start them.
    pub users_ready_at_start: u64,
    pub users_ready_ms: u64,
    /// CPU seconds the lab process used over the run (Linux `/proc/self/stat`; 0 elsewhere).
    pub process_cpu_s: f64,
    pub wall_s: f64,
}

/// An arrival offered this much after its due time counts as late (a shared 2-core machine
/// stalls a runtime for tens of milliseconds now and then; a starved generator falls seconds
/// behind).
pub const LATE_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("goose: {0}")]
    Goose(String),
}

/// Whether a stop was asked for by a Ctrl-C caught while a run went (goose catches SIGINT
/// itself from its first run on, so a caller's own SIGINT handler may never see it).
pub fn stop_requested() -> bool {
    goose::is_killswitch_triggered()
}

/// Polls that may wait for a free user.
const POLL_QUEUE: usize = 10_000;

/// The schedule's clock starts this long after the users are up.
const START_DELAY: Duration = Duration::from_millis(50);
/// The longest the feeder waits for goose to start every user. goose builds an HTTP client per
/// user: 512 users take 5–7 s in a debug build on 2 busy cores (10 s was once not enough, and
/// the clock started with users missing: the first second's arrivals waited for them).
const USERS_READY_LIMIT: Duration = Duration::from_secs(60);

/// A target spoken to without TLS (`http://`), where no certificate is ever verified.
fn plain_http(target: &str) -> bool {
    target.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// Runs the schedule against the target; returns when every started order is done (bounded
/// by the drain) or `stop` fires (the history is flushed either way).
pub async fn run(config: LoadConfig, stop: impl std::future::Future<Output = ()>) -> Result<LoadSummary, LoadError> {
    if config.max_in_flight == 0 || config.max_backlog == 0 {
        return Err(LoadError::Config("--max-in-flight and --max-backlog must be at least 1".into()));
    }
    std::fs::create_dir_all(&config.out)
        .map_err(|source| LoadError::Io { path: config.out.display().to_string(), source })?;
    let phases = &config.schedule.phases;
    let names: Vec<String> = phases.iter().map(|p| p.name.clone()).collect();
    let (recorder, recorded) = Recorder::start(&config.out, names.clone())
        .map_err(|source| LoadError::Io { path: config.out.display().to_string(), source })?;

    let (backlog_tx, backlog_rx) = flume::bounded(config.max_backlog);
    let counters = || phases.iter().map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let shared = Arc::new(Shared {
        backlog: backlog_rx,
        polls: flume::bounded(POLL_QUEUE),
        traffic: config.traffic.clone(),
        behaviour: config.behaviour.clone(),
        recorder,
        live: config.live.clone().unwrap_or_default(),
        clock: std::sync::OnceLock::new(),
        ready: std::sync::atomic::AtomicUsize::new(0),
        in_flight: AtomicI64::new(0),
        started: counters(),
        not_started: counters(),
        errors: AtomicU64::new(0),
    });
    let offered: Arc<Vec<AtomicU64>> = Arc::new(counters());
    let dropped: Arc<Vec<AtomicU64>> = Arc::new(counters());

    let users = config.max_in_flight.to_string();
    let increase_rate = (config.max_in_flight * 10).to_string();
    let timeout = format!("{}", config.behaviour.timeout.as_secs_f64().max(0.001));
    let mut args = vec![
        "--host",
        &config.target,
        "--users",
        &users,
        // All users within ~0.1 s.
        "--increase-rate",
        &increase_rate,
        // One iteration each: the transaction loops over arrivals until the backlog closes.
        "--iterations",
        "1",
        "--quiet",
        "--no-print-metrics",
        "--no-error-summary",
        "--no-telnet",
        "--co-mitigation",
        "disabled",
        "--timeout",
        &timeout,
    ];
    if plain_http(&config.target) {
        // goose builds one HTTP client per user, and a client that verifies certificates loads
        // the machine's CA store as it is built: 256 users took 3.3 s in a debug build, before
        // the schedule's clock could start. Plain HTTP verifies no certificate, so the verifier
        // is left out (256 clients: 2 ms). An https target keeps it. (A redirect from plain HTTP
        // to https would go unverified; the gateway never redirects.)
        args.push("--accept-invalid-certs");
    }
    let goose_config = GooseConfiguration::parse_args_default(&args).map_err(|e| LoadError::Goose(e.to_string()))?;
    let scenario = scenario!("flash-sale").register_transaction(users::transaction(shared.clone()));
    let attack = GooseAttack::initialize_with_config(goose_config)
        .map_err(|e| LoadError::Goose(e.to_string()))?
        .register_scenario(scenario);

    // Dropped arrivals' history records, kept aside by the feeder (it must not wait on the
    // recorder) and written below — also when a stop aborts the feeder.
    let dropped_records: Arc<std::sync::Mutex<Vec<crate::history::Attempt>>> = Arc::default();
    let cpu_at_start = crate::procstat::cpu_s(None);
    let wall_start = Instant::now();
    let lateness = Arc::new(std::sync::Mutex::new(histogram()));
    let samples: Arc<std::sync::Mutex<GeneratorHealth>> = Arc::default();
    let feeder = tokio::spawn(feed(
        config.clone(),
        backlog_tx,
        shared.clone(),
        offered.clone(),
        dropped.clone(),
        dropped_records.clone(),
        lateness.clone(),
        samples.clone(),
    ));
    let sampler = tokio::spawn(sample_generator(shared.clone(), samples.clone()));
    let progress = config.progress.then(|| tokio::spawn(progress(config.clone(), shared.clone(), offered.clone())));

    // The whole run is bounded: schedule + drain + the longest a started order can take.
    let behaviour = &config.behaviour;
    let longest_order = behaviour.timeout * (behaviour.retries + behaviour.abuse_burst + behaviour.polls + 2)
        + behaviour.retry_base * 2u32.pow(behaviour.retries.min(16))
        + behaviour.poll_interval * behaviour.polls;
    let limit = USERS_READY_LIMIT + START_DELAY + config.schedule.duration() + config.drain + longest_order;
    let execute = tokio::time::timeout(limit, attack.execute());
    tokio::pin!(execute);
    tokio::pin!(stop);
    let mut stopping = false;
    let outcome = loop {
        // `stop` first, always: its signal handlers are registered before goose installs its
        // own SIGINT handler (the `ctrlc` crate, which replaces the process's handler). A Ctrl-C
        // then reaches goose alone, which stops cleanly. The other order chained the two
        // handlers: both saw the one Ctrl-C, and when ours triggered the killswitch first,
        // goose took its own as a second Ctrl-C and exited at once with code 1, the history
        // unwritten (a clean-clone CI run: `ctrl_c_mid_run_flushes_a_complete_history`).
        tokio::select! {
            biased;
            () = &mut stop, if !stopping => {
                // Users finish the order in hand and take no new one; goose then returns.
                stopping = true;
                goose::trigger_killswitch("flashlab load: stopped");
            }
            outcome = &mut execute => break outcome,
        }
    };
    let goose_metrics = match outcome {
        Ok(Ok(metrics)) => Some(metrics),
        Ok(Err(e)) => return Err(LoadError::Goose(e.to_string())),
        Err(_) => {
            tracing::error!(?limit, "the attack outlived its bound; stopping it");
            goose::trigger_killswitch("flashlab load: over its time bound");
            None
        }
    };
    let interrupted = goose::is_killswitch_triggered();
    // Finished already unless the run was cut short; `true` when every arrival was offered.
    feeder.abort();
    let fed_all = matches!(feeder.await, Ok(true));
    let kept: Vec<crate::history::Attempt> =
        std::mem::take(&mut *dropped_records.lock().unwrap_or_else(|p| p.into_inner()));
    for attempt in kept {
        shared.recorder.send(attempt).await;
    }
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    sampler.abort();
    let _ = sampler.await;
    let generator = {
        let mut g = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let late = lateness.lock().unwrap_or_else(|p| p.into_inner());
        g.feeder_late = Percentiles::of(&late);
        g.late_arrivals =
            if late.is_empty() { 0 } else { late.count_between(LATE_MS * 1000, late.max().max(LATE_MS * 1000)) };
        g.max_in_flight = config.max_in_flight as u64;
        g.process_cpu_s = (crate::procstat::cpu_s(None) - cpu_at_start).max(0.0);
        g.wall_s = wall_start.elapsed().as_secs_f64();
        g
    };
    // Arrivals queued but never taken: not started.
    let clock = shared.clock.get().copied();
    while let Ok(arrival) = shared.backlog.try_recv() {
        shared.not_started[arrival.phase].fetch_add(1, Ordering::Relaxed);
        if let Some(clock) = &clock {
            shared.recorder.send(users::unserved(&shared.traffic, clock, &arrival, "not_started")).await;
        }
    }
    let load = |counters: &[AtomicU64]| counters.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
    let counts = Counts {
        offered: load(&offered),
        started: load(&shared.started),
        dropped: load(&dropped),
        not_started: load(&shared.not_started),
    };
    // The users' senders go with `shared` (goose's copies went when it returned; users cut
    // off by the bound stop at the killswitch); then the recorder finishes writing.
    drop(shared);
    let recorded = tokio::time::timeout(longest_order + Duration::from_secs(10), recorded)
        .await
        .map_err(|_| LoadError::Goose("the history recorder did not finish".into()))?
        .map_err(|e| LoadError::Goose(format!("recorder: {e}")))?
        .map_err(|source| LoadError::Io { path: config.out.join("history.jsonl").display().to_string(), source })?;
    let interrupted = interrupted || !fed_all;
    let start_unix_us = clock.map(|c| c.start_unix_us).unwrap_or_else(unix_us_now);
    let mut summary = summarize(&config, start_unix_us, interrupted, &recorded, &counts, goose_metrics.as_ref());
    summary.generator = Some(generator);
    let path = config.out.join("load-summary.json");
    let text = serde_json::to_string_pretty(&summary).expect("a summary serializes");
    std::fs::write(&path, text).map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
    Ok(summary)
}

/// Waits (bounded) for the goose users to be up, starts the clock, then puts each arrival in
/// the backlog when it is due and counts what does not fit. `true` once every arrival was
/// offered.
async fn feed(
    config: LoadConfig,
    backlog: flume::Sender<crate::schedule::Arrival>,
    shared: Arc<Shared>,
    offered: Arc<Vec<AtomicU64>>,
    dropped: Arc<Vec<AtomicU64>>,
    dropped_records: Arc<std::sync::Mutex<Vec<crate::history::Attempt>>>,
    lateness: Arc<std::sync::Mutex<Histogram<u64>>>,
    health: Arc<std::sync::Mutex<GeneratorHealth>>,
) -> bool {
    let waiting = Instant::now();
    while shared.ready.load(Ordering::Relaxed) < config.max_in_flight && waiting.elapsed() < USERS_READY_LIMIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    {
        let mut g = health.lock().unwrap_or_else(|p| p.into_inner());
        g.users_ready_at_start = shared.ready.load(Ordering::Relaxed) as u64;
        g.users_ready_ms = waiting.elapsed().as_millis() as u64;
    }
    let start = Instant::now() + START_DELAY;
    let clock = Clock {
        start,
        start_unix_us: unix_us_now() + START_DELAY.as_micros() as u64,
        give_up_at: start + config.schedule.duration() + config.drain,
    };
    let _ = shared.clock.set(clock);
    let clock = shared.clock.get().copied().unwrap_or(clock);
    let _ = shared.live.clock_start.set(clock.start);
    let traffic = shared.traffic.clone();
    drop(shared);
    let burn = burn_per_arrival();
    for arrival in config.schedule.arrivals(config.traffic.seed) {
        let due = clock.start + arrival.due;
        let now = Instant::now();
        if now < due {
            tokio::time::sleep_until(due).await;
        }
        let late_us = Instant::now().saturating_duration_since(due).as_micros() as u64;
        lateness.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(late_us.max(1));
        if !burn.is_zero() {
            // A deliberately slow generator (the knob below): CPU spent on this thread per arrival.
            let t = std::time::Instant::now();
            while t.elapsed() < burn {
                std::hint::spin_loop();
            }
        }
        offered[arrival.phase].fetch_add(1, Ordering::Relaxed);
        if backlog.try_send(arrival).is_err() {
            dropped[arrival.phase].fetch_add(1, Ordering::Relaxed);
            // Kept for the runner to record (bounded by the schedule's arrival count).
            let record = users::unserved(&traffic, &clock, &arrival, "dropped");
            dropped_records.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        }
    }
    // Returning drops the sender: the backlog closes, users finish what is queued, then stop.
    true
}

/// `FLASHLAB_GENERATOR_BURN_US` (default 0): microseconds of CPU the feeder burns per arrival
/// — a test knob that makes the generator, not the system, the bottleneck, so that the lab's
/// detection of it can be proven. Bounded at 100 ms.
pub const BURN_ENV: &str = "FLASHLAB_GENERATOR_BURN_US";

fn burn_per_arrival() -> Duration {
    let us = std::env::var(BURN_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    Duration::from_micros(us.min(100_000))
}

/// Every 100 ms: the backlog, the requests in flight, and whether arrivals waited while a user
/// was free. Runs until aborted.
async fn sample_generator(shared: Arc<Shared>, into: Arc<std::sync::Mutex<GeneratorHealth>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if shared.clock.get().is_none() {
            continue;
        }
        let backlog = shared.backlog.len() as u64;
        let in_flight = shared.in_flight.load(Ordering::Relaxed).max(0) as u64;
        let ready = shared.ready.load(Ordering::Relaxed) as u64;
        let mut g = into.lock().unwrap_or_else(|p| p.into_inner());
        g.peak_backlog = g.peak_backlog.max(backlog);
        g.peak_in_flight = g.peak_in_flight.max(in_flight);
        if backlog > 0 {
            g.backlog_samples += 1;
            if in_flight < ready {
                g.backlog_with_free_users += 1;
            }
        }
    }
}

async fn progress(config: LoadConfig, shared: Arc<Shared>, offered: Arc<Vec<AtomicU64>>) {
    let start = loop {
        if let Some(clock) = shared.clock.get() {
            break clock.start;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let starts = config.schedule.phase_starts();
    let mut last_started = 0u64;
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        let phase = starts.iter().rposition(|s| *s <= elapsed).unwrap_or(0);
        let phase_name = config.schedule.phases.get(phase).map(|p| p.name.as_str()).unwrap_or("drain");
        let started: u64 = shared.started.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let total_offered: u64 = offered.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        eprintln!(
            "[{phase_name} {}/{}] {:>6.1}s  offered {total_offered}  started {}/s  in-flight {}  backlog {}  errors {}",
            phase + 1,
            config.schedule.phases.len(),
            elapsed.as_secs_f64(),
            started - last_started,
            shared.in_flight.load(Ordering::Relaxed),
            shared.backlog.len(),
            shared.errors.load(Ordering::Relaxed),
        );
        last_started = started;
    }
}

fn phase_summary(name: &str, spec: String, duration: Duration, counts: [u64; 4], record: &PhaseRecord) -> PhaseSummary {
    let [offered, started, dropped, not_started] = counts;
    PhaseSummary {
        name: name.to_string(),
        spec,
        duration_s: duration.as_secs_f64(),
        offered,
        started,
        dropped,
        not_started,
        achieved_rate: if duration.is_zero() { 0.0 } else { started as f64 / duration.as_secs_f64() },
        buy_requests: record.attempts,
        polls: record.polls,
        outcomes: record.outcomes.clone(),
        classes: record.classes.iter().map(|(k, v)| (format!("{k:?}").to_lowercase(), *v)).collect(),
        corrected: Percentiles::of(&record.corrected),
        service: Percentiles::of(&record.service),
    }
}

/// Per-phase arrival counters at the end of a run.
struct Counts {
    offered: Vec<u64>,
    started: Vec<u64>,
    dropped: Vec<u64>,
    not_started: Vec<u64>,
}

fn summarize(
    config: &LoadConfig,
    start_unix_us: u64,
    interrupted: bool,
    recorded: &crate::history::Recorded,
    counts: &Counts,
    goose: Option<&GooseMetrics>,
) -> LoadSummary {
    let phases = &config.schedule.phases;
    let mut total = PhaseRecord::default();
    let mut sums = [0u64; 4];
    let mut out = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let record = recorded.phases.get(i).cloned().unwrap_or_default();
        total.merge(&record);
        let these = [counts.offered[i], counts.started[i], counts.dropped[i], counts.not_started[i]];
        for (s, c) in sums.iter_mut().zip(these) {
            *s += c;
        }
        out.push(phase_summary(&phase.name, phase.to_string(), phase.duration, these, &record));
    }
    let spec = phases.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
    LoadSummary {
        target: config.target.clone(),
        seed: config.traffic.seed,
        mix: config.traffic.mix.to_string(),
        phases_spec: spec.clone(),
        started_unix_ms: start_unix_us / 1000,
        ended_unix_ms: unix_us_now() / 1000,
        interrupted,
        history_lines: recorded.lines,
        total: phase_summary("total", spec, config.schedule.duration(), sums, &total),
        phases: out,
        goose: goose.map(cross_check),
        generator: None,
    }
}

fn cross_check(metrics: &GooseMetrics) -> GooseCrossCheck {
    let mut check = GooseCrossCheck {
        requests: Default::default(),
        mean_ms: Default::default(),
        max_ms: Default::default(),
        users: metrics.maximum_users,
    };
    for (name, aggregate) in &metrics.requests {
        let data = &aggregate.raw_data;
        check.requests.insert(name.clone(), data.counter as u64);
        let mean = if data.counter == 0 { 0.0 } else { data.total_time_us as f64 / data.counter as f64 / 1000.0 };
        check.mean_ms.insert(name.clone(), mean);
        check.max_ms.insert(name.clone(), data.maximum_time_us as f64 / 1000.0);
    }
    check
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_http_leaves_the_certificate_verifier_out() {
        assert!(super::plain_http("http://127.0.0.1:8080"));
        assert!(super::plain_http("HTTP://[::1]:80"));
        assert!(!super::plain_http("https://127.0.0.1:8443"));
        assert!(!super::plain_http("http:/"));
        assert!(!super::plain_http(""));
    }
}
