//! `capacity.json`: a capacity search (`flashlab capacity`) — what "sustainable" meant, every
//! trial with its measurements, per topology the answer, the knee and the component that
//! saturated first, the Universal Scalability Law fit over the topologies, and the headroom
//! answer. Each trial is a drill run directory beside it (`<topology>/trial-NN-RATE/`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::processes::Usage;

/// The whole search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRun {
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub commit: String,
    pub seed: u64,
    pub criteria: Criteria,
    pub search: Search,
    /// `--peak` and `--headroom`, when given.
    pub peak: Option<Peak>,
    pub topologies: Vec<TopologyResult>,
    /// Over the topologies of a `--sweep processors=…` (at least three points with answers).
    pub usl: Option<UslFit>,
    pub answer: Answer,
    /// Ctrl-C or the time budget ended the search early: what was measured stands.
    pub interrupted: bool,
    /// `--target URL`: load only, against an existing deployment.
    #[serde(default)]
    pub target: Option<String>,
}

/// What "sustainable" means for one trial at a constant open arrival rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Good answers ÷ arrivals, unserved arrivals counted as failures.
    pub availability: f64,
    /// Corrected p99 of `POST /buy`, ms.
    pub p99_ms: f64,
    /// Accepted → decided, p99, ms.
    pub time_to_decision_p99_ms: f64,
    /// Consumer lag "growing": its slope over the trial's second half above this share of the
    /// rate per second, and the last lag above one second of intake.
    pub lag_growth_share: f64,
    /// Dropped arrivals allowed (the generator's backlog full).
    pub max_dropped: u64,
}

/// How the search went about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The first trial's rate, orders/s.
    pub start_rate: f64,
    /// The highest rate tried.
    pub max_rate: f64,
    /// Bisection stops when fail ÷ pass − 1 is at most this (0.05: 5 %).
    pub resolution: f64,
    /// Seconds of load in a searching trial, and in the confirmation trial.
    pub trial_s: f64,
    pub confirm_s: f64,
    /// Trials repeated at the boundary when two at (about) the same rate disagree.
    pub repeats: u32,
    /// Wall-clock budget of one topology's search, seconds.
    pub budget_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Expected peak, orders/s.
    pub rate: f64,
    /// 0.3: 30 % above it.
    pub headroom: f64,
}

impl Peak {
    pub fn needed(&self) -> f64 {
        self.rate * (1.0 + self.headroom)
    }
}

/// Why a trial was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Grow,
    Bisect,
    Confirm,
    Repeat,
}

/// A trial's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialOutcome {
    /// Every criterion held, on enough evidence.
    Sustained,
    /// A criterion broke: the system did not sustain the rate.
    Failed,
    /// The trial could not judge: the generator fell off its schedule, too little evidence, or
    /// the drill could not run. Never counted as a pass or a fail.
    Invalid,
}

/// One trial: a drill at a constant rate on a fresh system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub index: usize,
    pub role: Role,
    /// Offered, orders/s.
    pub rate: f64,
    pub duration_s: f64,
    /// The trial's run directory, relative to the search's.
    pub dir: String,
    pub outcome: TrialOutcome,
    /// Why it failed or was invalid (the checks that broke, with their figures).
    pub reasons: Vec<String>,
    pub m: TrialMeasures,
}

/// What one trial measured. `None`: not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialMeasures {
    pub offered: u64,
    /// Arrivals started per second.
    pub started_rate: f64,
    /// Orders the gateway accepted (202) per second.
    pub accepted_rate: f64,
    /// Orders the processors decided per second over the load.
    pub decided_rate: Option<f64>,
    pub availability: Option<f64>,
    pub p99_ms: Option<f64>,
    pub service_p99_ms: Option<f64>,
    pub time_to_decision_p99_ms: Option<f64>,
    /// Consumer lag (messages, all processors): its slope over the second half (per second)
    /// and its last value.
    pub lag_slope_per_s: Option<f64>,
    pub lag_last: Option<f64>,
    pub dropped: u64,
    pub unserved: u64,
    /// The generator: its CPU in cores over the load, late arrivals, users up at the start.
    pub generator_cores: Option<f64>,
    pub late_arrivals: u64,
    pub users_ready: bool,
    /// Per process (from `processes.jsonl`) over the load.
    pub components: BTreeMap<String, Usage>,
    /// Redis commands per second and mean µs per command; the gateway's mean produce latency,
    /// ms; orders in flight in the processors (each processor's mean, and its 75th percentile
    /// over the scrapes, summed over the processors); the gateway's admission refusals.
    pub redis_ops_per_s: Option<f64>,
    pub redis_usec_per_call: Option<f64>,
    pub produce_ms: Option<f64>,
    pub processor_in_flight: Option<f64>,
    #[serde(default)]
    pub processor_in_flight_p75: Option<f64>,
    /// The processors' limit on orders in flight, summed, as they export it
    /// (`processor_orders_in_flight_limit`).
    #[serde(default)]
    pub processor_in_flight_limit: Option<f64>,
    /// Orders decided sold out over the load (the trial's stock ran out: it flatters the rate).
    #[serde(default)]
    pub sold_out: Option<u64>,
    pub admission_rejected: u64,
}

/// One topology's search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyResult {
    /// `processors=2`.
    pub label: String,
    pub gateways: usize,
    pub processors: usize,
    pub partitions: u32,
    pub trials: Vec<Trial>,
    /// The highest confirmed sustained rate; `None`: not even the start rate.
    pub sustainable: Option<f64>,
    /// The lowest rate that failed above it.
    pub first_failed: Option<f64>,
    /// ± relative uncertainty of the answer: the bisection's last gap, widened by the spread of
    /// repeated trials that disagreed.
    pub uncertainty: Option<f64>,
    pub knee: Option<Knee>,
    pub bottleneck: Option<Bottleneck>,
    /// Why the search of this topology ended.
    pub stopped: String,
    /// Trials that were invalid because of the generator: the answer is a lower bound.
    pub generator_bound: bool,
}

/// The knee of a curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// `kneedle` (Satopää et al., 2011) on the achieved-vs-offered curve.
    pub method: String,
    /// Offered rate at the knee, orders/s.
    pub rate: f64,
    /// The knee on the p99-vs-offered curve (convex, increasing), when it has one.
    pub latency_knee_rate: Option<f64>,
}

/// The component that saturated first, with the figures that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    pub component: String,
    /// e.g. "processor[0] at 0.97 cores at 1,600/s (0.41 at 400/s)".
    pub evidence: Vec<String>,
}

/// Universal Scalability Law: X(N) = λN / (1 + σ(N−1) + κN(N−1)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UslFit {
    /// The topology parameter swept (`processors`).
    pub parameter: String,
    /// (N, sustained orders/s) measured.
    pub points: Vec<(f64, f64)>,
    pub lambda: f64,
    pub sigma: f64,
    pub kappa: f64,
    /// Coefficient of determination on the measured throughputs.
    pub r2: f64,
    /// N at which adding more stops helping (√((1−σ)/κ)), and the throughput there.
    pub peak_n: Option<f64>,
    pub peak_rate: Option<f64>,
    /// The largest N the fit is trusted for (the data's own range, or twice it when the fit
    /// is good); predictions beyond it are refused.
    pub trusted_up_to: f64,
    pub note: String,
}

impl UslFit {
    /// The predicted throughput at `n`; `None` past what the data supports.
    pub fn predict(&self, n: f64) -> Option<f64> {
        (n >= 1.0 && n <= self.trusted_up_to + 1e-9).then(|| usl(self.lambda, self.sigma, self.kappa, n))
    }
}

/// X(N) of the law.
pub fn usl(lambda: f64, sigma: f64, kappa: f64, n: f64) -> f64 {
    lambda * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
}

/// The answer, a plain sentence first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub sentence: String,
    /// With `--peak`: whether the peak with headroom is met (exit 0 / 1); `None` without it or
    /// when the search could not answer (exit 2).
    pub peak_met: Option<bool>,
    /// The search produced at least one sustained answer.
    pub answered: bool,
}

pub fn write(path: &Path, run: &CapacityRun) -> Result<(), crate::RunDirError> {
    crate::io::write_json(path, run)
}

pub fn read(path: &Path) -> Result<CapacityRun, crate::RunDirError> {
    crate::io::read_json(path)
}
