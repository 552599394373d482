//! A trial against a deployment the lab did not start (`flashlab capacity --target URL`): load
//! only — no testbed, no faults, no `/proc`, no final state. What is judged, and from where:
//!
//! - availability (unserved arrivals counted) and the corrected p99 of `POST /buy`: from the
//!   history, by the drill's own checks;
//! - the generator kept its schedule: the same check, from the load's end in `events.jsonl`;
//! - time to decision (p99): from the processors' `processor_time_to_decision_seconds`
//!   histogram, and consumer lag (not growing): from their `processor_consumer_lag` — both only
//!   when `--metrics` names the processors' pages; without them the trial cannot judge and is
//!   invalid, never a pass;
//! - the stock lasted: no order decided sold out (a sold-out item is decided faster and
//!   flatters the rate; the lab cannot restock a deployment, so such a trial is invalid).
//!
//! A deployment is not fresh between trials: before each one the lab waits (at most
//! [`SETTLE_LIMIT`]) until the processors' pages show no lag and nothing in flight, so that a
//! trial does not inherit the backlog of the one before; one that never settles is invalid.
//! After the load the pages are scraped until the same holds (the slowest decisions are the
//! histogram's tail); orders still undecided then fail the time-to-decision check.
//!
//! Every trial uses its own request ids (its seed mixes the search's start time and the trial's
//! index): a deployment remembers request ids, and a repeated one would be answered 409.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chaos::EventLog;
use loadgen::ArrivalSchedule;
use rundir::capacity::{Criteria, Role, Trial, TrialOutcome};
use rundir::state::States;
use rundir::{CheckResult, Kind, Outcome, Verdict};

use super::trial::{self, Setup};
use crate::drill::checks::{self, slo, Evidence};
use crate::drill::{load, scrape};
use crate::load_cli::check_url;

/// The first scrape of a `--metrics` page may take this long.
const FIRST_SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// The scrape period: twice a second, so that a short trial's second half has enough lag
/// readings for a slope (a drill's 1 s gave two or three in a 5 s trial; a test saw half the
/// trials without a slope).
const SCRAPE_PERIOD: Duration = Duration::from_millis(500);
/// The longest wait for the deployment to work off what the trial before left.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// The deployment a search loads: its gateway (or front) and the `/metrics` pages it exposes.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub target: String,
    /// (component, URL): `processor[0]`, `gateway[0]`, `payment`, or the name given.
    pub metrics: Vec<(String, String)>,
}

impl Deployment {
    /// Whether the processors' pages were given (time to decision and lag need them).
    pub fn sees_processors(&self) -> bool {
        self.metrics.iter().any(|(c, _)| c.starts_with("processor"))
    }
}

/// Checks the target and the `--metrics` pages (loopback unless `allow_remote`) and names each
/// page: `NAME=URL` as given, a bare URL by what it exports (`processor_…` → `processor[i]`,
/// `gateway_…` → `gateway[i]`, `payment_…` → `payment`). A page that does not answer now is
/// refused: a search that cannot see what it was told to watch would judge blind.
pub async fn deployment(target: &str, allow_remote: bool, metrics: &[String]) -> anyhow::Result<Deployment> {
    let target = check_url("--target", target, allow_remote).map_err(anyhow::Error::msg)?;
    let http = reqwest::Client::builder().timeout(FIRST_SCRAPE_TIMEOUT).build()?;
    let mut named: Vec<(String, String)> = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for spec in metrics {
        let (given, url) = match spec.split_once('=') {
            Some((name, url)) if !name.contains('/') => (Some(name.trim().to_string()), url),
            _ => (None, spec.as_str()),
        };
        let url = check_url("--metrics", url, allow_remote).map_err(anyhow::Error::msg)?;
        let text = async { http.get(&url).send().await?.error_for_status()?.text().await }
            .await
            .with_context(|| format!("--metrics {url}: no metrics page there"))?;
        let page = scrape::parse(&text);
        let has = |prefix: &str| page.keys().any(|k| k.starts_with(prefix));
        let name = match given {
            Some(name) if !name.is_empty() => name,
            Some(_) => anyhow::bail!("--metrics {spec:?}: an empty name before '='"),
            None => {
                let kind = if has("processor_") {
                    "processor"
                } else if has("gateway_") {
                    "gateway"
                } else if has("payment_") {
                    "payment"
                } else {
                    "component"
                };
                let n = counts.entry(kind).or_default();
                *n += 1;
                if kind == "payment" && *n == 1 {
                    kind.to_string()
                } else {
                    format!("{kind}[{}]", *n - 1)
                }
            }
        };
        if named.iter().any(|(n, _)| *n == name) {
            anyhow::bail!("--metrics {spec:?}: {name} twice");
        }
        named.push((name, url));
    }
    Ok(Deployment { target, metrics: named })
}

/// The trial's own seed: the search's seed, its start and the trial's index (fresh request ids
/// against a deployment that remembers them); 48 bits (a scenario's seed is a TOML integer).
pub fn trial_seed(seed: u64, started_ms: u64, index: usize) -> u64 {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ started_ms.rotate_left(17)
        ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed & 0xFFFF_FFFF_FFFF
}

/// Runs a trial against the deployment into `dir`. `Err`: interrupted.
pub async fn run(
    dep: &Deployment,
    setup: &Setup,
    criteria: &Criteria,
    (index, role, rate, duration_s): (usize, Role, f64, f64),
    dir: &Path,
    rel: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Trial, ()> {
    let invalid = |reason: String| trial::invalid((index, role, rate, duration_s), &rel, reason);
    if let Err(left) = settle(dep).await {
        return Ok(invalid(format!(
            "the deployment did not settle within {} s before the trial: {left}",
            SETTLE_LIMIT.as_secs()
        )));
    }
    let prepared = prepare(setup, criteria, rate, duration_s, dir);
    let (scenario, schedule, events) = match prepared {
        Ok(p) => p,
        Err(e) => return Ok(invalid(format!("{e:#}"))),
    };
    let config = match load::config(&scenario, &schedule, dep.target.clone(), dir, None) {
        Ok(c) => c,
        Err(e) => return Ok(invalid(e)),
    };
    let scraper = {
        let path = dir.join(rundir::files::METRICS);
        let targets = dep.metrics.clone();
        tokio::spawn(async move { scrape::run_every(SCRAPE_PERIOD, targets, None, &path).await })
    };
    events.record("load_start", serde_json::json!({"phases": scenario.load.phases, "target": dep.target}));
    let summary = loadgen::run(config, stop).await;
    // The scrapes go on until every accepted order is decided (bounded): the slowest decisions
    // are the histogram's tail.
    let settled = settle(dep).await;
    tokio::time::sleep(SCRAPE_PERIOD * 2).await;
    scraper.abort();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return Ok(invalid(format!("the load could not run: {e}"))),
    };
    load::record(&events, &schedule, &summary);
    if summary.interrupted {
        return Err(());
    }
    let read = || -> Result<_, rundir::RunDirError> {
        Ok((
            rundir::history::read(&dir.join(rundir::files::HISTORY))?,
            rundir::events::read(&dir.join(rundir::files::EVENTS))?,
            rundir::metrics::read(&dir.join(rundir::files::METRICS)).unwrap_or_default(),
        ))
    };
    let (history, recorded, scrapes) = match read() {
        Ok(r) => r,
        Err(e) => return Ok(invalid(format!("the trial's records: {e}"))),
    };
    let from = summary.started_unix_ms;
    let to = from + (duration_s * 1000.0) as u64;
    let states = States::default();
    let ev = Evidence {
        scenario: &scenario,
        history: &history,
        events: &recorded,
        scrapes: &scrapes,
        states: &states,
        alerts: &[],
        run_end_ms: chaos::events::unix_ms(),
    };
    let (mut results, mut figures) = (Vec::new(), rundir::Figures::default());
    let judged = checks::Judged::new(&ev);
    slo::availability(&ev, &judged, &mut results, &mut figures);
    slo::latency(&ev, &judged, &mut results);
    let mut m = trial::measure(dir, &rundir::Verdict { figures: figures.clone(), ..empty_verdict() });
    m.components = super::signals::usage_from_scrapes(&scrapes, from, to);
    // Decisions of orders accepted in the load, read until the scrapes end.
    let decided = super::signals::time_to_decision(&scrapes, from, u64::MAX);
    let mut ttd = time_to_decision_check(decided, criteria, scenario.evidence.min_decisions, dep);
    if let Err(left) = &settled {
        // Orders still undecided past the bound: the histogram lacks the slowest.
        ttd.outcome = Outcome::Fail;
        ttd.measured
            .push_str(&format!("; not every order decided {} s after the load: {left}", SETTLE_LIMIT.as_secs()));
    }
    results.push(ttd);
    m.time_to_decision_p99_ms = decided.and_then(|(_, p)| p);
    results.push(stock_lasted(&history, m.sold_out, dep));
    let verdict = Verdict { checks: results, figures, ..empty_verdict() };
    let _ = rundir::io::write_json(&dir.join(rundir::files::VERDICT), &verdict);
    let (outcome, mut reasons) = trial::judge(&verdict, &m, criteria, rate);
    if outcome == TrialOutcome::Invalid && !dep.sees_processors() {
        reasons.push("give the processors' /metrics pages with --metrics".into());
    }
    Ok(Trial { index, role, rate, duration_s, dir: rel, outcome, reasons, m })
}

/// Waits until every processor page shows no consumer lag and no order in flight (at most
/// [`SETTLE_LIMIT`]); `Err` says what was left. Without processor pages there is nothing to
/// wait for.
async fn settle(dep: &Deployment) -> Result<(), String> {
    let pages: Vec<&String> = dep.metrics.iter().filter(|(c, _)| c.starts_with("processor")).map(|(_, u)| u).collect();
    if pages.is_empty() {
        return Ok(());
    }
    let http = reqwest::Client::builder().timeout(FIRST_SCRAPE_TIMEOUT).build().map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    loop {
        let (mut lag, mut in_flight, mut unanswered) = (0.0, 0.0, 0);
        for url in &pages {
            let text = async { http.get(url.as_str()).send().await?.error_for_status()?.text().await }.await;
            match text {
                Ok(text) => {
                    let page = scrape::parse(&text);
                    lag += scrape::sum(&page, "processor_consumer_lag");
                    in_flight += scrape::sum(&page, "processor_orders_in_flight");
                }
                Err(_) => unanswered += 1,
            }
        }
        if lag == 0.0 && in_flight == 0.0 && unanswered == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("lag {lag:.0}, {in_flight:.0} in flight, {unanswered} page(s) unanswered"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The trial's scenario (its load and SLOs), schedule and event log.
fn prepare(
    setup: &Setup,
    criteria: &Criteria,
    rate: f64,
    duration_s: f64,
    dir: &Path,
) -> anyhow::Result<(crate::scenario::Scenario, ArrivalSchedule, EventLog)> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let text = trial::scenario_text(setup, criteria, rate, duration_s);
    let scenario = crate::scenario::parse(&text, "trial").map_err(|e| anyhow::anyhow!("{e}"))?;
    let schedule: ArrivalSchedule =
        scenario.load.phases.parse().map_err(|e: loadgen::schedule::ScheduleError| anyhow::anyhow!(e.0))?;
    let events = EventLog::to_file(&dir.join(rundir::files::EVENTS)).with_context(|| dir.display().to_string())?;
    Ok((scenario, schedule, events))
}

fn empty_verdict() -> Verdict {
    Verdict {
        scenario: "capacity trial".into(),
        description: String::new(),
        seed: 0,
        scale: 1.0,
        outcome: Outcome::Inconclusive,
        pass: false,
        started_unix_ms: 0,
        ended_unix_ms: 0,
        figures: rundir::Figures::default(),
        checks: Vec::new(),
        alerts: Vec::new(),
    }
}

/// Time to decision p99 from the processors' histogram; not measured without their pages.
pub fn time_to_decision_check(
    decided: Option<(u64, Option<f64>)>,
    criteria: &Criteria,
    need: u64,
    dep: &Deployment,
) -> CheckResult {
    let limit = criteria.time_to_decision_p99_ms;
    let target = format!("≤ {limit} ms, accepted → decided");
    let needed = format!("≥ {need} decided orders");
    match decided {
        None => CheckResult::new(
            "time to decision (p99)",
            Kind::Slo,
            target,
            if dep.sees_processors() {
                "the processors export no processor_time_to_decision_seconds".to_string()
            } else {
                "not measured: no processor's /metrics given".to_string()
            },
            Outcome::Inconclusive,
        )
        .needing(needed, "none"),
        Some((n, p99)) => CheckResult::new(
            "time to decision (p99)",
            Kind::Slo,
            target,
            p99.map(|p| format!("{p:.0} ms over {n} orders (histogram)")).unwrap_or_else(|| "no decided orders".into()),
            Outcome::judge(p99.is_none_or(|p| p <= limit), n >= need),
        )
        .needing(needed, format!("{n} decided")),
    }
}

/// The item did not sell out during the trial (the processors' sold-out count, or a buyer's
/// poll that saw it). Without the processors' count it cannot say: inconclusive.
pub fn stock_lasted(history: &[rundir::Attempt], sold_out: Option<u64>, dep: &Deployment) -> CheckResult {
    let polled: Vec<String> = history
        .iter()
        .filter(|a| a.order_status.as_deref() == Some("FAILED_SOLD_OUT"))
        .take(rundir::verdict::EXAMPLES)
        .map(|a| a.request_id.clone())
        .collect();
    let n = sold_out.unwrap_or(0).max(polled.len() as u64);
    // Only the processors' count sees every decision; polls see a sample.
    let enough = sold_out.is_some() && dep.sees_processors();
    let outcome = if n > 0 { Outcome::Inconclusive } else { Outcome::judge(true, enough) };
    CheckResult::new(
        "stock lasted the trial",
        Kind::SteadyState,
        "no order decided sold out (restock the item, or give a larger one with --item)",
        format!("{n} sold out"),
        outcome,
    )
    .needing("an item with stock for every arrival", format!("{n} decided sold out"))
    .with(polled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(processors: bool) -> Deployment {
        let metrics =
            if processors { vec![("processor[0]".into(), "http://127.0.0.1:1/metrics".into())] } else { vec![] };
        Deployment { target: "http://127.0.0.1:1".into(), metrics }
    }

    fn criteria() -> Criteria {
        Criteria {
            availability: 0.999,
            p99_ms: 1000.0,
            time_to_decision_p99_ms: 5000.0,
            lag_growth_share: 0.02,
            max_dropped: 0,
        }
    }

    #[test]
    fn time_to_decision_passes_only_on_enough_decisions_within_the_limit() {
        let c = criteria();
        assert_eq!(time_to_decision_check(Some((200, Some(900.0))), &c, 50, &dep(true)).outcome, Outcome::Pass);
        assert_eq!(time_to_decision_check(Some((200, Some(9434.0))), &c, 50, &dep(true)).outcome, Outcome::Fail);
        assert_eq!(time_to_decision_check(Some((10, Some(900.0))), &c, 50, &dep(true)).outcome, Outcome::Inconclusive);
        let blind = time_to_decision_check(None, &c, 50, &dep(false));
        assert_eq!(blind.outcome, Outcome::Inconclusive);
        assert!(blind.measured.contains("no processor's /metrics given"), "{blind:?}");
    }

    #[test]
    fn the_stock_lasted_only_when_the_processors_counted_no_sell_out() {
        assert_eq!(stock_lasted(&[], Some(0), &dep(true)).outcome, Outcome::Pass);
        assert_eq!(stock_lasted(&[], Some(3), &dep(true)).outcome, Outcome::Inconclusive);
        // Nothing counted it: not a pass.
        assert_eq!(stock_lasted(&[], None, &dep(false)).outcome, Outcome::Inconclusive);
    }

    #[test]
    fn every_trial_and_every_search_has_its_own_seed_that_a_scenario_can_hold() {
        let seeds: std::collections::BTreeSet<u64> = (0..50)
            .flat_map(|i| [super::trial_seed(1, 1_700_000_000_000, i), super::trial_seed(1, 1_700_000_000_001, i)])
            .collect();
        assert_eq!(seeds.len(), 100);
        assert!(seeds.iter().all(|s| *s <= i64::MAX as u64));
    }
}
