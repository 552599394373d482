//! `flashlab capacity`: the highest rate the system sustains within its SLOs, per topology;
//! the knee; the component that saturates first; the Universal Scalability Law over a
//! `--sweep`; and the headroom answer for an expected peak (docs/capacity.md).
//!
//! - [`settings`]: the options and the capacity file (`--slo FILE`: criteria, topology, env,
//!   search, load), with their defaults;
//! - [`trial`]: one trial — a generated scenario run as a drill on a fresh system, judged;
//! - [`remote`]: one trial against a deployment the lab did not start (`--target`): load only,
//!   judged from the history and the deployment's `/metrics`;
//! - [`signals`]: a trial's figures from its scrapes (lag growth, Redis, broker, in flight);
//! - [`search`]: grow ×2, bisect, confirm, repeat where trials disagree;
//! - [`analysis`]: slope, knee (Kneedle), USL fit;
//! - [`attribution`]: the component that saturated first;
//! - [`answer`]: the headroom sentence and the exit status.
//!
//! The search's directory: `capacity.json` (rewritten after every trial: an interrupted search
//! keeps what it measured), then `summary.md` and `report.html` (the `reports` crate), and one
//! directory per trial, `<topology>/trial-NN-RATE/` (its `scenario.toml` and drill run `run/`).

pub mod analysis;
pub mod answer;
pub mod attribution;
pub mod remote;
pub mod search;
pub mod settings;
pub mod signals;
pub mod trial;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rundir::capacity::{CapacityRun, Knee, Role, TopologyResult, Trial, TrialOutcome};
use tokio::time::Instant;

use analysis::{kneedle, Shape};
pub use settings::{CapacityOptions, Settings};

/// The search's result and where it is.
#[derive(Debug)]
pub struct CapacitySearch {
    pub dir: PathBuf,
    pub run: CapacityRun,
}

struct TrialRunner<'a> {
    setup: trial::Setup,
    settings: &'a Settings,
    dir: PathBuf,
    deadline: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
    quiet: bool,
    /// Trials so far of the whole search (this topology's are added to `run` as they come).
    record: &'a mut CapacityRun,
    topology: usize,
    /// `--target`: trials are load only, against this deployment.
    deployment: Option<&'a remote::Deployment>,
}

impl search::Runner for TrialRunner<'_> {
    async fn trial(&mut self, index: usize, role: Role, rate: f64, duration_s: f64) -> Option<Trial> {
        if *self.stop.borrow() {
            return None;
        }
        let rel = format!("{}/trial-{index:02}-{rate:.0}", self.setup.label.replace('=', "-"));
        if !self.quiet {
            eprint!("[{}] trial {index} ({role:?}): {rate:.0} orders/s for {duration_s:.0} s ... ", self.setup.label);
        }
        let mut rx = self.stop.clone();
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let at = (index, role, rate, duration_s);
        let trial = match self.deployment {
            Some(dep) => {
                let setup = trial::Setup {
                    seed: remote::trial_seed(self.setup.seed, self.record.started_unix_ms, index),
                    ..self.setup.clone()
                };
                remote::run(dep, &setup, &self.settings.criteria, at, &self.dir.join(&rel), rel, stop).await
            }
            None => trial::run(&self.setup, &self.settings.criteria, at, &self.dir.join(&rel), rel, stop).await,
        }
        .ok()?;
        if !self.quiet {
            eprintln!("{}", trial_line(&trial));
        }
        self.record.topologies[self.topology].trials.push(trial.clone());
        // Kept after every trial: a killed search still has what it measured.
        let _ = rundir::capacity::write(&self.dir.join(rundir::files::CAPACITY), self.record);
        Some(trial)
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// One line for a trial: its outcome and the figures that decided it.
pub fn trial_line(t: &Trial) -> String {
    let m = &t.m;
    let figures = format!(
        "avail {}, p99 {}, decided {}/s, generator {} cores",
        m.availability.map(|a| format!("{:.3} %", a * 100.0)).unwrap_or_else(|| "-".into()),
        m.p99_ms.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "-".into()),
        m.decided_rate.map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into()),
        m.generator_cores.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
    );
    let outcome = match t.outcome {
        TrialOutcome::Sustained => "sustained".to_string(),
        TrialOutcome::Failed => format!("FAILED: {}", t.reasons.first().cloned().unwrap_or_default()),
        TrialOutcome::Invalid => format!("INVALID: {}", t.reasons.first().cloned().unwrap_or_default()),
    };
    format!("{outcome} ({figures})")
}

/// Runs the search. `Err`: it could not start (bad options, the directory); a search that ran
/// returns its record whatever it found (the exit status is [`answer::exit_code`]'s).
pub async fn capacity(
    options: CapacityOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<CapacitySearch> {
    let settings = settings::resolve(&options)?;
    let deployment = match &options.target {
        Some(target) => Some(remote::deployment(target, options.allow_remote, &options.metrics).await?),
        None => None,
    };
    let started_ms = chaos::events::unix_ms();
    let dir = options.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("capacity-{}", crate::drill::utc_stamp(started_ms / 1000)))
    });
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!("{}: exists and is not empty; give another --out or remove it", dir.display());
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::drill::stop_or_goose(stop).await;
        let _ = stop_tx.send(true);
    });
    let commit = crate::drill::version_of("git", &["rev-parse", "HEAD"]).await;
    let mut record = CapacityRun {
        started_unix_ms: started_ms,
        ended_unix_ms: None,
        commit,
        seed: settings.seed,
        criteria: settings.criteria.clone(),
        search: settings.search.clone(),
        peak: settings.peak.clone(),
        topologies: Vec::new(),
        usl: None,
        answer: answer::pending(),
        interrupted: false,
        target: deployment.as_ref().map(|d| d.target.clone()),
    };
    let cores = std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0);
    if let (Some(dep), false) = (&deployment, options.quiet) {
        let pages: Vec<String> = dep.metrics.iter().map(|(c, u)| format!("{c} {u}")).collect();
        eprintln!(
            "capacity: load only against {} (metrics: {})",
            dep.target,
            if pages.is_empty() { "none — trials cannot judge time to decision or lag".into() } else { pages.join(", ") }
        );
    }
    if !options.quiet {
        eprintln!(
            "capacity: {} topolog{} — {}; run directory {}",
            settings.topologies.len(),
            if settings.topologies.len() == 1 { "y" } else { "ies" },
            settings.describe(),
            dir.display()
        );
    }
    for (i, setup) in settings.topologies.iter().enumerate() {
        if *stop_rx.borrow() {
            record.interrupted = true;
            break;
        }
        record.topologies.push(TopologyResult {
            label: setup.label.clone(),
            gateways: setup.gateways,
            processors: setup.processors,
            partitions: setup.partitions,
            trials: Vec::new(),
            sustainable: None,
            first_failed: None,
            uncertainty: None,
            knee: None,
            bottleneck: None,
            stopped: String::new(),
            generator_bound: false,
        });
        let mut runner = TrialRunner {
            setup: setup.clone(),
            settings: &settings,
            dir: dir.clone(),
            deadline: Instant::now() + Duration::from_secs_f64(settings.search.budget_s),
            stop: stop_rx.clone(),
            quiet: options.quiet,
            record: &mut record,
            topology: i,
            deployment: deployment.as_ref(),
        };
        let found = search::search(&mut runner, &settings.search).await;
        let limit = setup.env.get("PROCESSOR_MAX_IN_FLIGHT").and_then(|v| v.parse().ok()).unwrap_or(256.0);
        let t = &mut record.topologies[i];
        t.trials = found.trials;
        t.sustainable = found.sustainable;
        t.first_failed = found.first_failed;
        t.uncertainty = found.uncertainty;
        t.stopped = found.stopped;
        t.generator_bound = found.generator_bound;
        t.knee = knee(&t.trials);
        // A deployment's hosts and their cores are not known here: CPU is shown, not scored.
        let cores = deployment.is_none().then_some(cores);
        t.bottleneck = attribution::bottleneck(&t.trials, t.sustainable, setup.processors, limit, cores);
        record.interrupted |= found.interrupted;
        if !options.quiet {
            eprintln!("[{}] {}", setup.label, t.stopped);
        }
        rundir::capacity::write(&dir.join(rundir::files::CAPACITY), &record)?;
    }
    record.usl = answer::usl_of(&settings, &record.topologies);
    record.answer = answer::answer(&record);
    record.ended_unix_ms = Some(chaos::events::unix_ms());
    rundir::capacity::write(&dir.join(rundir::files::CAPACITY), &record)?;
    Ok(CapacitySearch { dir, run: record })
}

/// The knee of the achieved-vs-offered curve (decided orders per second; accepted where the
/// processors were not scraped) and of p99-vs-offered, over the trials that judged.
pub fn knee(trials: &[Trial]) -> Option<Knee> {
    let judged: Vec<&Trial> = trials.iter().filter(|t| t.outcome != TrialOutcome::Invalid).collect();
    let achieved: Vec<(f64, f64)> =
        judged.iter().map(|t| (t.rate, t.m.decided_rate.unwrap_or(t.m.accepted_rate))).collect();
    let latency: Vec<(f64, f64)> = judged.iter().filter_map(|t| Some((t.rate, t.m.p99_ms?))).collect();
    let rate = kneedle(&achieved, Shape::Concave);
    let latency_knee_rate = kneedle(&latency, Shape::Convex);
    rate.or(latency_knee_rate).map(|r| Knee {
        method: "kneedle (Satopää et al. 2011), offline, on achieved vs offered".into(),
        rate: r,
        latency_knee_rate,
    })
}

/// Where a search's record is.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join(rundir::files::CAPACITY)
}
