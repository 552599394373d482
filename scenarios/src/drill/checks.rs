//! The checks of a run: SLOs, DESIGN.md's six invariants and the steady-state hypothesis, from
//! the run directory's history, events and final state, in one pass over each.
//!
//! Availability counts good answers (DESIGN.md): 2xx, 409 for a *true* duplicate (an earlier
//! attempt of that `request_id` was accepted or its outcome is unknown), 429 and 400. Everything
//! else — other 4xx, 5xx, timeouts, connection errors, a 409 for an id nobody took — is bad.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use flashsale::order::{Decision, Outcome};
use loadgen::history::{Attempt, Class, Op};
use loadgen::LoadSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::final_state::FinalState;
use crate::scenario::Scenario;

/// How many example ids a failed check quotes.
const EXAMPLES: usize = 5;
/// A 30-day 99.9% error budget, in seconds of total outage.
const BUDGET_30D_S: f64 = 30.0 * 86_400.0 * 0.001;
/// RTO: the SLI must stay above target this long to count as recovered.
const RTO_HOLD: Duration = Duration::from_secs(10);
/// The drill's warm-up orders (for an item with no stock) are not the load's.
pub const WARMUP_PREFIX: &str = "warmup-";
/// A window with fewer requests than this is not judged.
const MIN_REQUESTS: u64 = 20;

/// What kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SteadyState,
    Slo,
    Invariant,
    /// A fault's own check (did it take effect, did it heal).
    Fault,
}

/// One row of the verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: Kind,
    pub target: String,
    pub measured: String,
    pub pass: bool,
    /// Example request_ids and what is wrong with them.
    pub evidence: Vec<String>,
}

impl CheckResult {
    fn new(name: &str, kind: Kind, target: impl Into<String>, measured: impl Into<String>, pass: bool) -> Self {
        CheckResult {
            name: name.into(),
            kind,
            target: target.into(),
            measured: measured.into(),
            pass,
            evidence: vec![],
        }
    }

    fn with(mut self, evidence: Vec<String>) -> Self {
        self.evidence = evidence.into_iter().take(EXAMPLES).collect();
        self
    }
}

/// A fault's time window, from `events.jsonl` (ms since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultWindow {
    pub id: u64,
    pub description: String,
    pub start_ms: u64,
    /// When it was lifted; `None`: never (until the end of the run).
    pub end_ms: Option<u64>,
}

/// The fault windows in `events`.
pub fn windows(events: &[Value]) -> Vec<FaultWindow> {
    let mut out: BTreeMap<u64, FaultWindow> = BTreeMap::new();
    for e in events {
        let id = e["id"].as_u64().unwrap_or(0);
        match e["event"].as_str() {
            Some("fault_start") => {
                out.insert(
                    id,
                    FaultWindow {
                        id,
                        description: e["description"].as_str().unwrap_or_default().to_string(),
                        start_ms: e["ts_ms"].as_u64().unwrap_or(0),
                        end_ms: None,
                    },
                );
            }
            Some("fault_stop") => {
                if let Some(w) = out.get_mut(&id) {
                    w.end_ms = e["undone_ms"].as_u64().or(e["ts_ms"].as_u64());
                }
            }
            _ => {}
        }
    }
    out.into_values().collect()
}

/// Everything the checks read.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub scenario: &'a Scenario,
    pub history: &'a [Attempt],
    pub events: &'a [Value],
    pub load: &'a LoadSummary,
    pub state: &'a FinalState,
    /// The lowest `processor_inventory_level` seen per item while the run went.
    pub lowest_stock_seen: &'a BTreeMap<String, f64>,
    pub run_end_ms: u64,
}

/// The headline figures of the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Figures {
    pub availability: Option<f64>,
    pub availability_outside_faults: Option<f64>,
    pub availability_during_faults: Option<f64>,
    /// Share of a 30-day 99.9% error budget this run burned (0.01 = 1%).
    pub error_budget_burned: f64,
    /// Per fault: seconds from its end until availability held above target for 10 s.
    pub rto_s: BTreeMap<String, Option<f64>>,
    /// Acknowledged orders lost.
    pub rpo: u64,
}

/// Good or bad per `POST /buy` attempt, in history order (a 409 is good only for a true
/// duplicate).
fn judge(history: &[Attempt]) -> Vec<(usize, bool)> {
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut order: Vec<usize> = (0..history.len()).filter(|&i| history[i].op == Op::Buy).collect();
    order.sort_by_key(|&i| (history[i].done_us, i));
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let a = &history[i];
        let good = match a.status {
            Some(409) => taken.contains(a.request_id.as_str()),
            other => loadgen::Live::is_good(other),
        };
        if a.status == Some(202) || a.class == Class::Info {
            taken.insert(&a.request_id);
        }
        out.push((i, good));
    }
    out
}

/// The `q` quantile of sorted microseconds, in ms.
fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn share(good: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| good as f64 / total as f64)
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.3}%", v * 100.0)).unwrap_or_else(|| "no requests".into())
}

/// Runs every check.
pub fn check(ev: &Evidence<'_>) -> (Vec<CheckResult>, Figures) {
    let scenario = ev.scenario;
    let mut results = Vec::new();
    let mut figures = Figures::default();
    let windows = windows(ev.events);
    // A fault's window for availability runs to its end plus the recovery allowed: "outside
    // faults" is the system in its steady state.
    let recovery_ms = scenario.steady_state.recovery.as_millis() as u64;
    // An attempt belongs to a fault when its life (intended → done) overlaps the window: a
    // request in flight when the broker died is the fault's.
    let in_fault = |a: &Attempt| {
        let (from, to) = (a.intended_us / 1000, a.done_us / 1000);
        windows.iter().any(|w| to >= w.start_ms && from <= w.end_ms.unwrap_or(ev.run_end_ms) + recovery_ms)
    };

    // --- Availability, overall, outside and during faults; per second for RTO.
    let judged = judge(ev.history);
    let (mut good, mut total, mut good_in, mut total_in) = (0u64, 0u64, 0u64, 0u64);
    let mut per_second: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut bad_examples = Vec::new();
    for &(i, ok) in &judged {
        let a = &ev.history[i];
        total += 1;
        good += u64::from(ok);
        if in_fault(a) {
            total_in += 1;
            good_in += u64::from(ok);
        }
        let s = per_second.entry(a.intended_us / 1_000_000).or_default();
        s.0 += u64::from(ok);
        s.1 += 1;
        if !ok && bad_examples.len() < EXAMPLES {
            bad_examples.push(format!("{} attempt {}: {}", a.request_id, a.attempt, a.outcome()));
        }
    }
    figures.availability = share(good, total);
    figures.availability_during_faults = share(good_in, total_in);
    figures.availability_outside_faults = share(good - good_in, total - total_in);
    let target = scenario.slo.availability;
    results.push(
        CheckResult::new(
            "availability",
            Kind::Slo,
            format!("≥ {:.3}%", target * 100.0),
            format!("{} of {total}", pct(figures.availability)),
            figures.availability.unwrap_or(1.0) >= target,
        )
        .with(bad_examples.clone()),
    );
    if let Some(t) = scenario.slo.availability_outside_faults {
        let v = figures.availability_outside_faults;
        results.push(CheckResult::new(
            "availability outside faults",
            Kind::Slo,
            format!("≥ {:.3}%", t * 100.0),
            format!("{} of {}", pct(v), total - total_in),
            v.unwrap_or(1.0) >= t,
        ));
    }
    if let Some(t) = scenario.slo.availability_during_faults {
        let v = figures.availability_during_faults;
        results.push(CheckResult::new(
            "availability during faults",
            Kind::Slo,
            format!("≥ {:.3}%", t * 100.0),
            format!("{} of {total_in}", pct(v)),
            v.unwrap_or(1.0) >= t,
        ));
    }
    let run_s = ev.load.ended_unix_ms.saturating_sub(ev.load.started_unix_ms) as f64 / 1000.0;
    let bad_share = if total == 0 { 0.0 } else { (total - good) as f64 / total as f64 };
    figures.error_budget_burned = bad_share * run_s / BUDGET_30D_S;

    // --- Latency per phase: of the attempts outside the fault windows (those inside are judged
    // by the availability during faults), or of all of a phase given its own limit.
    let mut per_phase: BTreeMap<&str, [Vec<u64>; 4]> = BTreeMap::new(); // corrected/service, all/outside
    for &(i, _) in &judged {
        let a = &ev.history[i];
        let v = per_phase.entry(a.phase.as_str()).or_default();
        v[0].push(a.corrected_us());
        v[1].push(a.service_us());
        if !in_fault(a) {
            v[2].push(a.corrected_us());
            v[3].push(a.service_us());
        }
    }
    for phase in &ev.load.phases {
        let own_p99 = scenario.slo.phase_p99_ms.get(&phase.name).copied();
        let exempt = scenario.slo.latency_exempt_phases.contains(&phase.name);
        let Some(samples) = per_phase.get_mut(phase.name.as_str()) else { continue };
        if exempt && own_p99.is_none() {
            continue;
        }
        let (p95, p99, scope, (corrected, service)) = if own_p99.is_some() {
            let [c, s, _, _] = samples;
            (None, own_p99, "all", (c, s))
        } else {
            let [_, _, c, s] = samples;
            (scenario.slo.p95_ms, scenario.slo.p99_ms, "outside faults", (c, s))
        };
        if corrected.is_empty() {
            continue;
        }
        corrected.sort_unstable();
        service.sort_unstable();
        for (label, q, limit) in [("p95", 0.95, p95), ("p99", 0.99, p99)] {
            if let Some(limit) = limit {
                let c = quantile_ms(corrected, q);
                results.push(CheckResult::new(
                    &format!("{label} latency, phase {} ({scope})", phase.name),
                    Kind::Slo,
                    format!("≤ {limit} ms (corrected)"),
                    format!(
                        "{c:.1} ms corrected, {:.1} ms service, {} requests",
                        quantile_ms(service, q),
                        corrected.len()
                    ),
                    c <= limit,
                ));
            }
        }
    }

    // --- RTO per fault window.
    for w in &windows {
        let Some(end_ms) = w.end_ms else {
            figures.rto_s.insert(w.description.clone(), None);
            continue;
        };
        let end_s = end_ms / 1000;
        let last_s = per_second.keys().next_back().copied().unwrap_or(end_s);
        let hold = RTO_HOLD.as_secs().min(last_s.saturating_sub(end_s)).max(1);
        let ok_at = |s: u64| per_second.get(&s).map(|(g, t)| *g as f64 >= target * *t as f64).unwrap_or(true);
        let rto = (end_s..=last_s).find(|&s| (s..s + hold).all(ok_at)).map(|s| (s - end_s) as f64);
        figures.rto_s.insert(w.description.clone(), rto);
    }
    if let Some(limit) = scenario.slo.rto {
        let worst: Option<Option<f64>> = figures.rto_s.values().copied().fold(None, |acc, v| match (acc, v) {
            (None, v) => Some(v),
            (Some(None), _) | (_, None) => Some(None),
            (Some(Some(a)), Some(b)) => Some(Some(a.max(b))),
        });
        let (measured, pass) = match worst {
            None => ("no fault ended".to_string(), true),
            Some(None) => ("never recovered".to_string(), false),
            Some(Some(s)) => (format!("{s:.0} s (worst fault)"), s <= limit.as_secs_f64()),
        };
        results.push(CheckResult::new("RTO", Kind::Slo, format!("≤ {} s", limit.as_secs_f64()), measured, pass));
    }

    // --- Steady state before the first fault and after the last.
    if let Some(first) = windows.iter().map(|w| w.start_ms).min() {
        let last_end = windows.iter().map(|w| w.end_ms.unwrap_or(ev.run_end_ms)).max().unwrap_or(first);
        let after_from = last_end + scenario.steady_state.recovery.as_millis() as u64;
        for (label, range) in [("before the first fault", (0, first)), ("after the last fault", (after_from, u64::MAX))]
        {
            let (mut g, mut t) = (0u64, 0u64);
            let mut latencies = Vec::new();
            for &(i, ok) in &judged {
                let a = &ev.history[i];
                // Before: done before the first fault; after: intended after the recovery.
                let inside = if range.0 == 0 { a.done_us / 1000 < range.1 } else { a.intended_us / 1000 >= range.0 };
                if inside {
                    t += 1;
                    g += u64::from(ok);
                    latencies.push(a.corrected_us());
                }
            }
            let v = share(g, t);
            let pass = t < MIN_REQUESTS || v.unwrap_or(1.0) >= scenario.steady_state.availability;
            let measured =
                if t < MIN_REQUESTS { format!("{t} requests: too few to judge") } else { format!("{} of {t}", pct(v)) };
            results.push(CheckResult::new(
                &format!("steady state {label}"),
                Kind::SteadyState,
                format!("availability ≥ {:.3}%", scenario.steady_state.availability * 100.0),
                measured,
                pass,
            ));
            if let (Some(limit), true) = (scenario.steady_state.p99_ms, t >= MIN_REQUESTS) {
                latencies.sort_unstable();
                let p99 = quantile_ms(&latencies, 0.99);
                results.push(CheckResult::new(
                    &format!("steady state {label}: p99"),
                    Kind::SteadyState,
                    format!("≤ {limit} ms (corrected)"),
                    format!("{p99:.1} ms"),
                    p99 <= limit,
                ));
            }
        }
    }

    // --- Faults: each took effect and healed.
    for e in ev.events {
        if e["event"] == "fault_stop" && e["reason"] == "instant" {
            continue; // an instant fault's one check is its start's
        }
        if let Some(kind @ ("fault_start" | "fault_stop" | "fault_error")) = e["event"].as_str() {
            let ok = e["check"]["ok"].as_bool().unwrap_or(false) && kind != "fault_error";
            let what = if kind == "fault_start" {
                "applied"
            } else if kind == "fault_stop" {
                "healed"
            } else {
                "failed"
            };
            let measured = e["check"]["observed"].as_str().or(e["error"].as_str()).unwrap_or_default();
            results.push(CheckResult::new(
                &format!("fault #{} {what}: {}", e["id"], e["description"].as_str().unwrap_or_default()),
                Kind::Fault,
                "verified on the system",
                measured,
                ok,
            ));
        }
    }

    // --- Lab actions (backup, DLQ replay, reconcile --fix) succeeded.
    for e in ev.events.iter().filter(|e| e["event"] == "action") {
        let ok = e["ok"].as_bool().unwrap_or(false);
        let output = e["output"].as_str().unwrap_or_default();
        // reconcile --json: say what it fixed and what stays wrong.
        let measured = match serde_json::from_str::<Value>(output) {
            Ok(r) if r.get("fixed_items").is_some() => format!(
                "fixed {} item(s) and {} order state(s); {} completed without capture, {} captures without order",
                r["fixed_items"],
                r["fixed_states"],
                r["completed_without_capture"].as_array().map_or(0, Vec::len),
                r["captures_without_order"].as_array().map_or(0, Vec::len)
            ),
            _ => output.lines().next().unwrap_or_default().chars().take(200).collect::<String>(),
        };
        results.push(CheckResult::new(
            &format!("action {}", e["action"].as_str().unwrap_or_default()),
            Kind::Fault,
            "succeeded",
            measured,
            ok,
        ));
    }

    // --- Invariants.
    invariants(ev, &judged, &mut results, &mut figures);
    (results, figures)
}

/// The decision of each (request_id, attempt): the first record; conflicting records noted.
fn decisions(outcomes: &[Outcome]) -> (BTreeMap<(String, u32), &Outcome>, Vec<String>) {
    let mut out: BTreeMap<(String, u32), &Outcome> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for o in outcomes {
        match out.get(&(o.request_id.clone(), o.attempt)) {
            Some(first) if first.outcome != o.outcome => conflicts.push(format!(
                "{}/{}: decided {} and {}",
                o.request_id,
                o.attempt,
                first.outcome.as_str(),
                o.outcome.as_str()
            )),
            Some(_) => {}
            None => {
                out.insert((o.request_id.clone(), o.attempt), o);
            }
        }
    }
    (out, conflicts)
}

/// `judged`: [`judge`]'s verdict on each `POST /buy` attempt.
fn invariants(ev: &Evidence<'_>, judged: &[(usize, bool)], results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let wanted = &ev.scenario.invariants;
    let state = ev.state;
    let (decided, conflicts) = decisions(&state.outcomes);
    let mut by_request: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for ((rid, _), o) in &decided {
        by_request.entry(rid.as_str()).or_default().push(o);
    }
    let mut acked: BTreeSet<&str> = BTreeSet::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    for a in ev.history.iter().filter(|a| a.op == Op::Buy) {
        sent.insert(&a.request_id);
        if a.status == Some(202) {
            acked.insert(&a.request_id);
        } else if a.class == Class::Info {
            unknown.insert(&a.request_id);
        }
    }
    let completed_of = |rid: &str| {
        by_request.get(rid).map(|v| v.iter().filter(|o| o.outcome == Decision::Completed).count()).unwrap_or(0)
    };

    // 1. Every acknowledged order decided exactly once; nothing unexpected.
    if wanted.no_lost_or_doubled_orders {
        let queued: BTreeSet<&str> = state.queued.iter().map(|(r, _)| r.as_str()).collect();
        let lost: Vec<String> = acked
            .iter()
            .filter(|rid| !by_request.contains_key(**rid))
            .map(|rid| {
                let where_ = if queued.contains(rid) { "queued, never decided" } else { "202 but never queued" };
                format!("{rid}: {where_}")
            })
            .collect();
        figures.rpo =
            acked.iter().filter(|rid| !queued.contains(**rid) && !by_request.contains_key(**rid)).count() as u64;
        let doubled: Vec<String> = conflicts
            .iter()
            .cloned()
            .chain(
                by_request
                    .keys()
                    .filter(|rid| completed_of(rid) > 1)
                    .map(|rid| format!("{rid}: completed {} times", completed_of(rid))),
            )
            .collect();
        let unexpected: Vec<String> = by_request
            .keys()
            .filter(|rid| !rid.starts_with(WARMUP_PREFIX) && !acked.contains(*rid) && !unknown.contains(*rid))
            .map(|rid| {
                if sent.contains(rid) {
                    format!("{rid}: decided although every answer said it was not taken")
                } else {
                    format!("{rid}: decided but never sent")
                }
            })
            .collect();
        results.push(
            CheckResult::new(
                "lost orders",
                Kind::Invariant,
                format!("0 of {} acknowledged", acked.len()),
                format!("{} lost", lost.len()),
                lost.is_empty(),
            )
            .with(lost),
        );
        results.push(
            CheckResult::new(
                "doubled orders",
                Kind::Invariant,
                "0",
                format!("{} doubled", doubled.len()),
                doubled.is_empty(),
            )
            .with(doubled),
        );
        results.push(
            CheckResult::new(
                "unexpected orders",
                Kind::Invariant,
                "0",
                format!("{} unexpected", unexpected.len()),
                unexpected.is_empty(),
            )
            .with(unexpected),
        );
        let rpo = ev.scenario.slo.rpo;
        results.push(CheckResult::new(
            "RPO",
            Kind::Slo,
            format!("≤ {rpo} acknowledged orders lost"),
            format!("{}", figures.rpo),
            figures.rpo <= rpo,
        ));
    }

    // Completed quantity per item (one per request_id at most is counted separately above).
    let mut completed_qty: BTreeMap<&str, u64> = BTreeMap::new();
    for o in decided.values().filter(|o| o.outcome == Decision::Completed) {
        *completed_qty.entry(o.item_id.as_str()).or_default() += u64::from(o.amount);
    }

    // 2. No oversell, never negative.
    if wanted.no_oversell {
        let mut evidence = Vec::new();
        for (item, initial) in &ev.scenario.stock {
            let done = completed_qty.get(item.as_str()).copied().unwrap_or(0);
            if done > *initial {
                evidence.push(format!("item {item}: {done} completed of {initial}"));
            }
            if let Some(Some(v)) = state.stock.get(item) {
                if *v < 0 {
                    evidence.push(format!("item {item}: stock {v} at the end"));
                }
            }
            if let Some(low) = ev.lowest_stock_seen.get(item) {
                if *low < 0.0 {
                    evidence.push(format!("item {item}: processor_inventory_level {low} during the run"));
                }
            }
        }
        results.push(
            CheckResult::new(
                "no oversell",
                Kind::Invariant,
                "completed ≤ initial, stock ≥ 0",
                summary(&evidence),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 3. Conservation.
    if wanted.stock_conservation {
        let mut evidence = Vec::new();
        let mut measured = Vec::new();
        for (item, initial) in &ev.scenario.stock {
            let done = completed_qty.get(item.as_str()).copied().unwrap_or(0);
            let left = state.stock.get(item).copied().flatten();
            measured.push(format!(
                "{item}: {initial} = {} + {done}",
                left.map(|v| v.to_string()).unwrap_or("missing".into())
            ));
            if left != Some(*initial as i64 - done as i64) {
                evidence.push(format!(
                    "item {item}: initial {initial}, remaining {}, completed {done}",
                    left.map(|v| v.to_string()).unwrap_or("missing".into())
                ));
            }
        }
        results.push(
            CheckResult::new(
                "stock conservation",
                Kind::Invariant,
                "initial = remaining + completed",
                measured.join("; "),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 4. Money ↔ stock.
    if wanted.money_matches_stock {
        let captured: HashMap<&str, u64> = state.captures.iter().map(|c| (c.key.as_str(), c.amount)).collect();
        let mut evidence = Vec::new();
        let mut completed_keys = BTreeSet::new();
        for o in decided.values().filter(|o| o.outcome == Decision::Completed) {
            let key = format!("{}/{}", o.request_id, o.attempt);
            match captured.get(key.as_str()) {
                None => evidence.push(format!("{key}: completed, never captured")),
                Some(&amount) if amount != u64::from(o.amount) => {
                    evidence.push(format!("{key}: captured {amount}, ordered {}", o.amount))
                }
                Some(_) => {}
            }
            completed_keys.insert(key);
        }
        for c in &state.captures {
            if !completed_keys.contains(&c.key) {
                evidence.push(format!("{}: captured {} but not completed", c.key, c.amount));
            }
        }
        results.push(
            CheckResult::new(
                "money matches stock",
                Kind::Invariant,
                "captures = completed orders, same amounts",
                format!(
                    "{} captures, {} completed; {}",
                    state.captures.len(),
                    completed_keys.len(),
                    summary(&evidence)
                ),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 5. Payment failures refunded (conservation) and dead-lettered exactly once.
    if wanted.refunds_and_dlq {
        let mut letters: BTreeMap<(String, u32), usize> = BTreeMap::new();
        for d in &state.dlq {
            *letters.entry((d.request_id.clone(), d.attempt)).or_default() += 1;
        }
        let mut evidence = Vec::new();
        let failed: Vec<_> = decided.values().filter(|o| o.outcome == Decision::FailedPayment).collect();
        for o in &failed {
            match letters.get(&(o.request_id.clone(), o.attempt)) {
                None => evidence.push(format!("{}/{}: FAILED_PAYMENT, not in the DLQ", o.request_id, o.attempt)),
                Some(n) if *n > 1 => evidence.push(format!("{}/{}: in the DLQ {n} times", o.request_id, o.attempt)),
                _ => {}
            }
        }
        for (rid, attempt) in letters.keys() {
            if decided.get(&(rid.clone(), *attempt)).map(|o| o.outcome) != Some(Decision::FailedPayment) {
                evidence.push(format!("{rid}/{attempt}: in the DLQ without a payment failure"));
            }
        }
        results.push(
            CheckResult::new(
                "payment failures refunded and dead-lettered once",
                Kind::Invariant,
                "each FAILED_PAYMENT attempt in the DLQ exactly once",
                format!("{} failed payments, {} dead letters; {}", failed.len(), state.dlq.len(), summary(&evidence)),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 6. One effect per request_id; statuses never move backwards.
    if wanted.one_effect_per_request {
        let mut evidence = Vec::new();
        let mut captures_per_request: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &state.captures {
            let rid = c.key.rsplit_once('/').map(|(r, _)| r).unwrap_or(&c.key);
            *captures_per_request.entry(rid).or_default() += 1;
        }
        for (rid, n) in &captures_per_request {
            if *n > 1 {
                evidence.push(format!("{rid}: charged {n} times"));
            }
        }
        // The final status is the latest attempt's decision.
        for (rid, outcomes) in &by_request {
            let latest = outcomes.iter().max_by_key(|o| o.attempt).expect("non-empty");
            if let Some(s) = state.orders.get(*rid) {
                if s.status.as_deref() != Some(latest.outcome.as_str()) {
                    evidence.push(format!(
                        "{rid}: status {} in Redis, decided {} (attempt {})",
                        s.status.as_deref().unwrap_or("missing"),
                        latest.outcome.as_str(),
                        latest.attempt
                    ));
                }
            }
        }
        // What buyers saw when polling never went back (decided → PENDING, or one decision to
        // another within an attempt).
        let mut seen: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for a in ev.history.iter().filter(|a| a.op == Op::Status) {
            if let Some(s) = &a.order_status {
                seen.entry(&a.request_id).or_default().push((a.done_us, s));
            }
        }
        for (rid, mut polls) in seen {
            polls.sort();
            let mut decided_once: Option<&str> = None;
            for (_, s) in polls {
                match (decided_once, s) {
                    (Some(d), "PENDING") => {
                        evidence.push(format!("{rid}: seen {d}, then PENDING"));
                        break;
                    }
                    (Some(d), now) if now != d && d == "COMPLETED" => {
                        evidence.push(format!("{rid}: seen COMPLETED, then {now}"));
                        break;
                    }
                    (_, "PENDING") => {}
                    (_, now) => decided_once = Some(now),
                }
            }
        }
        // A 409 says "you already have this order": only true when an earlier attempt of the
        // id was accepted or may have been.
        // `judge` has decided which 409s are: a bad 409 is a false duplicate.
        let false_duplicates: Vec<String> = judged
            .iter()
            .map(|&(i, good)| (&ev.history[i], good))
            .filter(|(a, good)| a.status == Some(409) && !good)
            .map(|(a, _)| format!("{} attempt {}: 409, yet no earlier attempt was taken", a.request_id, a.attempt))
            .collect();
        results.push(
            CheckResult::new(
                "409 only for true duplicates",
                Kind::Invariant,
                "0 false duplicates",
                summary(&false_duplicates),
                false_duplicates.is_empty(),
            )
            .with(false_duplicates),
        );
        results.push(
            CheckResult::new(
                "one effect per request_id, no status backwards",
                Kind::Invariant,
                "≤ 1 charge and completion per request_id; statuses only move forward",
                summary(&evidence),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }
}

fn summary(evidence: &[String]) -> String {
    if evidence.is_empty() {
        "none".into()
    } else {
        format!("{} violation(s)", evidence.len())
    }
}
