//! The scenario file: the system's shape, the traffic, the fault timeline and what must hold.
//! TOML, documented field by field in `scenarios/README.md`. Unknown fields and bad values are
//! errors naming the file, the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos::faults::{Directions, Target};
use chaos::proxy::Toxic;
use chaos::{Action, Fault};
use loadgen::{ArrivalSchedule, UserMix};
use serde::{Deserialize, Serialize};

use chaos::faults::{duration_text, option_duration_text};

pub mod alerts;
pub mod release;
pub use alerts::{Alerts, Expectation};
pub use release::{DeployTarget, Gate, Release};

/// A parsed scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the run directory is `runs/<name>-<utc time>`.
    pub name: String,
    /// What incident it replays, for people.
    pub description: String,
    /// Seeds the traffic and the proxies.
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default)]
    pub topology: Topology,
    /// Extra environment for every flash-sale service (e.g. `CIRCUIT_BREAKER_BASE_TIMEOUT`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Initial stock per item.
    pub stock: BTreeMap<String, u64>,
    /// Shrink the stock with `--scale` as the number of orders shrinks (factor², rates and
    /// durations both scale), so a drill that sells out sells out at the same point of its
    /// timeline at any scale. Default false: the stock is as written.
    #[serde(default)]
    pub scale_stock: bool,
    pub load: Load,
    /// The fault timeline, offsets from the start of the load.
    #[serde(default)]
    pub faults: Vec<TimelineEntry>,
    #[serde(default)]
    pub steady_state: SteadyState,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default)]
    pub invariants: Invariants,
    /// How much evidence a check needs before it may pass.
    #[serde(default)]
    pub evidence: EvidenceNeeded,
    /// Stop the faults early when the error rate burns faster than this.
    #[serde(default)]
    pub abort: Option<Abort>,
    /// The monitoring, and the alerts that must detect the faults.
    #[serde(default)]
    pub alerts: Alerts,
    /// The candidate build `deploy` entries put out, and the canary gate that rolls it back.
    #[serde(default)]
    pub release: Option<Release>,
    /// Kubernetes-style auto-recovery of the services (`chaos::supervisor`); absent: none.
    #[serde(default)]
    pub supervisor: Option<chaos::supervisor::SupervisorConfig>,
    /// After the load, how long the system may take to finish every order.
    #[serde(default = "drain_default", with = "duration_text")]
    pub drain_timeout: Duration,
}

fn one() -> u64 {
    1
}

fn drain_default() -> Duration {
    Duration::from_secs(60)
}

/// How many of each component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default = "one_usize")]
    pub gateways: usize,
    #[serde(default = "one_usize")]
    pub processors: usize,
    /// Partitions of the `orders` topic.
    #[serde(default = "three")]
    pub partitions: u32,
    /// Replicas of Redis, with three sentinels watching the primary (the services find it
    /// through them); 0: one Redis, no Sentinel.
    #[serde(default)]
    pub redis_replicas: usize,
    /// With replicas: how long the primary may not answer before a sentinel thinks it down
    /// (Sentinel's `down-after-milliseconds`; scaled with `--scale`, like the supervisor's
    /// periods — the deployment's settings, not the system's own timeouts; at least
    /// [`chaos::components::SENTINEL_MIN_DOWN_AFTER`], 2 s, as written and as scaled).
    #[serde(default = "sentinel_down_after", with = "duration_text")]
    pub sentinel_down_after: Duration,
    /// Where the components run: `processes` (loopback, the default) or `containers` (a Docker
    /// network of the run's own; docs/runtimes.md). `flashlab drill --runtime` overrides it.
    #[serde(default)]
    pub runtime: chaos::testbed::RuntimeKind,
}

fn sentinel_down_after() -> Duration {
    Duration::from_secs(5)
}

fn one_usize() -> usize {
    1
}

fn three() -> u32 {
    3
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            gateways: 1,
            processors: 1,
            partitions: 3,
            redis_replicas: 0,
            sentinel_down_after: sentinel_down_after(),
            runtime: chaos::testbed::RuntimeKind::Processes,
        }
    }
}

/// The traffic (the generator's options).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// `NAME:DURATION@RATE` phases, as `flashlab load --phases`.
    pub phases: String,
    #[serde(default = "default_mix")]
    pub mix: String,
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Distinct buyers.
    #[serde(default = "default_buyers")]
    pub buyers: u64,
    #[serde(default = "default_polls")]
    pub polls: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_burst")]
    pub abuse_burst: u32,
}

fn default_mix() -> String {
    "buyer=90,retrier=5,abuser=4,invalid=1".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_in_flight() -> usize {
    256
}
fn default_buyers() -> u64 {
    100_000
}
fn default_polls() -> u32 {
    2
}
fn default_retries() -> u32 {
    3
}
fn default_burst() -> u32 {
    20
}

/// One entry of the timeline: a fault from the injector's catalogue, or a lab action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// When, from the start of the load.
    #[serde(with = "duration_text")]
    pub at: Duration,
    /// How long the fault lasts (healed after); none for instant faults and actions.
    #[serde(default, rename = "for", with = "option_duration_text")]
    pub duration: Option<Duration>,
    /// A fault (`kill`, `terminate`, `pause`, `restart`, `latency`, `bandwidth`, `blackhole`,
    /// `reset`, `slow_close`, `slicer`, `limit_data`, `down`, `payment_timeout`,
    /// `payment_failures`, `payment_outage`, `payment_capture_then_timeout`, `redis_stall`,
    /// `redis_loss`, `cpu`, `memory`, `partition`) or an action (`backup`, `dlq_replay`, `reconcile_fix`,
    /// `redis_failover`, `degrade_on`, `degrade_off`, `deploy`, `rollback`).
    pub kind: String,
    /// `redis`, `broker`, `payment`, `gateway[N]`, `processor[N]` (faults); `processor[N]`,
    /// `gateway[N]`, `processors`, `gateways` (`deploy`; `rollback`, default every instance
    /// of the candidate).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default, with = "option_duration_text")]
    pub latency: Option<Duration>,
    #[serde(default, with = "option_duration_text")]
    pub jitter: Option<Duration>,
    #[serde(default, with = "option_duration_text")]
    pub delay: Option<Duration>,
    /// upstream, downstream, both (network faults).
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub toxicity: Option<f64>,
    /// Bytes per second (bandwidth), bytes (slicer, limit_data).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Failure share (payment_failures).
    #[serde(default)]
    pub rate: Option<f64>,
    /// cpu: the quota, in cores (0.1: 10 ms of CPU every 100 ms).
    #[serde(default)]
    pub cores: Option<f64>,
    /// memory: the limit on the component's memory cgroup, e.g. "32MiB".
    #[serde(default)]
    pub limit: Option<String>,
    /// memory: stop the component and start it again inside the limit.
    #[serde(default)]
    pub restart: bool,
    /// redis_loss: restore from the last `backup` action.
    #[serde(default)]
    pub restore: bool,
    /// degrade_on: orders/s each gateway admits while degraded (`flashsale degrade on --admit`).
    #[serde(default)]
    pub admit: Option<u32>,
    /// partition (containers only): cut the target from this one peer (`redis`, `broker`,
    /// `payment`); without it the target is cut off the run's network.
    #[serde(default)]
    pub from: Option<String>,
}

/// What a timeline entry does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Fault(Fault),
    /// `flashsale backup` to the run directory (`backup.jsonl`).
    Backup,
    /// `flashsale dlq replay`.
    DlqReplay,
    /// `flashsale reconcile --fix`.
    ReconcileFix,
    /// The operator's failover of a replicated Redis: `SENTINEL FAILOVER`, then the wait for
    /// another primary (needs `topology.redis_replicas`).
    RedisFailover,
    /// The degradation switch (`flashsale degrade on [--admit N]` / `off`), then the wait until
    /// every gateway shows the mode on `/metrics`.
    Degrade {
        on: bool,
        admit: Option<u32>,
    },
    /// `[release]`'s candidate put on these instances, one after another; skipped once the
    /// gate rolled the candidate back (the rollout halts).
    Deploy(DeployTarget),
    /// These instances (default: every one running the candidate) back to the release.
    Rollback(DeployTarget),
}

/// Checked before the first fault and after the last (with the recovery time allowed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// Share of good answers (DESIGN.md's definition).
    #[serde(default = "three_nines")]
    pub availability: f64,
    /// Corrected p99 limit, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Every component's health endpoint answers before the load starts.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// After the last fault ends, the system has this long to recover before the "after"
    /// window is judged.
    #[serde(default = "recovery_default", with = "duration_text")]
    pub recovery: Duration,
}

fn three_nines() -> f64 {
    0.999
}
fn yes() -> bool {
    true
}
fn recovery_default() -> Duration {
    Duration::from_secs(10)
}

impl Default for SteadyState {
    fn default() -> Self {
        SteadyState { availability: 0.999, p99_ms: None, healthy: true, recovery: recovery_default() }
    }
}

/// Service-level objectives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Overall availability target.
    #[serde(default = "three_nines")]
    pub availability: f64,
    /// Availability outside the fault windows.
    #[serde(default)]
    pub availability_outside_faults: Option<f64>,
    /// Availability during the fault windows (often lower by design).
    #[serde(default)]
    pub availability_during_faults: Option<f64>,
    /// Corrected p95 / p99 limits per phase, ms.
    #[serde(default)]
    pub p95_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Phases the latency limits do not apply to (e.g. the one with the outage).
    #[serde(default)]
    pub latency_exempt_phases: Vec<String>,
    /// Corrected p99 limits of single phases, ms, overriding `p99_ms` (e.g. fast 503s during
    /// an outage: `phase_p99_ms = { outage = 100 }`).
    #[serde(default)]
    pub phase_p99_ms: BTreeMap<String, f64>,
    /// Per phase, the least share of `POST /buy` answers that must be the front's maintenance
    /// page (503, HTML): no gateway is up, and buyers are told so rather than refused
    /// (`phase_maintenance_min = { down = 0.9 }`). Needs two gateways or more (the front).
    #[serde(default)]
    pub phase_maintenance_min: BTreeMap<String, f64>,
    /// Per phase, the least share of good `POST /buy` answers, whether faults are on or not
    /// (e.g. once the degradation switch is on: `phase_availability = { degraded = 0.999 }`).
    #[serde(default)]
    pub phase_availability: BTreeMap<String, f64>,
    /// Fault end → the system recovered: every second of `rto_hold` with requests, each at or
    /// above `recovered_at`.
    #[serde(default, with = "option_duration_text")]
    pub rto: Option<Duration>,
    /// The share of good answers that counts as recovered (default: the steady-state
    /// availability) — its own threshold, not `availability`, which a drill may set low.
    #[serde(default)]
    pub recovered_at: Option<f64>,
    /// How long recovery must hold (default 10 s; scaled with `--scale`, at least 3 s).
    #[serde(default = "rto_hold_default", with = "duration_text")]
    pub rto_hold: Duration,
    /// Acknowledged orders that may be lost.
    #[serde(default)]
    pub rpo: u64,
    /// The orders a fault held undecided past its heal are decided at most this long after it
    /// (a payment outage's deferred payments completed once the provider is back).
    #[serde(default, with = "option_duration_text")]
    pub decided_after_heal: Option<Duration>,
    /// Accepted (202) → decided, p99 over the run, ms.
    #[serde(default)]
    pub time_to_decision_p99_ms: Option<f64>,
    /// Accepted (202) → decided, the slowest order, ms. An accepted order never decided breaks it.
    #[serde(default)]
    pub time_to_decision_max_ms: Option<f64>,
    /// The largest total consumer lag (messages, summed over the processors) in any second.
    #[serde(default)]
    pub max_consumer_lag: Option<f64>,
    /// The least share of decided payments that captured (`COMPLETED` out of `COMPLETED` and
    /// `FAILED_PAYMENT`, by the outcomes): a bad release that fails payments spends it.
    #[serde(default)]
    pub payment_success: Option<f64>,
    /// Every deploy of the candidate rolled back within this long (by the gate or the
    /// timeline; not scaled: the runbook's promise, 5 minutes).
    #[serde(default, with = "option_duration_text")]
    pub rollback_within: Option<Duration>,
}

fn rto_hold_default() -> Duration {
    Duration::from_secs(10)
}

/// The least evidence each check needs to pass (below it a check is inconclusive, not passed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceNeeded {
    /// Requests in an availability window (overall, outside faults, during faults). Default 100.
    #[serde(default = "hundred")]
    pub min_requests: u64,
    /// Samples of a latency percentile (a p99 needs at least 100 to be more than a maximum).
    /// Default 100.
    #[serde(default = "hundred")]
    pub min_latency_samples: u64,
    /// Requests in a steady-state window (before the first fault, after the last). Default 50.
    #[serde(default = "fifty")]
    pub min_window_requests: u64,
    /// Decided orders behind a time-to-decision figure. Default 50.
    #[serde(default = "fifty")]
    pub min_decisions: u64,
    /// Seconds with a processor's lag scraped behind the lag figure. Default 10.
    #[serde(default = "ten")]
    pub min_lag_seconds: u64,
}

fn hundred() -> u64 {
    100
}
fn fifty() -> u64 {
    50
}
fn ten() -> u64 {
    10
}

impl Default for EvidenceNeeded {
    fn default() -> Self {
        EvidenceNeeded {
            min_requests: 100,
            min_latency_samples: 100,
            min_window_requests: 50,
            min_decisions: 50,
            min_lag_seconds: 10,
        }
    }
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            availability: 0.999,
            availability_outside_faults: None,
            availability_during_faults: None,
            p95_ms: None,
            p99_ms: None,
            latency_exempt_phases: Vec::new(),
            phase_p99_ms: BTreeMap::new(),
            phase_maintenance_min: BTreeMap::new(),
            phase_availability: BTreeMap::new(),
            decided_after_heal: None,
            rto: None,
            recovered_at: None,
            rto_hold: rto_hold_default(),
            rpo: 0,
            time_to_decision_p99_ms: None,
            time_to_decision_max_ms: None,
            max_consumer_lag: None,
            payment_success: None,
            rollback_within: None,
        }
    }
}

/// Which of DESIGN.md's invariants are checked (all by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariants {
    #[serde(default = "yes")]
    pub no_lost_or_doubled_orders: bool,
    #[serde(default = "yes")]
    pub no_oversell: bool,
    #[serde(default = "yes")]
    pub stock_conservation: bool,
    #[serde(default = "yes")]
    pub money_matches_stock: bool,
    #[serde(default = "yes")]
    pub refunds_and_dlq: bool,
    #[serde(default = "yes")]
    pub one_effect_per_request: bool,
    /// For a drill whose point is a repair (`reconcile_fix`, `dlq_replay`): the checks that
    /// must find damage on the state before the repair (e.g. `["stock conservation"]`). Damage
    /// of any other kind fails the drill; after the repair every invariant must hold.
    #[serde(default)]
    pub expect_damage: Vec<String>,
}

impl Default for Invariants {
    fn default() -> Self {
        Invariants {
            no_lost_or_doubled_orders: true,
            no_oversell: true,
            stock_conservation: true,
            money_matches_stock: true,
            refunds_and_dlq: true,
            one_effect_per_request: true,
            expect_damage: Vec::new(),
        }
    }
}

/// Stop the faults early (like AWS FIS stop conditions).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Share of bad answers over `window` that stops the faults.
    pub max_error_rate: f64,
    #[serde(default = "abort_window", with = "duration_text")]
    pub window: Duration,
}

fn abort_window() -> Duration {
    Duration::from_secs(5)
}

/// A scenario that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid { path: String, line: usize, field: String, message: String },
    #[error("no drill or file {0:?}; `flashlab drills` lists the drills")]
    NotFound(String),
}

/// The shipped drills' directory.
pub fn drills_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLASHLAB_DRILLS") {
        return dir.into();
    }
    // Next to the sources in a checkout; the binary may live in target/*/.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("drills");
    if manifest.is_dir() {
        return manifest;
    }
    PathBuf::from("scenarios/drills")
}

/// A drill name (`kafka-outage`) or a path to a TOML file.
pub fn resolve(name_or_file: &str) -> Result<PathBuf, ScenarioError> {
    let path = Path::new(name_or_file);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let shipped = drills_dir().join(format!("{name_or_file}.toml"));
    if shipped.is_file() {
        return Ok(shipped);
    }
    Err(ScenarioError::NotFound(name_or_file.to_string()))
}

/// Every shipped drill: (name, description).
pub fn shipped() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(drills_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                match load(&path) {
                    Ok(s) => out.push((s.name, s.description)),
                    Err(e) => out.push((path.display().to_string(), format!("INVALID: {e}"))),
                }
            }
        }
    }
    out.sort();
    out
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// Parses and checks scenario text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
    let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let message = e.message().to_string();
        match line {
            Some(line) => ScenarioError::Parse { path: format!("{path}:{line}"), message },
            None => ScenarioError::Parse { path: path.to_string(), message },
        }
    })?;
    let invalid = |needle: &str, field: &str, message: String| ScenarioError::Invalid {
        path: path.to_string(),
        line: find_line(text, needle),
        field: field.to_string(),
        message,
    };
    let schedule =
        scenario.load.phases.parse::<ArrivalSchedule>().map_err(|e| invalid("phases", "load.phases", e.0))?;
    // A phase named in the SLO that the load does not have would be judged by nothing.
    let slo = &scenario.slo;
    let named = slo
        .latency_exempt_phases
        .iter()
        .map(|p| ("latency_exempt_phases", p))
        .chain(slo.phase_p99_ms.keys().map(|p| ("phase_p99_ms", p)))
        .chain(slo.phase_maintenance_min.keys().map(|p| ("phase_maintenance_min", p)))
        .chain(slo.phase_availability.keys().map(|p| ("phase_availability", p)));
    for (key, phase) in named {
        if !schedule.phases.iter().any(|p| p.name == *phase) {
            let names: Vec<&str> = schedule.phases.iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(
                key,
                &format!("slo.{key}.{phase}"),
                format!("no phase {phase:?} in load.phases ({})", names.join(", ")),
            ));
        }
    }
    for (phase, &v) in &scenario.slo.phase_availability {
        if !(0.0..=1.0).contains(&v) {
            let field = format!("slo.phase_availability.{phase}");
            return Err(invalid("phase_availability", &field, format!("{v} must be between 0 and 1")));
        }
    }
    scenario.load.mix.parse::<UserMix>().map_err(|e| invalid("mix", "load.mix", e))?;
    if scenario.stock.is_empty() {
        return Err(invalid("[stock]", "stock", "at least one item".into()));
    }
    if scenario.topology.gateways == 0 || scenario.topology.gateways > 8 {
        return Err(invalid("gateways", "topology.gateways", "1 to 8".into()));
    }
    if scenario.topology.redis_replicas > 4 {
        return Err(invalid("redis_replicas", "topology.redis_replicas", "0 to 4".into()));
    }
    let floor = chaos::components::SENTINEL_MIN_DOWN_AFTER;
    if scenario.topology.redis_replicas > 0 && scenario.topology.sentinel_down_after < floor {
        return Err(invalid(
            "sentinel_down_after",
            "topology.sentinel_down_after",
            format!(
                "at least {floor:?}: shorter, a sentinel can judge the new primary down right after a failover \
                 and fail over again (scenarios/README.md)"
            ),
        ));
    }
    if scenario.topology.processors > 8 {
        return Err(invalid("processors", "topology.processors", "0 to 8".into()));
    }
    for (what, v) in [("availability", scenario.slo.availability), ("availability", scenario.steady_state.availability)]
    {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(what, what, format!("{v} must be between 0 and 1")));
        }
    }
    for (phase, &v) in &scenario.slo.phase_maintenance_min {
        let field = format!("slo.phase_maintenance_min.{phase}");
        if !(v > 0.0 && v <= 1.0) {
            return Err(invalid("phase_maintenance_min", &field, format!("{v} must be above 0 and at most 1")));
        }
        if scenario.topology.gateways < 2 {
            return Err(invalid(
                "phase_maintenance_min",
                &field,
                "the maintenance page is the front's, and a front stands only before two gateways or more \
                 (topology.gateways = 1)"
                    .into(),
            ));
        }
    }
    if let Some(v) = scenario.slo.recovered_at {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid("recovered_at", "slo.recovered_at", format!("{v} must be between 0 and 1")));
        }
    }
    if let Some(release) = &mut scenario.release {
        release.base = Path::new(path).parent().unwrap_or(Path::new(".")).to_path_buf();
        release.validate().map_err(|(field, message)| {
            let (section, key) = match field.strip_prefix("gate.") {
                Some(key) => ("[release.gate]", key.to_string()),
                None => ("[release]", field.clone()),
            };
            ScenarioError::Invalid {
                path: path.to_string(),
                line: entry_line(text, find_line(text, section), &key),
                field: format!("release.{field}"),
                message,
            }
        })?;
        if release.gate.is_some() && scenario.topology.processors + scenario.topology.gateways == 0 {
            return Err(invalid("[release.gate]", "release.gate", "nothing to deploy in this topology".into()));
        }
    }
    if let Some(v) = scenario.slo.payment_success {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid("payment_success", "slo.payment_success", format!("{v} must be between 0 and 1")));
        }
    }
    if let Some(supervisor) = &scenario.supervisor {
        supervisor.validate().map_err(|m| {
            let field = m.split(':').next().unwrap_or("").to_string();
            ScenarioError::Invalid {
                path: path.to_string(),
                line: entry_line(text, find_line(text, "[supervisor]"), &field),
                field: format!("supervisor.{field}"),
                message: m,
            }
        })?;
    }
    let mut backup_seen = false;
    let mut fault_count = 0;
    for (i, entry) in scenario.faults.iter().enumerate() {
        let field = format!("faults[{i}]");
        let line = nth_line(text, "[[faults]]", i);
        let bad = |(sub, message): (String, String)| ScenarioError::Invalid {
            path: path.to_string(),
            line: entry_line(text, line, &sub),
            field: format!("{field}.{sub}"),
            message,
        };
        let step = entry.step(backup_seen).map_err(bad)?;
        if let Step::Fault(fault) = &step {
            scenario.topology.has(fault.target).map_err(|m| bad(("target".into(), m)))?;
            fault_count += 1;
        }
        if let Step::Fault(Fault { action: Action::RedisLoss { .. }, .. }) = &step {
            if scenario.topology.redis_replicas > 0 {
                return Err(bad(("kind".into(), chaos::injector::REDIS_LOSS_REPLICATED.into())));
            }
        }
        if step == Step::RedisFailover && scenario.topology.redis_replicas == 0 {
            return Err(bad((
                "kind".into(),
                "redis_failover promotes a replica: the topology has none (topology.redis_replicas = 0)".into(),
            )));
        }
        if step == Step::Backup {
            backup_seen = true;
        }
        if let Step::Deploy(target) | Step::Rollback(target) = step {
            if scenario.release.is_none() {
                return Err(bad(("kind".into(), format!("{} needs a [release] section: what to deploy", entry.kind))));
            }
            if let DeployTarget::One(t) = target {
                scenario.topology.has(t).map_err(|m| bad(("target".into(), m)))?;
            }
        }
    }
    // The rules the alerts are checked against: the scenario's own files, or the shipped ones.
    let base = Path::new(path).parent().unwrap_or(Path::new("."));
    let mut rules_text = String::new();
    for (i, rule) in scenario.alerts.rules.iter_mut().enumerate() {
        if rule.is_relative() {
            *rule = base.join(&*rule);
        }
        let rule_text = std::fs::read_to_string(&*rule).map_err(|e| ScenarioError::Invalid {
            path: path.to_string(),
            line: entry_line(text, find_line(text, "[alerts]"), "rules"),
            field: format!("alerts.rules[{i}]"),
            message: format!("{}: {e}", rule.display()),
        })?;
        rules_text.push_str(&rule_text);
        rules_text.push('\n');
    }
    if scenario.alerts.rules.is_empty() {
        rules_text = chaos::monitoring::SHIPPED_RULES.to_string();
    }
    scenario.alerts.validate(&rules_text, fault_count).map_err(|(field, message)| {
        // `expect[2].alert` → the line of `alert =` in the third `[[alerts.expect]]`.
        let line = match field.strip_prefix("expect[").and_then(|r| r.split_once("].")) {
            Some((i, sub)) => entry_line(text, nth_line(text, "[[alerts.expect]]", i.parse().unwrap_or(0)), sub),
            None => entry_line(text, find_line(text, "[alerts]"), field.split('[').next().unwrap_or(&field)),
        };
        ScenarioError::Invalid { path: path.to_string(), line, field: format!("alerts.{field}"), message }
    })?;
    Ok(scenario)
}

/// The line of `field = ...` within the `[[faults]]` entry starting at `entry_line`, or the
/// entry's own line.
fn entry_line(text: &str, entry_line: usize, field: &str) -> usize {
    text.lines()
        .enumerate()
        .skip(entry_line)
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            l.trim_start().starts_with(field)
                && l[l.find(field).unwrap_or(0) + field.len()..].trim_start().starts_with('=')
        })
        .map(|(i, _)| i + 1)
        .unwrap_or(entry_line)
}

impl Topology {
    /// Whether `target` exists in this topology; else what does.
    pub fn has(&self, target: Target) -> Result<(), String> {
        let (kind, index, count) = match target {
            Target::Gateway(i) => ("gateway", i, self.gateways),
            Target::Processor(i) => ("processor", i, self.processors),
            Target::RedisNode(_) | Target::Sentinel(_) if self.redis_replicas == 0 => {
                return Err(format!(
                    "{target}: the topology has one Redis and no sentinel (topology.redis_replicas = 0)"
                ))
            }
            Target::RedisNode(i) => ("redis node", i, self.redis_replicas + 1),
            Target::Sentinel(i) => ("sentinel", i, chaos::testbed::replication::SENTINELS),
            Target::RedisLink(0) => return Err("replication[0]: links go to replicas, replication[1] and up".into()),
            Target::RedisLink(i) => ("replication link", i - 1, self.redis_replicas),
            _ => return Ok(()),
        };
        if index < count {
            Ok(())
        } else if count == 0 {
            Err(format!("{target}: the topology has no {kind}"))
        } else {
            Err(format!("{target}: the topology has {kind}[0] to {kind}[{}] (topology.{kind}s = {count})", count - 1))
        }
    }
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of the first line starting with `needle` (after spaces), or 1.
pub(crate) fn find_line(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.trim_start().starts_with(needle)).map(|i| i + 1).unwrap_or(1)
}

/// The line of the `n`-th line that is exactly `needle`.
fn nth_line(text: &str, needle: &str, n: usize) -> usize {
    text.lines().enumerate().filter(|(_, l)| l.trim() == needle).nth(n).map(|(i, _)| i + 1).unwrap_or(1)
}

/// The fault actions a timeline entry may name, and the lab actions.
pub const KINDS: &str = "kill, terminate, pause, restart, latency, bandwidth, blackhole, reset, slow_close, slicer, \
limit_data, down, payment_timeout, payment_failures, payment_outage, payment_capture_then_timeout, redis_stall, \
redis_loss, cpu, memory, partition, backup, dlq_replay, reconcile_fix, redis_failover, degrade_on, degrade_off, deploy, rollback";

impl TimelineEntry {
    /// What the entry does; `Err((field, message))` names what is wrong.
    pub fn step(&self, backup_before: bool) -> Result<Step, (String, String)> {
        let need = |field: &str, v: Option<Duration>| {
            v.ok_or_else(|| (field.to_string(), format!("{} needs {field}", self.kind)))
        };
        let target = || -> Result<Target, (String, String)> {
            let t = self
                .target
                .as_deref()
                .ok_or_else(|| ("target".to_string(), format!("{} needs a target", self.kind)))?;
            t.parse::<Target>().map_err(|e| ("target".to_string(), e))
        };
        let directions = || -> Result<Directions, (String, String)> {
            match &self.direction {
                None => Ok(Directions::Both),
                Some(d) => d.parse().map_err(|e| ("direction".to_string(), e)),
            }
        };
        let network = |toxic: Toxic| -> Result<Step, (String, String)> {
            Ok(Step::Fault(Fault {
                target: target()?,
                action: Action::Network { toxic, directions: directions()?, toxicity: self.toxicity.unwrap_or(1.0) },
                duration: self.duration,
            }))
        };
        let fault = |target: Target, action: Action| Ok(Step::Fault(Fault { target, action, duration: self.duration }));
        let step = match self.kind.as_str() {
            "kill" => fault(target()?, Action::Kill),
            "terminate" => fault(target()?, Action::Terminate),
            "pause" => fault(target()?, Action::Pause),
            "restart" => fault(target()?, Action::Restart),
            "latency" => network(Toxic::Latency {
                latency: need("latency", self.latency)?,
                jitter: self.jitter.unwrap_or(Duration::ZERO),
            }),
            "bandwidth" => network(Toxic::Bandwidth {
                bytes_per_s: self.bytes.ok_or_else(|| ("bytes".to_string(), "bandwidth needs bytes".to_string()))?,
            }),
            "blackhole" => network(Toxic::Blackhole),
            "reset" => network(Toxic::ResetPeer),
            "slow_close" => network(Toxic::SlowClose { delay: need("delay", self.delay)? }),
            "slicer" => network(Toxic::Slicer {
                bytes: self.bytes.ok_or_else(|| ("bytes".to_string(), "slicer needs bytes".to_string()))? as usize,
                delay: need("delay", self.delay)?,
            }),
            "limit_data" => network(Toxic::LimitData {
                bytes: self.bytes.ok_or_else(|| ("bytes".to_string(), "limit_data needs bytes".to_string()))?,
            }),
            "down" => fault(target()?, Action::Down),
            "payment_timeout" => fault(Target::Payment, Action::PaymentTimeout { latency: self.latency }),
            "payment_failures" => fault(
                Target::Payment,
                Action::PaymentFailures {
                    rate: self.rate.ok_or_else(|| ("rate".to_string(), "payment_failures needs rate".to_string()))?,
                },
            ),
            "payment_outage" => fault(Target::Payment, Action::PaymentOutage),
            "payment_capture_then_timeout" => {
                fault(Target::Payment, Action::PaymentCaptureThenTimeout { latency: self.latency })
            }
            "redis_stall" => fault(Target::Redis, Action::RedisStall),
            "partition" => {
                let from = match &self.from {
                    Some(peer) => Some(peer.parse::<Target>().map_err(|e| ("from".to_string(), e))?),
                    None => None,
                };
                fault(target()?, Action::Partition { from })
            }
            "redis_loss" => {
                if self.restore && !backup_before {
                    return Err((
                        "restore".into(),
                        "restore = true needs a backup entry earlier in the timeline".into(),
                    ));
                }
                // The path is filled in by the runner (the run directory's backup).
                let restore = self.restore.then(|| PathBuf::from("backup.jsonl"));
                fault(Target::Redis, Action::RedisLoss { restore })
            }
            "cpu" => fault(
                target()?,
                Action::Cpu { cores: self.cores.ok_or_else(|| ("cores".to_string(), "cpu needs cores".to_string()))? },
            ),
            "memory" => {
                let limit =
                    self.limit.as_deref().ok_or_else(|| ("limit".to_string(), "memory needs limit".to_string()))?;
                let bytes = chaos::faults::parse_bytes(limit).map_err(|e| ("limit".to_string(), e))?;
                fault(target()?, Action::Memory { bytes, restart: self.restart })
            }
            "backup" => Ok(Step::Backup),
            "dlq_replay" => Ok(Step::DlqReplay),
            "reconcile_fix" => Ok(Step::ReconcileFix),
            "redis_failover" => Ok(Step::RedisFailover),
            "degrade_on" => match self.admit {
                Some(0) => Err((
                    "admit".to_string(),
                    "admit = 0 would refuse every order; leave it out for no cap".to_string(),
                )),
                admit => Ok(Step::Degrade { on: true, admit }),
            },
            "degrade_off" => Ok(Step::Degrade { on: false, admit: None }),
            "deploy" => {
                let t = self.target.as_deref().ok_or_else(|| {
                    ("target".to_string(), "deploy needs a target: processor[N], gateway[N], processors or gateways".to_string())
                })?;
                Ok(Step::Deploy(DeployTarget::parse(t).map_err(|e| ("target".to_string(), e))?))
            }
            "rollback" => match self.target.as_deref() {
                None => Ok(Step::Rollback(DeployTarget::Deployed)),
                Some(t) => Ok(Step::Rollback(DeployTarget::parse(t).map_err(|e| ("target".to_string(), e))?)),
            },
            other => Err(("kind".to_string(), format!("unknown kind {other:?}; valid: {KINDS}"))),
        }?;
        if self.admit.is_some() && self.kind != "degrade_on" {
            return Err(("admit".into(), format!("admit applies to degrade_on, not {}", self.kind)));
        }
        if self.restart && self.kind != "memory" {
            return Err(("restart".into(), format!("restart = true applies to memory, not {}", self.kind)));
        }
        if self.from.is_some() && self.kind != "partition" {
            return Err(("from".into(), format!("from applies to partition, not {}", self.kind)));
        }
        if let Step::Fault(f) = &step {
            f.validate().map_err(|e| ("kind".to_string(), e.0))?;
        } else if self.duration.is_some() {
            return Err(("for".into(), format!("{} is an action and takes no duration", self.kind)));
        }
        Ok(step)
    }
}

impl Scenario {
    /// Shrinks durations by `factor` (phases, fault times and lengths, drain) and rates by the
    /// same factor, for CI. A factor of 1 changes nothing.
    pub fn scaled(mut self, factor: f64) -> Result<Scenario, String> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(format!("--scale {factor}: must be above 0 and at most 1"));
        }
        if factor == 1.0 {
            return Ok(self);
        }
        let schedule: ArrivalSchedule = self.load.phases.parse().map_err(|e: loadgen::schedule::ScheduleError| e.0)?;
        let scale_d = |d: Duration| Duration::from_secs_f64((d.as_secs_f64() * factor).max(0.001));
        let phases: Vec<String> = schedule
            .phases
            .iter()
            .map(|p| {
                let rate = match p.rate {
                    loadgen::schedule::Rate::Constant(r) => format!("{}", (r * factor).max(1.0).round()),
                    loadgen::schedule::Rate::Ramp { from, to } => {
                        format!("{}..{}", (from * factor).max(1.0).round(), (to * factor).max(1.0).round())
                    }
                };
                let ms = scale_d(p.duration).as_millis().max(1);
                format!("{}:{ms}ms@{rate}{}", p.name, if p.poisson { "~poisson" } else { "" })
            })
            .collect();
        self.load.phases = phases.join(",");
        for entry in &mut self.faults {
            entry.at = scale_d(entry.at);
            entry.duration = entry.duration.map(scale_d);
            // A degraded admission cap and a bandwidth are rates, like the phases'.
            entry.admit = entry.admit.map(|n| ((f64::from(n) * factor).round() as u32).max(1));
            if entry.kind == "bandwidth" {
                entry.bytes = entry.bytes.map(|b| ((b as f64 * factor).round() as u64).max(1));
            }
        }
        self.steady_state.recovery = scale_d(self.steady_state.recovery);
        if self.scale_stock {
            for units in self.stock.values_mut() {
                *units = ((*units as f64) * factor * factor).round().max(1.0) as u64;
            }
        }
        // The hold is a stretch of the drill like the others, but below 3 s one good second
        // would decide it.
        self.slo.rto_hold = scale_d(self.slo.rto_hold).max(Duration::from_secs(3));
        // Rule windows shrink with the drill's faults (a 9 s outage needs a window it can fill);
        // the detection targets do not (like the RTO, they are the promise being tested).
        self.alerts.time_factor *= factor;
        self.alerts.settle = scale_d(self.alerts.settle);
        self.supervisor = self.supervisor.map(|s| s.scaled(factor));
        self.release = self.release.map(|r| r.scaled(factor));
        self.topology.sentinel_down_after =
            scale_d(self.topology.sentinel_down_after).max(chaos::components::SENTINEL_MIN_DOWN_AFTER);
        Ok(self)
    }

    /// The timeline's steps, with each entry's offset.
    pub fn steps(&self) -> Vec<(Duration, Step)> {
        let mut backup_seen = false;
        self.faults
            .iter()
            .filter_map(|e| {
                let step = e.step(backup_seen).ok()?;
                backup_seen |= step == Step::Backup;
                Some((e.at, step))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
description = "a test"
[stock]
"101" = 10
[load]
phases = "a:10s@10"
[[faults]]
at = "2s"
for = "3s"
kind = "kill"
target = "broker"
"#;

    #[test]
    fn deploys_need_a_release_an_existing_target_and_a_gate_with_a_query() {
        let deploy =
            GOOD.replace("for = \"3s\"\nkind = \"kill\"\ntarget = \"broker\"", "kind = \"deploy\"\ntarget = \"processor[0]\"");
        let err = parse(&deploy, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:10: faults[0].kind: deploy needs a [release] section"), "{err}");
        let released = format!("{deploy}[release]\nbin = \"${{FLASHSALE_BUGS_BIN}}\"\n");
        let s = parse(&released, "x.toml").unwrap();
        assert_eq!(s.steps()[0].1, Step::Deploy(DeployTarget::One(Target::Processor(0))));
        let err = parse(&released.replace("processor[0]", "processor[3]"), "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:11: faults[0].target: processor[3]: the topology has processor[0]"), "{err}");
        let err = parse(&released.replace("processor[0]", "redis"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].target: \"redis\": a deploy replaces processor[N]"), "{err}");
        let gate = format!("{released}[release.gate]\nquery = \" \"\n");
        let err = parse(&gate, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:15: release.gate.query: an empty query is never breached"), "{err}");
    }

    #[test]
    fn a_good_scenario_parses_with_defaults() {
        let s = parse(GOOD, "t.toml").unwrap();
        assert_eq!(s.topology.gateways, 1);
        assert_eq!(s.slo.availability, 0.999);
        assert_eq!(
            s.steps(),
            vec![(
                Duration::from_secs(2),
                Step::Fault(Fault {
                    target: Target::Broker,
                    action: Action::Kill,
                    duration: Some(Duration::from_secs(3))
                })
            )]
        );
    }

    #[test]
    fn alert_expectations_parse_and_a_bad_one_names_its_line() {
        let with = format!(
            "{GOOD}[alerts]\nmonitoring = true\ntime_factor = 0.1\n[[alerts.expect]]\nalert = \"CircuitBreakerOpen\"\nfires_within = \"20s\"\nnotified_within = \"40s\"\n"
        );
        let s = parse(&with, "t.toml").unwrap();
        assert!(s.alerts.monitoring);
        assert_eq!(s.alerts.expect[0].fires_within, Duration::from_secs(20));
        assert_eq!(s.alerts.expect[0].notified_within, Some(Duration::from_secs(40)));
        let unknown = with.replace("\"CircuitBreakerOpen\"", "\"BreakerOpen\"");
        let err = parse(&unknown, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:17: alerts.expect[0].alert: no rule named \"BreakerOpen\""), "{err}");
        let far = with.replace("fires_within", "fault = 2\nfires_within");
        let err = parse(&far, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:18: alerts.expect[0].fault: #2: the timeline has 1 fault(s)"), "{err}");
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let unknown = GOOD.replace("[load]", "[load]\nspeed = 3");
        let err = parse(&unknown, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:7") && err.contains("unknown field `speed`"), "{err}");
        let bad_kind = GOOD.replace("kind = \"kill\"", "kind = \"explode\"");
        let err = parse(&bad_kind, "x.toml").unwrap_err().to_string();
        // The line of the field itself, within the entry.
        assert!(err.starts_with("x.toml:11: faults[0].kind: unknown kind \"explode\""), "{err}");
        let bad_target = GOOD.replace("target = \"broker\"", "target = \"db\"");
        let err = parse(&bad_target, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:12: faults[0].target") && err.contains("valid: redis, broker"), "{err}");
        // A target the topology does not have.
        let absent = GOOD.replace("target = \"broker\"", "target = \"processor[5]\"");
        let err = parse(&absent, "x.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:12: faults[0].target: processor[5]: the topology has processor[0] to processor[0]"),
            "{err}"
        );
        let none = GOOD.replace("target = \"broker\"", "target = \"gateway[1]\"");
        let err = parse(&none, "x.toml").unwrap_err().to_string();
        assert!(err.contains("gateway[1]: the topology has gateway[0] to gateway[0]"), "{err}");
        let bad_phase = GOOD.replace("a:10s@10", "a:10s");
        let err = parse(&bad_phase, "x.toml").unwrap_err().to_string();
        assert!(err.contains("load.phases") && err.contains("no '@'"), "{err}");
        let bad_duration = GOOD.replace("at = \"2s\"", "at = \"soon\"");
        let err = parse(&bad_duration, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with("x.toml:") && err.contains("expected a duration"), "{err}");
        // Resource faults: their own fields, checked where they stand.
        let cpu = GOOD.replace("kind = \"kill\"", "kind = \"cpu\"\ncores = 0.05");
        assert!(parse(&cpu, "x.toml").is_ok());
        let err = parse(&GOOD.replace("kind = \"kill\"", "kind = \"cpu\""), "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].cores: cpu needs cores"), "{err}");
        let err =
            parse(&GOOD.replace("kind = \"kill\"", "kind = \"cpu\"\ncores = 0"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("0 cores must be above 0"), "{err}");
        let memory = GOOD.replace("kind = \"kill\"", "kind = \"memory\"\nlimit = \"32MiB\"");
        assert!(parse(&memory, "x.toml").is_ok());
        let err = parse(&GOOD.replace("kind = \"kill\"", "kind = \"memory\"\nlimit = \"lots\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:12: faults[0].limit:") && err.contains("expected a byte count"), "{err}");
        let restart = GOOD.replace("kind = \"kill\"", "kind = \"memory\"\nlimit = \"3MiB\"\nrestart = true");
        let steps = parse(&restart, "x.toml").unwrap().steps();
        assert!(
            matches!(&steps[0].1, Step::Fault(f) if f.action == Action::Memory { bytes: 3 << 20, restart: true }),
            "{steps:?}"
        );
        let err = parse(&GOOD.replace("kind = \"kill\"", "kind = \"kill\"\nrestart = true"), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("faults[0].restart: restart = true applies to memory, not kill"), "{err}");
        // A partition: off the network, or from one peer behind a proxy.
        let cut =
            GOOD.replace("kind = \"kill\"\ntarget = \"broker\"", "kind = \"partition\"\ntarget = \"processor[0]\"");
        let steps = parse(&cut, "x.toml").unwrap().steps();
        assert!(matches!(&steps[0].1, Step::Fault(f) if f.action == Action::Partition { from: None }), "{steps:?}");
        let from = cut.replace("kind = \"partition\"", "kind = \"partition\"\nfrom = \"redis\"");
        let steps = parse(&from, "x.toml").unwrap().steps();
        assert!(
            matches!(&steps[0].1, Step::Fault(f) if f.action == Action::Partition { from: Some(Target::Redis) }),
            "{steps:?}"
        );
        let err = parse(&cut.replace("kind = \"partition\"", "kind = \"partition\"\nfrom = \"mysql\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:12: faults[0].from:"), "{err}");
        let err = parse(&cut.replace("kind = \"partition\"", "kind = \"partition\"\nfrom = \"gateway\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("partition cannot target processor[0]"), "{err}");
        let err = parse(&GOOD.replace("kind = \"kill\"", "kind = \"kill\"\nfrom = \"redis\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("faults[0].from: from applies to partition, not kill"), "{err}");
    }

    #[test]
    fn a_maintenance_share_needs_a_front() {
        let one = format!("{GOOD}[slo]\nphase_maintenance_min = {{ a = 0.9 }}\n");
        let err = parse(&one, "x.toml").unwrap_err().to_string();
        assert!(err.contains("slo.phase_maintenance_min.a: the maintenance page is the front's"), "{err}");
        let two = one.replace("[stock]", "[topology]\ngateways = 2\n[stock]");
        assert_eq!(parse(&two, "x.toml").unwrap().slo.phase_maintenance_min["a"], 0.9);
        let err = parse(&two.replace("0.9", "1.5"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("1.5 must be above 0 and at most 1"), "{err}");
    }

    #[test]
    fn a_failover_needs_a_replica() {
        let failover = GOOD.replace("for = \"3s\"\nkind = \"kill\"\ntarget = \"broker\"", "kind = \"redis_failover\"");
        assert!(failover.contains("redis_failover"), "{failover}");
        let err = parse(&failover, "x.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("x.toml:10: faults[0].kind: redis_failover promotes a replica: the topology has none"),
            "{err}"
        );
        let replicated = failover.replace("[stock]", "[topology]\nredis_replicas = 1\n[stock]");
        let steps = parse(&replicated, "x.toml").unwrap().steps();
        assert_eq!(steps, vec![(Duration::from_secs(2), Step::RedisFailover)]);
        let loss = replicated.replace("kind = \"redis_failover\"", "kind = \"redis_loss\"");
        let err = parse(&loss, "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].kind: redis loss deletes one server's data: with replicas"), "{err}");
        let timed = replicated.replace("kind = \"redis_failover\"", "for = \"3s\"\nkind = \"redis_failover\"");
        let err = parse(&timed, "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].for: redis_failover is an action and takes no duration"), "{err}");
    }

    #[test]
    fn the_degradation_switch_in_the_timeline() {
        let on =
            GOOD.replace("for = \"3s\"\nkind = \"kill\"\ntarget = \"broker\"", "kind = \"degrade_on\"\nadmit = 40");
        assert!(on.contains("degrade_on"), "{on}");
        let scenario = parse(&on, "x.toml").unwrap();
        assert_eq!(scenario.steps(), vec![(Duration::from_secs(2), Step::Degrade { on: true, admit: Some(40) })]);
        assert_eq!(scenario.scaled(0.3).unwrap().steps()[0].1, Step::Degrade { on: true, admit: Some(12) }, "a rate");
        let err = parse(&on.replace("admit = 40", "admit = 0"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].admit: admit = 0 would refuse every order"), "{err}");
        let off = on.replace("degrade_on", "degrade_off");
        let err = parse(&off, "x.toml").unwrap_err().to_string();
        assert!(err.contains("faults[0].admit: admit applies to degrade_on, not degrade_off"), "{err}");
        let off = off.replace("admit = 40\n", "");
        assert_eq!(parse(&off, "x.toml").unwrap().steps()[0].1, Step::Degrade { on: false, admit: None });
    }

    #[test]
    fn a_phase_named_in_the_slo_must_be_in_the_load() {
        for slo in ["latency_exempt_phases = [\"b\"]", "phase_p99_ms = { b = 100 }", "phase_availability = { b = 0.9 }"]
        {
            let text = format!("{GOOD}[slo]\n{slo}\n");
            let err = parse(&text, "x.toml").unwrap_err().to_string();
            assert!(err.contains(".b: no phase \"b\" in load.phases (a)"), "{slo}: {err}");
            let good = format!("{GOOD}[slo]\n{}\n", slo.replace("\"b\"", "\"a\"").replace("{ b", "{ a"));
            assert!(parse(&good, "x.toml").is_ok(), "{good}");
        }
        let err =
            parse(&format!("{GOOD}[slo]\nphase_availability = {{ a = 1.5 }}\n"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("slo.phase_availability.a: 1.5 must be between 0 and 1"), "{err}");
    }

    #[test]
    fn every_shipped_drill_parses_and_every_drill_with_a_fault_states_an_rto() {
        let drills = shipped();
        assert!(drills.len() >= 13, "{drills:?}");
        for (name, _) in drills {
            let scenario = load(&resolve(&name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let faults = scenario.steps().iter().filter(|(_, s)| matches!(s, Step::Fault(_))).count();
            if faults > 0 {
                assert!(scenario.slo.rto.is_some(), "{name} has {faults} fault(s) and no [slo] rto");
            }
        }
    }

    #[test]
    fn scaling_shrinks_durations_and_rates() {
        let s = parse(GOOD, "t.toml").unwrap().scaled(0.5).unwrap();
        assert_eq!(s.load.phases, "a:5000ms@5");
        assert_eq!(s.faults[0].at, Duration::from_secs(1));
        assert_eq!(s.faults[0].duration, Some(Duration::from_millis(1500)));
        assert!(parse(GOOD, "t.toml").unwrap().scaled(2.0).is_err());
        let throttled = GOOD.replace("kind = \"kill\"", "kind = \"bandwidth\"\nbytes = 10000");
        assert_eq!(parse(&throttled, "t.toml").unwrap().scaled(0.5).unwrap().faults[0].bytes, Some(5000), "a rate");
        let sliced = throttled.replace("kind = \"bandwidth\"", "kind = \"slicer\"\ndelay = \"1ms\"");
        assert_eq!(parse(&sliced, "t.toml").unwrap().scaled(0.5).unwrap().faults[0].bytes, Some(10000), "a size");
        let unscaled = parse(GOOD, "t.toml").unwrap();
        assert_eq!(unscaled.clone().scaled(0.5).unwrap().stock, unscaled.stock, "stock as written by default");
        let selling_out = parse(&format!("scale_stock = true\n{GOOD}"), "t.toml").unwrap();
        let first = *selling_out.stock.values().next().unwrap();
        let scaled = selling_out.scaled(0.5).unwrap();
        assert_eq!(*scaled.stock.values().next().unwrap(), ((first as f64) * 0.25).round().max(1.0) as u64);
    }

    #[test]
    fn sentinel_down_after_is_at_least_two_seconds_as_written_and_as_scaled() {
        let replicated = |down_after: &str| {
            format!("{GOOD}[topology]\nredis_replicas = 1\nsentinel_down_after = \"{down_after}\"\n")
        };
        let text = replicated("1s");
        let line = text.lines().position(|l| l.starts_with("sentinel_down_after")).unwrap() + 1;
        let err = parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.starts_with(&format!("x.toml:{line}: topology.sentinel_down_after: at least 2s")), "{err}");
        assert!(err.contains("fail over again"), "{err}");
        // Without replicas there is no Sentinel to judge anything.
        assert!(parse(&text.replace("redis_replicas = 1", "redis_replicas = 0"), "x.toml").is_ok());
        let s = parse(&replicated("5s"), "x.toml").unwrap();
        assert_eq!(s.clone().scaled(0.5).unwrap().topology.sentinel_down_after, Duration::from_millis(2500));
        assert_eq!(s.scaled(0.3).unwrap().topology.sentinel_down_after, Duration::from_secs(2), "the floor");
    }
}
