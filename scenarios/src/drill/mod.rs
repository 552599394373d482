//! `flashlab drill`: run a scenario against the real system and return a verdict.
//!
//! The run: bring up the testbed (every client behind the fault proxies), set the stock, check
//! the components are healthy, then run the load and the fault timeline on one clock while
//! every component's `/metrics` is scraped each second; drain (bounded); collect the final
//! state; run the checks; write the run directory (DESIGN.md):
//!
//! | file | what |
//! |---|---|
//! | `manifest.json` | the scenario as parsed and scaled, seed, commit, versions, topology, times |
//! | `history.jsonl`, `load-summary.json`, `load-intervals.jsonl` | the generator's ([`loadgen`]) |
//! | `events.jsonl` | load and phase changes, fault start/stop with their checks, actions, drain |
//! | `metrics.jsonl` | the scrapes (and Redis's command totals) |
//! | `processes.jsonl` | CPU and memory of every process, each second ([`procs`]) |
//! | `final_state.json` | stock, order states, DLQ, ledger, outcome and order records (and the same just before a repair step) |
//! | `verdict.json` | every check: target, measured, outcome (pass / fail / inconclusive), evidence needed and seen |
//! | `system/` | each component's data and log |
//!
//! [`load`]: the generator's configuration and what is recorded of the load (shared with a
//! capacity trial against a deployment).
//!
//! The records of those files are [`rundir`]'s: the one definition the checks and reports read.

mod alerts;
pub mod checks;
pub mod final_state;
pub mod load;
pub mod procs;
mod release;
pub mod scrape;
mod steps;
mod table;

use steps::{
    drain, lock, processors_stopped, request_ids_of, request_ids_so_far, run_step, warm_up, LOAD_START_LIMIT,
    WARMUP_ITEM,
};
pub use table::table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chaos::supervisor::Supervisor;
use chaos::{EventLog, Injector, Target, Testbed, TestbedConfig};
use loadgen::{ArrivalSchedule, Live};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::scenario::{self, Scenario, Step};
use final_state::Sources;
use rundir::state::{FinalState, States};
pub use rundir::Verdict;
use rundir::{CheckResult, Figures, Kind, Outcome};

/// How a drill is asked for.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// A shipped drill's name or a TOML file.
    pub scenario: String,
    /// The run directory; default `runs/<name>-<utc time>`.
    pub out: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Shrinks durations and rates (0 < F ≤ 1).
    pub scale: f64,
    /// No live line.
    pub quiet: bool,
    /// The `flashsale` binary the testbed runs (default `$FLASHSALE_BIN`, else next to flashlab):
    /// the gate's base or head build.
    pub flashsale_bin: Option<PathBuf>,
    /// Environment for every service on top of the scenario's `[env]` (a side of the gate).
    pub env: Vec<(String, String)>,
    /// Overrides the scenario's `[topology] runtime`.
    pub runtime: Option<chaos::testbed::RuntimeKind>,
    /// On containers: components run from other images (`--image redis=redis:7.2`).
    pub images: Vec<(chaos::containers::images::Component, String)>,
}

impl DrillOptions {
    /// `scenario` at `scale`, everything else by default.
    pub fn new(scenario: impl Into<String>, scale: f64) -> DrillOptions {
        DrillOptions {
            scenario: scenario.into(),
            out: None,
            seed: None,
            scale,
            quiet: false,
            flashsale_bin: None,
            env: Vec::new(),
            runtime: None,
            images: Vec::new(),
        }
    }
}

/// A drill that could not run (exit 2), as opposed to one that failed its checks (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error("{0}")]
    Setup(String),
    #[error("interrupted; the run directory {0} holds what was recorded")]
    Interrupted(PathBuf),
    #[error(transparent)]
    RunDir(#[from] rundir::RunDirError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The run directory and its verdict.
#[derive(Debug)]
pub struct DrillRun {
    pub dir: PathBuf,
    pub verdict: Verdict,
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in seconds (UTC).
pub fn utc_stamp(unix_s: u64) -> String {
    let (y, m, d, secs) = rundir::stats::utc_civil(unix_s);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    Ok(rundir::io::write_json(path, value)?)
}

/// A command's first output line, bounded, for the manifest.
pub(crate) async fn version_of(program: &str, args: &[&str]) -> String {
    let run =
        tokio::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string(),
        _ => "unknown".into(),
    }
}

/// Resolves on `stop` (our SIGINT/SIGTERM handler) or when goose caught the signal instead (it
/// takes SIGINT over once a load starts).
pub(crate) async fn stop_or_goose(stop: impl std::future::Future<Output = ()>) {
    let goose_caught = async {
        while !loadgen::stop_requested() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = stop => {}
        () = goose_caught => {}
    }
}

/// Runs the drill. `stop` (Ctrl-C, SIGTERM) heals every fault and stops the system early.
pub async fn drill(
    options: DrillOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<DrillRun, DrillError> {
    let path = scenario::resolve(&options.scenario)?;
    let mut scenario = scenario::load(&path)?.scaled(options.scale).map_err(DrillError::Setup)?;
    if let Some(seed) = options.seed {
        scenario.seed = seed;
    }
    if let Some(runtime) = options.runtime {
        scenario.topology.runtime = runtime;
    }
    if scenario.topology.runtime != chaos::testbed::RuntimeKind::Containers {
        if let Some((component, image)) = options.images.first() {
            return Err(DrillError::Setup(format!(
                "--image {}={image}: images are for the container runtime; give --runtime containers",
                component.name()
            )));
        }
        if let Some(entry) = scenario.faults.iter().find(|f| f.kind == "partition") {
            return Err(DrillError::Setup(format!(
                "{}: the partition at {} runs on containers only (on processes every connection comes from \
                 127.0.0.1): set [topology] runtime = \"containers\" or give --runtime containers",
                path.display(),
                humantime::format_duration(entry.at)
            )));
        }
    }
    let schedule: ArrivalSchedule =
        scenario.load.phases.parse().map_err(|e: loadgen::schedule::ScheduleError| DrillError::Setup(e.0))?;
    let started_ms = chaos::events::unix_ms();
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", scenario.name, utc_stamp(started_ms / 1000))));
    // A run directory holds one run: old data (Redis, broker) would be replayed into this one.
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(DrillError::Setup(format!(
            "{}: exists and is not empty; give another --out or remove it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| DrillError::Setup(format!("{}: {e}", dir.display())))?;
    let dir = dir.canonicalize().map_err(|e| DrillError::Setup(format!("{}: {e}", dir.display())))?;
    let tansu = std::env::var("TANSU_BIN").unwrap_or_else(|_| {
        std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/tansu")).unwrap_or_else(|_| "tansu".into())
    });
    // Asked once (bounded), written at the start and again with the end time.
    let commit = version_of("git", &["rev-parse", "HEAD"]).await;
    let redis_version = version_of("redis-server", &["--version"]).await;
    let tansu_version = version_of(&tansu, &["--version"]).await;
    let manifest = |ended: Option<u64>| {
        json!({
            "scenario": scenario,
            "file": path.display().to_string(),
            "seed": scenario.seed,
            "scale": options.scale,
            "commit": commit,
            "versions": {
                "flashlab": env!("CARGO_PKG_VERSION"),
                "redis": redis_version,
                "tansu": tansu_version,
                "goose": "0.19",
            },
            "topology": scenario.topology,
            "flashsale_bin": options.flashsale_bin.as_ref().map(|p| p.display().to_string()),
            "env_overrides": options.env.iter().cloned().collect::<BTreeMap<String, String>>(),
            "images": options.images.iter().map(|(c, image)| (c.name(), image.clone())).collect::<BTreeMap<_, _>>(),
            "started_unix_ms": started_ms,
            "ended_unix_ms": ended,
        })
    };
    write_json(&dir.join("manifest.json"), &manifest(None))?;
    let events =
        EventLog::to_file(&dir.join("events.jsonl")).map_err(|e| DrillError::Setup(format!("events.jsonl: {e}")))?;

    // Ctrl-C / SIGTERM: a flag everything looks at.
    let stopped = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            stop_or_goose(stop).await;
            stopped.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    let stop_signal = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // The system.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("LOG_LEVEL".into(), "warn".into());
    env.insert("ORDERS_PARTITIONS".into(), scenario.topology.partitions.to_string());
    env.insert("PAYMENT_SEED".into(), scenario.seed.to_string());
    env.extend(scenario.env.clone());
    env.extend(options.env.iter().cloned());
    let config = TestbedConfig {
        dir: Some(dir.join("system")),
        flashsale_bin: options.flashsale_bin.clone(),
        gateways: scenario.topology.gateways,
        processors: scenario.topology.processors,
        payment: true,
        service_env: env.into_iter().collect(),
        seed: scenario.seed,
        monitoring: alerts::config(&scenario),
        redis_replicas: scenario.topology.redis_replicas,
        sentinel: (scenario.topology.redis_replicas > 0).then(|| chaos::components::SentinelSettings {
            down_after: scenario.topology.sentinel_down_after,
            // Long enough for one failover, short enough to retry within a drill.
            failover_timeout: (scenario.topology.sentinel_down_after * 2).max(std::time::Duration::from_secs(3)),
            ..chaos::testbed::replication::default_settings()
        }),
        runtime: scenario.topology.runtime,
        images: options.images.clone(),
        ..TestbedConfig::default()
    };
    if !options.quiet {
        eprintln!("drill {}: {} (run directory {})", scenario.name, scenario.description, dir.display());
        eprintln!(
            "starting the system on {}: redis, broker, payment, {} processor(s), {} gateway(s) ...",
            config.runtime, config.processors, config.gateways
        );
    }
    let testbed = tokio::select! {
        bed = Testbed::start(config) => bed.map_err(|e| DrillError::Setup(format!("bringing up the system: {e}")))?,
        _ = stop_signal() => return Err(DrillError::Interrupted(dir)),
    };
    let sources = Sources {
        redis: testbed.redis_direct_addr(),
        sentinels: testbed.admin_env().iter().find(|(k, _)| k == "REDIS_SENTINELS").map_or(Vec::new(), |(_, v)| {
            v.split(',').filter_map(|a| a.parse().ok()).collect()
        }),
        redis_nodes: testbed.redis_nodes(),
        kafka: testbed.kafka_direct_addr(),
        payment_url: testbed.payment_url().unwrap_or_default(),
        flashsale: testbed.flashsale_bin().to_path_buf(),
        admin_env: testbed.admin_env(),
        gateways: (0..testbed.gateway_count()).map(|i| testbed.gateway_addr(i)).collect(),
    };
    let gateway_urls: Vec<String> = (0..testbed.gateway_count()).map(|i| testbed.gateway_url(i)).collect();
    let front_url = testbed.front_url();
    let mut scrape_targets: Vec<(String, String)> = (0..testbed.gateway_count())
        .map(|i| (format!("gateway[{i}]"), scrape::metrics_url(testbed.gateway_addr(i))))
        .collect();
    scrape_targets.extend(
        (0..testbed.processor_count())
            .map(|i| (format!("processor[{i}]"), scrape::metrics_url(testbed.processor_addr(i)))),
    );
    let processor_addrs: Vec<std::net::SocketAddr> =
        (0..testbed.processor_count()).map(|i| testbed.processor_addr(i)).collect();
    if let Some(url) = testbed.payment_url() {
        if let Ok(addr) = url.trim_start_matches("http://").parse() {
            scrape_targets.push(("payment".into(), scrape::metrics_url(addr)));
        }
    }
    let targets = testbed.targets();
    let probes: Vec<(Target, chaos::probe::Probe)> =
        targets.iter().filter_map(|t| testbed.client_probe(*t).map(|p| (*t, p))).collect();
    events.record("system_up", json!({"components": targets}));
    let prometheus = testbed.monitoring().map(|m| m.prometheus_url());
    let testbed = Arc::new(tokio::sync::Mutex::new(testbed));
    // A bad candidate binary is a drill that cannot run (exit 2), found before the load.
    let releases = match release::Releases::new(&scenario, testbed.clone(), &sources.flashsale, events.clone()) {
        Ok(r) => r,
        Err(e) => {
            let _ = testbed.lock().await.stop_all().await;
            return Err(DrillError::Setup(e));
        }
    };
    let gate_watch = match (&releases, scenario.release.as_ref().and_then(|r| r.gate.clone()), prometheus) {
        (Some(releases), Some(gate), Some(url)) => {
            // Bounded: the load, the drain and a margin; stopped at the end of the run anyway.
            let limit = schedule.duration() + scenario.drain_timeout + Duration::from_secs(120);
            Some(releases.watch(gate, url, limit))
        }
        _ => None,
    };
    let injector = Injector::new(testbed.clone(), events.clone());
    let supervisor = match &scenario.supervisor {
        Some(config) => {
            injector.set_supervised(true);
            Some(Supervisor::start(testbed.clone(), injector.clone(), events.clone(), config.clone()).await)
        }
        None => None,
    };

    // Everything below ends in `finish`, which heals and stops the system whatever happened.
    let system = System {
        sources,
        gateway_urls,
        front_url,
        scrape_targets,
        processor_addrs,
        probes,
        testbed: testbed.clone(),
        releases: releases.clone(),
    };
    let result =
        run_inside(&scenario, &schedule, &dir, &events, &injector, system, &options, stopped.clone(), stop_signal)
            .await;
    // Nothing is restarted behind the lab's back from here on.
    drop(supervisor);
    if let Some(releases) = &releases {
        releases.finish();
    }
    if let Some(watch) = gate_watch {
        watch.abort();
    }
    let healed = injector.heal_all(if stopped.load(Ordering::SeqCst) { "drill stopped" } else { "drill over" }).await;
    if !options.quiet && !healed.is_empty() {
        eprintln!("healed {} fault(s) still in force", healed.len());
    }
    let stopped_system = testbed.lock().await.stop_all().await;
    events.record("system_down", json!({"ok": stopped_system.is_ok()}));
    let ended_ms = chaos::events::unix_ms();
    write_json(&dir.join("manifest.json"), &manifest(Some(ended_ms)))?;
    if stopped.load(Ordering::SeqCst) {
        return Err(DrillError::Interrupted(dir));
    }
    let (checks, figures, alert_scores) = result?;
    let outcome = Outcome::combine(checks.iter().map(|c| c.outcome));
    let verdict = Verdict {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed: scenario.seed,
        scale: options.scale,
        outcome,
        pass: outcome == Outcome::Pass,
        started_unix_ms: started_ms,
        ended_unix_ms: ended_ms,
        figures,
        checks,
        alerts: alert_scores,
    };
    write_json(&dir.join("verdict.json"), &verdict)?;
    Ok(DrillRun { dir, verdict })
}

#[allow(clippy::too_many_arguments)]
/// Where the running system answers, taken from the testbed before it is shared.
struct System {
    sources: Sources,
    gateway_urls: Vec<String>,
    /// Where the load goes (the front over several gateways, or the gateway).
    front_url: String,
    scrape_targets: Vec<(String, String)>,
    processor_addrs: Vec<std::net::SocketAddr>,
    probes: Vec<(Target, chaos::probe::Probe)>,
    /// For what the monitoring saw, read at the end.
    testbed: Arc<tokio::sync::Mutex<Testbed>>,
    /// The `[release]` candidate the timeline deploys, if any.
    releases: Option<release::Releases>,
}

#[allow(clippy::too_many_arguments)]
async fn run_inside<F, Fut>(
    scenario: &Scenario,
    schedule: &ArrivalSchedule,
    dir: &Path,
    events: &EventLog,
    injector: &Injector,
    system: System,
    options: &DrillOptions,
    stopped: Arc<AtomicBool>,
    stop_signal: F,
) -> Result<(Vec<CheckResult>, Figures, Vec<rundir::AlertScore>), DrillError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let System { sources, gateway_urls, front_url, scrape_targets, processor_addrs, probes, testbed, releases } =
        system;
    let sources = &sources;
    let mut results = Vec::new();
    for (item, qty) in &scenario.stock {
        final_state::admin(sources, &["stock", "set", item, &qty.to_string()]).await?;
    }
    // The warm-up's item, sold out (an item without stock at all is not decided: see the
    // processor's reservation).
    final_state::admin(sources, &["stock", "set", WARMUP_ITEM, "0"]).await?;
    events.record("stock_set", json!({"stock": scenario.stock}));

    // Warm-up: one order per gateway for an item with no stock, until it is decided — the
    // topics exist, producers and the consumer group are ready before the clock starts.
    warm_up(&gateway_urls, !processor_addrs.is_empty(), events).await?;

    // Steady state: every component answers its health probe through the client path.
    if scenario.steady_state.healthy {
        let mut unhealthy = Vec::new();
        for (target, probe) in &probes {
            if let Err(e) = probe.check(Duration::from_secs(2)).await {
                unhealthy.push(format!("{target}: {e}"));
            }
        }
        results.push(CheckResult::held(
            "steady state: every component healthy before the load",
            Kind::SteadyState,
            "all answer",
            if unhealthy.is_empty() { format!("{} healthy", probes.len()) } else { unhealthy.join("; ") },
            unhealthy.is_empty(),
        ));
    }

    let scraper = {
        let path = dir.join(rundir::files::METRICS);
        let redis = Some(scrape::RedisSource { first: sources.redis, sentinels: sources.sentinels.clone() });
        tokio::spawn(async move { scrape::run(scrape_targets, redis, &path).await })
    };
    let sampler = {
        let path = dir.join(rundir::files::PROCESSES);
        let testbed = testbed.clone();
        tokio::spawn(async move { procs::run(testbed, &path).await })
    };
    // The state just before the first repair step (the damage), when the timeline has one.
    let before_repair: Arc<Mutex<Option<FinalState>>> = Arc::new(Mutex::new(None));
    let items: Vec<String> = scenario.stock.keys().cloned().collect();
    let live = Arc::new(Live::default());
    let aborted = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let load_end = t0 + schedule.duration();

    // The fault timeline.
    let timeline = {
        let steps = scenario.steps();
        let injector = injector.clone();
        let events = events.clone();
        let sources = sources.clone();
        let dir = dir.to_path_buf();
        let stopped = stopped.clone();
        let aborted = aborted.clone();
        let quiet = options.quiet;
        let processors = processor_addrs.clone();
        let drain_limit = scenario.drain_timeout;
        let before_repair = before_repair.clone();
        let items = items.clone();
        let dir_for_ids = dir.clone();
        let live = live.clone();
        let releases = releases.clone();
        tokio::spawn(async move {
            // On the load's clock: its arrival 0 is due once every user is up, which can be
            // seconds after this task starts (a fault at 5 s must meet 5 s of traffic before it).
            let Some(start) = live.started(LOAD_START_LIMIT).await else {
                events.record("timeline_skipped", json!({"why": "the load did not start"}));
                return;
            };
            for (at, step) in steps {
                tokio::time::sleep_until(start + at).await;
                if stopped.load(Ordering::SeqCst) || aborted.load(Ordering::SeqCst) {
                    break;
                }
                // The one step that rewrites the state the checks judge (a DLQ replay only
                // appends records, a restore's damage stays visible until a reconcile): the
                // books are read before it, on the drained system.
                let repair = step == Step::ReconcileFix;
                // Processors stopped by the timeline: nothing can be in flight, orders wait
                // queued, and reconcile checks the group is empty before it writes.
                let stopped_for_repair = repair && processors_stopped(&processors).await;
                if stopped_for_repair {
                    events.record("reconcile_with_processors_stopped", json!({}));
                } else if repair {
                    // The runbook's order: reconcile once nothing is in flight (an order reserved
                    // but not yet decided would be "fixed" back into the stock).
                    let started = Instant::now();
                    let drained = drain(&processors, sources.kafka, drain_limit).await;
                    events.record(
                        "drain_for_reconcile",
                        json!({"drained": drained, "waited_ms": started.elapsed().as_millis() as u64}),
                    );
                }
                if repair && lock(&before_repair).is_none() {
                    // The damage, read before anything repairs it.
                    let ids = request_ids_so_far(&dir_for_ids);
                    match final_state::collect(&sources, &items, &ids).await {
                        Ok(state) => {
                            events.record(
                                "repair_snapshot",
                                json!({"before": format!("{step:?}"), "read_at_ms": state.read_at_ms}),
                            );
                            *lock(&before_repair) = Some(state);
                        }
                        Err(e) => {
                            events.record("repair_snapshot", json!({"error": format!("{e:#}")}));
                        }
                    }
                }
                run_step(step, &injector, &events, &sources, &dir, quiet, stopped_for_repair, releases.as_ref()).await;
                if aborted.load(Ordering::SeqCst) {
                    // The abort fired while this step was being applied.
                    injector.heal_all("abort condition").await;
                    break;
                }
            }
        })
    };

    // Abort condition: the error rate over the last window above the limit stops the faults.
    let abort_watch = scenario.abort.clone().map(|abort| {
        let live = live.clone();
        let injector = injector.clone();
        let events = events.clone();
        let aborted = aborted.clone();
        tokio::spawn(async move {
            let mut samples: std::collections::VecDeque<(Instant, u64, u64)> = Default::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = (Instant::now(), live.good.load(Ordering::Relaxed), live.bad.load(Ordering::Relaxed));
                samples.push_back(now);
                while samples.front().is_some_and(|s| now.0.duration_since(s.0) > abort.window) {
                    samples.pop_front();
                }
                let first = samples.front().copied().unwrap_or(now);
                let (good, bad) = (now.1 - first.1, now.2 - first.2);
                let rate = if good + bad == 0 { 0.0 } else { bad as f64 / (good + bad) as f64 };
                if good + bad >= 20 && rate > abort.max_error_rate {
                    aborted.store(true, Ordering::SeqCst);
                    events.record("abort", json!({"error_rate": rate, "limit": abort.max_error_rate, "window_s": abort.window.as_secs_f64()}));
                    eprintln!("ABORT: error rate {:.1}% over {:?} > {:.1}%: healing every fault", rate * 100.0, abort.window, abort.max_error_rate * 100.0);
                    injector.heal_all("abort condition").await;
                    return;
                }
            }
        })
    });

    // The live view.
    let view = (!options.quiet).then(|| {
        let live = live.clone();
        let injector = injector.clone();
        let schedule = schedule.clone();
        tokio::spawn(async move {
            let starts = schedule.phase_starts();
            let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
            let mut last = (0u64, 0u64);
            loop {
                tick.tick().await;
                let elapsed = t0.elapsed();
                let phase =
                    starts.iter().rposition(|s| *s <= elapsed).map(|i| schedule.phases[i].name.as_str()).unwrap_or("-");
                let phase = if Instant::now() > load_end { "drain" } else { phase };
                let (good, bad) = (live.good.load(Ordering::Relaxed), live.bad.load(Ordering::Relaxed));
                let faults: Vec<String> =
                    injector.list().iter().map(|f| format!("#{} {}", f.id, f.description)).collect();
                eprintln!(
                    "[{phase}] {:>5.0}s  {}/s ok  {}/s bad  faults: {}",
                    elapsed.as_secs_f64(),
                    good - last.0,
                    bad - last.1,
                    if faults.is_empty() { "none".to_string() } else { faults.join(", ") }
                );
                last = (good, bad);
            }
        })
    });

    // The load, on the same clock.
    let config = load::config(&scenario, &schedule, front_url, dir, Some(live.clone())).map_err(DrillError::Setup)?;
    events.record("load_start", json!({"phases": scenario.load.phases, "target": config.target}));
    let summary = loadgen::run(config, stop_signal()).await.context("the load")?;
    load::record(events, &schedule, &summary);
    if summary.interrupted {
        stopped.store(true, Ordering::SeqCst);
    }
    if let Some(v) = view {
        v.abort();
    }
    // Steps scheduled past the load still run (bounded by their offsets).
    let _ = timeline.await;
    if let Some(a) = abort_watch {
        a.abort();
    }
    if stopped.load(Ordering::SeqCst) {
        scraper.abort();
        sampler.abort();
        return Err(DrillError::Interrupted(dir.to_path_buf()));
    }
    let still = injector.heal_all("load over").await;
    if !still.is_empty() && !options.quiet {
        eprintln!("load over: healed {} fault(s) still in force", still.len());
    }

    // Drain: every processor idle (no lag, nothing in flight) twice in a row, bounded.
    events.record("drain_start", json!({"timeout_ms": scenario.drain_timeout.as_millis() as u64}));
    let drain_started = Instant::now();
    let drained = drain(&processor_addrs, sources.kafka, scenario.drain_timeout).await;
    events.record("drain_end", json!({"drained": drained, "waited_ms": drain_started.elapsed().as_millis() as u64}));
    results.push(CheckResult::held(
        "drained",
        Kind::SteadyState,
        format!("every order processed within {:?}", scenario.drain_timeout),
        format!(
            "{} after {:.1} s",
            if drained { "drained" } else { "NOT drained" },
            drain_started.elapsed().as_secs_f64()
        ),
        drained,
    ));
    scraper.abort();
    sampler.abort();
    let _ = scraper.await;
    let _ = sampler.await;

    // Final state and checks, from the run directory's records.
    let history = rundir::history::read(&dir.join(rundir::files::HISTORY))?;
    let request_ids = request_ids_of(&history);
    let state: FinalState =
        final_state::collect(sources, &items, &request_ids).await.context("collecting the final state")?;
    let states = States { after: state, before_repair: lock(&before_repair).take().map(Box::new) };
    rundir::state::write(&dir.join(rundir::files::FINAL_STATE), &states)?;
    let all_events: Vec<serde_json::Value> = events.recent();
    let scrapes = rundir::metrics::read(&dir.join(rundir::files::METRICS))?;
    if let Some(monitoring) = testbed.lock().await.monitoring() {
        // Without this file the alert checks fail ("monitoring ran"): nothing is hidden.
        match alerts::collect(monitoring, scenario).await {
            Ok(records) => rundir::alerts::write(&dir.join(rundir::files::ALERTS), &records)?,
            Err(e) => {
                events.record("monitoring_error", json!({"error": e}));
            }
        }
    }
    let alert_records = rundir::alerts::read(&dir.join(rundir::files::ALERTS))?;
    let evidence = checks::Evidence {
        scenario,
        history: &history,
        events: &all_events,
        scrapes: &scrapes,
        states: &states,
        alerts: &alert_records,
        run_end_ms: chaos::events::unix_ms(),
    };
    let (mut checked, figures, alert_scores) = checks::check(&evidence);
    if aborted.load(Ordering::SeqCst) {
        results.push(CheckResult::held(
            "abort condition",
            Kind::Slo,
            format!("error rate ≤ {:.1}%", scenario.abort.as_ref().map(|a| a.max_error_rate * 100.0).unwrap_or(0.0)),
            "exceeded: faults stopped early",
            false,
        ));
    }
    results.append(&mut checked);
    Ok((results, figures, alert_scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_248_000), "20261121T080000Z");
        assert_eq!(utc_stamp(1_795_248_000 + 3_723), "20261121T090203Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
