//! One trial of a capacity search: a drill at one constant open arrival rate, on a fresh
//! system (the same stock, the same warm-up: every trial starts from the same state), judged
//! on the search's [`Criteria`] and measured for attribution.
//!
//! The trial is an ordinary scenario file written into its run directory (`scenario.toml`):
//! `flashlab drill DIR/scenario.toml` runs it again by hand.

use std::collections::BTreeMap;
use std::path::Path;

use rundir::capacity::{Criteria, Role, Trial, TrialMeasures, TrialOutcome};
use rundir::{Outcome, Verdict};

use crate::drill::{self, DrillError, DrillOptions};

/// The topology and traffic every trial of one topology shares.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `processors=2`.
    pub label: String,
    pub gateways: usize,
    pub processors: usize,
    pub partitions: u32,
    /// The services' environment (the rate limit is raised: one buyer never meets it).
    pub env: BTreeMap<String, String>,
    pub mix: String,
    pub polls: u32,
    pub seed: u64,
    /// The item the trials sell ([`ITEM`] on the lab's own system).
    pub item: String,
    /// Where the lab's own system runs.
    pub runtime: chaos::testbed::RuntimeKind,
    /// On containers: components from other images (`--image`).
    pub images: Vec<(chaos::containers::images::Component, String)>,
}

/// The item the trials sell on the lab's own system.
pub const ITEM: &str = "101";

/// Generator users for a rate: enough that an answer taking half a second does not queue
/// arrivals, bounded (each is a goose user with its own client).
pub fn users_for(rate: f64) -> usize {
    ((rate * 0.5).ceil() as usize).clamp(64, 4096)
}

/// The scenario of a trial.
pub fn scenario_text(setup: &Setup, criteria: &Criteria, rate: f64, duration_s: f64) -> String {
    let arrivals = (rate * duration_s).ceil() as u64;
    // Four units per arrival (a buyer orders 1 or 2): the trial never sells
    // out (a sold-out item is decided faster and would flatter the answer).
    let stock = (arrivals * 4).max(1000);
    let buyers = (arrivals * 4).max(100_000);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("RATE_LIMIT_MAX_REQUESTS".into(), "1000000".into());
    env.extend(setup.env.clone());
    let env: String = env.iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect();
    format!(
        r#"name = "capacity-{label}-{rate:.0}"
description = "capacity trial: {rate:.0} orders/s for {duration_s:.0} s with {label}"
seed = {seed}
drain_timeout = "60s"

[topology]
gateways = {gateways}
processors = {processors}
partitions = {partitions}
runtime = "{runtime}"

[env]
{env}
[stock]
{item:?} = {stock}

[load]
phases = "trial:{duration_ms}ms@{rate:.2}"
mix = {mix:?}
max_in_flight = {users}
buyers = {buyers}
polls = {polls}

[slo]
availability = {availability}
p99_ms = {p99}
time_to_decision_p99_ms = {ttd}

[alerts]
monitoring = false
"#,
        label = setup.label.replace('=', "-"),
        item = setup.item,
        seed = setup.seed,
        gateways = setup.gateways,
        processors = setup.processors,
        partitions = setup.partitions,
        runtime = setup.runtime,
        duration_ms = (duration_s * 1000.0).round() as u64,
        mix = setup.mix,
        users = users_for(rate),
        polls = setup.polls,
        availability = criteria.availability,
        p99 = criteria.p99_ms,
        ttd = criteria.time_to_decision_p99_ms,
    )
}

/// A trial that could not judge, and why (it measured nothing).
pub fn invalid((index, role, rate, duration_s): (usize, Role, f64, f64), rel: &str, reason: String) -> Trial {
    Trial {
        index,
        role,
        rate,
        duration_s,
        dir: rel.to_string(),
        outcome: TrialOutcome::Invalid,
        reasons: vec![reason],
        m: TrialMeasures::default(),
    }
}

/// Runs a trial into `dir` (relative name `rel` in the search's directory). `Err`: interrupted.
pub async fn run(
    setup: &Setup,
    criteria: &Criteria,
    (index, role, rate, duration_s): (usize, Role, f64, f64),
    dir: &Path,
    rel: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Trial, ()> {
    let failed = |reason: String| invalid((index, role, rate, duration_s), &rel, reason);
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Ok(failed(format!("{}: {e}", dir.display())));
    }
    let file = dir.join("scenario.toml");
    if let Err(e) = std::fs::write(&file, scenario_text(setup, criteria, rate, duration_s)) {
        return Ok(failed(format!("{}: {e}", file.display())));
    }
    let options = DrillOptions {
        out: Some(dir.join("run")),
        quiet: true,
        images: setup.images.clone(),
        ..DrillOptions::new(file.display().to_string(), 1.0)
    };
    match drill::drill(options, stop).await {
        Ok(run) => {
            let m = measure(&run.dir, &run.verdict);
            let (outcome, reasons) = judge(&run.verdict, &m, criteria, rate);
            Ok(Trial { index, role, rate, duration_s, dir: rel, outcome, reasons, m })
        }
        Err(DrillError::Interrupted(_)) => Err(()),
        Err(e) => Ok(failed(format!("the drill could not run: {e}"))),
    }
}

/// The trial's outcome: invalid when any check could not judge (the generator off its
/// schedule among them), failed when a check or a capacity criterion broke, else sustained.
pub fn judge(verdict: &Verdict, m: &TrialMeasures, criteria: &Criteria, rate: f64) -> (TrialOutcome, Vec<String>) {
    let said = |c: &rundir::CheckResult| {
        let mut s = format!("{}: {} (target {})", c.name, c.measured, c.target);
        if !c.needed.is_empty() {
            s.push_str(&format!("; needed {}, seen {}", c.needed, c.seen));
        }
        s
    };
    let inconclusive: Vec<String> =
        verdict.checks.iter().filter(|c| c.outcome == Outcome::Inconclusive).map(said).collect();
    if !inconclusive.is_empty() {
        return (TrialOutcome::Invalid, inconclusive);
    }
    let mut failed: Vec<String> = verdict.checks.iter().filter(|c| c.outcome == Outcome::Fail).map(said).collect();
    if let (Some(slope), Some(last)) = (m.lag_slope_per_s, m.lag_last) {
        if lag_growing(slope, last, rate, criteria.lag_growth_share) {
            failed.push(format!(
                "consumer lag growing: +{slope:.0} messages/s over the second half, {last:.0} at the end (limit +{:.0}/s)",
                criteria.lag_growth_share * rate
            ));
        }
    } else {
        return (TrialOutcome::Invalid, vec!["consumer lag: not measured (no processor scraped)".into()]);
    }
    if m.dropped > criteria.max_dropped {
        failed.push(format!("{} arrivals dropped (limit {})", m.dropped, criteria.max_dropped));
    }
    if failed.is_empty() {
        (TrialOutcome::Sustained, Vec::new())
    } else {
        (TrialOutcome::Failed, failed)
    }
}

/// Growing: the slope above `share` of the rate per second and more than a second of intake
/// left behind at the end (a burst that is being worked off is not growth).
pub fn lag_growing(slope_per_s: f64, last: f64, rate: f64, share: f64) -> bool {
    slope_per_s > share * rate && last > rate
}

/// Reads what the trial measured from its run directory (figures it lacks stay `None`).
pub fn measure(dir: &Path, verdict: &Verdict) -> TrialMeasures {
    let mut m = TrialMeasures { availability: verdict.figures.availability, ..TrialMeasures::default() };
    m.unserved = verdict.figures.unserved;
    m.time_to_decision_p99_ms = verdict.figures.time_to_decision.get("trial").map(|d| d.p99_ms);
    let summary: Option<loadgen::LoadSummary> =
        rundir::io::read_json(&dir.join(rundir::files::LOAD_SUMMARY)).ok();
    let Some(summary) = summary else { return m };
    let phase = summary.phases.first().cloned().unwrap_or_else(|| summary.total.clone());
    let from = summary.started_unix_ms;
    let to = from + (phase.duration_s * 1000.0) as u64;
    let secs = phase.duration_s.max(1e-3);
    m.offered = phase.offered;
    m.started_rate = phase.achieved_rate;
    m.accepted_rate = phase.outcomes.get("202").copied().unwrap_or(0) as f64 / secs;
    m.dropped = phase.dropped;
    if phase.started > 0 {
        m.p99_ms = Some(phase.corrected.p99_ms);
        m.service_p99_ms = Some(phase.service.p99_ms);
    }
    if let Some(g) = &summary.generator {
        m.late_arrivals = g.late_arrivals;
        m.users_ready = g.users_ready_at_start >= g.max_in_flight;
    }
    let processes = rundir::processes::read(&dir.join(rundir::files::PROCESSES)).unwrap_or_default();
    m.components = rundir::processes::usage_between(&processes, from, to);
    m.generator_cores = m.components.get(drill::procs::LAB).map(|u| u.cores);
    let scrapes = rundir::metrics::read(&dir.join(rundir::files::METRICS)).unwrap_or_default();
    crate::capacity::signals::fill(&mut m, &scrapes, from, to);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rundir::{CheckResult, Figures, Kind};

    fn verdict(checks: Vec<CheckResult>) -> Verdict {
        Verdict {
            scenario: "t".into(),
            description: String::new(),
            seed: 1,
            scale: 1.0,
            outcome: Outcome::combine(checks.iter().map(|c| c.outcome)),
            pass: false,
            started_unix_ms: 0,
            ended_unix_ms: 0,
            figures: Figures::default(),
            checks,
            alerts: Vec::new(),
        }
    }

    fn criteria() -> Criteria {
        Criteria { availability: 0.999, p99_ms: 1000.0, time_to_decision_p99_ms: 5000.0, lag_growth_share: 0.02, max_dropped: 0 }
    }

    fn steady() -> TrialMeasures {
        TrialMeasures { lag_slope_per_s: Some(1.0), lag_last: Some(20.0), ..TrialMeasures::default() }
    }

    #[test]
    fn each_criterion_fails_the_trial_and_too_little_evidence_makes_it_invalid() {
        let ok = CheckResult::held("availability", Kind::Slo, "≥ 99.9%", "100%", true);
        let (o, r) = judge(&verdict(vec![ok.clone()]), &steady(), &criteria(), 1000.0);
        assert_eq!((o, r.len()), (TrialOutcome::Sustained, 0));
        // A check that broke.
        let broke = CheckResult::held("p99 latency", Kind::Slo, "≤ 1000 ms", "1400 ms", false);
        let (o, r) = judge(&verdict(vec![ok.clone(), broke]), &steady(), &criteria(), 1000.0);
        assert_eq!(o, TrialOutcome::Failed);
        assert!(r[0].starts_with("p99 latency: 1400 ms"), "{r:?}");
        // Lag growing: +30/s (limit 20/s at 1000/s) with 1,500 left (> 1 s of intake).
        let growing = TrialMeasures { lag_slope_per_s: Some(30.0), lag_last: Some(1500.0), ..TrialMeasures::default() };
        let (o, r) = judge(&verdict(vec![ok.clone()]), &growing, &criteria(), 1000.0);
        assert_eq!(o, TrialOutcome::Failed);
        assert!(r[0].starts_with("consumer lag growing"), "{r:?}");
        // The same slope with little left behind is a burst being worked off, not growth.
        let burst = TrialMeasures { lag_slope_per_s: Some(30.0), lag_last: Some(500.0), ..TrialMeasures::default() };
        assert_eq!(judge(&verdict(vec![ok.clone()]), &burst, &criteria(), 1000.0).0, TrialOutcome::Sustained);
        // Dropped arrivals.
        let dropped = TrialMeasures { dropped: 3, ..steady() };
        assert_eq!(judge(&verdict(vec![ok.clone()]), &dropped, &criteria(), 1000.0).0, TrialOutcome::Failed);
        // Lag never measured: invalid, not a pass.
        let (o, r) = judge(&verdict(vec![ok.clone()]), &TrialMeasures::default(), &criteria(), 1000.0);
        assert_eq!(o, TrialOutcome::Invalid);
        assert!(r[0].contains("not measured"), "{r:?}");
        // An inconclusive check (the generator's) wins over a failure: invalid.
        let mut late = CheckResult::held("generator kept its schedule", Kind::SteadyState, "on schedule", "900 late", false);
        late.outcome = Outcome::Inconclusive;
        let broke = CheckResult::held("p99 latency", Kind::Slo, "≤ 1000 ms", "9000 ms", false);
        let (o, r) = judge(&verdict(vec![broke, late]), &steady(), &criteria(), 1000.0);
        assert_eq!(o, TrialOutcome::Invalid);
        assert!(r[0].starts_with("generator kept its schedule"), "{r:?}");
    }

    #[test]
    fn a_trial_on_containers_says_so_in_its_scenario() {
        let setup = Setup {
            label: "processors=1".into(),
            gateways: 1,
            processors: 1,
            partitions: 3,
            env: BTreeMap::new(),
            mix: "buyer=100".into(),
            polls: 0,
            seed: 1,
            item: ITEM.into(),
            runtime: chaos::testbed::RuntimeKind::Containers,
            images: Vec::new(),
        };
        let text = scenario_text(&setup, &criteria(), 50.0, 5.0);
        let scenario = crate::scenario::parse(&text, "trial.toml").expect("the trial's scenario parses");
        assert_eq!(scenario.topology.runtime, chaos::testbed::RuntimeKind::Containers);
    }
}
