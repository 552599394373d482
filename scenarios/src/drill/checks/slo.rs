//! Service-level checks: availability (overall, outside and during faults, unserved users
//! included, per phase), latency per phase, RTO per fault, steady state before and after the faults,
//! time to decision and consumer lag. Each states the evidence it needs.

use std::collections::BTreeMap;

use rundir::stats::quantile_ms;
use rundir::verdict::DecisionTimes;
use rundir::{Attempt, CheckResult, Figures, Kind, Op, Outcome};

use super::{pct, share, Evidence, Judged};

/// A 30-day 99.9% error budget, in seconds of total outage.
const BUDGET_30D_S: f64 = 30.0 * 86_400.0 * 0.001;

fn requests(n: u64) -> String {
    format!("{n} requests")
}

pub fn availability(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let scenario = ev.scenario;
    let need = scenario.evidence.min_requests;
    let (mut good, mut total, mut good_in, mut total_in, mut unserved) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut bad_examples = Vec::new();
    for &(i, ok) in &run.attempts {
        let a = &ev.history[i];
        total += 1;
        good += u64::from(ok);
        unserved += u64::from(a.op == Op::Unserved);
        if run.in_fault(a) {
            total_in += 1;
            good_in += u64::from(ok);
        }
        if !ok && bad_examples.len() < rundir::verdict::EXAMPLES {
            bad_examples.push(format!("{} attempt {}: {}", a.request_id, a.attempt, a.outcome()));
        }
    }
    figures.requests = total;
    figures.unserved = unserved;
    figures.availability = share(good, total);
    figures.availability_during_faults = share(good_in, total_in);
    figures.availability_outside_faults = share(good - good_in, total - total_in);
    let needed = format!("≥ {need} requests");
    let target = scenario.slo.availability;
    let v = figures.availability;
    results.push(
        CheckResult::new(
            "availability",
            Kind::Slo,
            format!("≥ {:.3}%", target * 100.0),
            format!("{} of {total} ({unserved} unserved)", pct(v)),
            Outcome::judge(v.is_none_or(|v| v >= target), total >= need),
        )
        .needing(&needed, requests(total))
        .with(bad_examples),
    );
    for (name, limit, v, n) in [
        (
            "availability outside faults",
            scenario.slo.availability_outside_faults,
            figures.availability_outside_faults,
            total - total_in,
        ),
        (
            "availability during faults",
            scenario.slo.availability_during_faults,
            figures.availability_during_faults,
            total_in,
        ),
    ] {
        if let Some(t) = limit {
            results.push(
                CheckResult::new(
                    name,
                    Kind::Slo,
                    format!("≥ {:.3}%", t * 100.0),
                    format!("{} of {n}", pct(v)),
                    Outcome::judge(v.is_none_or(|v| v >= t), n >= need),
                )
                .needing(&needed, requests(n)),
            );
        }
    }
    // The generator served every arrival it was asked to: else the run did not test the load
    // that was planned (the unserved ones are bad answers above as well).
    let interrupted = ev.events.iter().any(|e| e["event"] == "load_end" && e["interrupted"] == true);
    let offered = total;
    results.push(
        CheckResult::new(
            "load offered as planned",
            Kind::SteadyState,
            "every arrival sent",
            if interrupted {
                format!("interrupted; {unserved} of {offered} arrivals unserved")
            } else {
                format!("{unserved} of {offered} arrivals unserved")
            },
            Outcome::judge(true, unserved == 0 && !interrupted && offered > 0),
        )
        .needing("0 unserved arrivals", format!("{unserved} unserved")),
    );
    generator_kept_schedule(ev, results);
    let (first, last) = ev.history.iter().fold((u64::MAX, 0u64), |(f, l), a| (f.min(a.intended_us), l.max(a.done_us)));
    let run_s = last.saturating_sub(first) as f64 / 1e6;
    let bad_share = if total == 0 { 0.0 } else { (total - good) as f64 / total as f64 };
    figures.error_budget_burned = bad_share * run_s / BUDGET_30D_S;
}

/// Availability of single phases (`[slo] phase_availability`), faults or not: e.g. the core path
/// once the degradation switch is on, while the overload goes on.
pub fn phase_availability(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>) {
    let need = ev.scenario.evidence.min_requests;
    for (phase, &target) in &ev.scenario.slo.phase_availability {
        let (mut good, mut total) = (0u64, 0u64);
        let mut bad_examples = Vec::new();
        for &(i, ok) in &run.attempts {
            let a = &ev.history[i];
            if a.phase != *phase {
                continue;
            }
            total += 1;
            good += u64::from(ok);
            if !ok && bad_examples.len() < rundir::verdict::EXAMPLES {
                bad_examples.push(format!("{} attempt {}: {}", a.request_id, a.attempt, a.outcome()));
            }
        }
        let v = share(good, total);
        results.push(
            CheckResult::new(
                &format!("availability, phase {phase}"),
                Kind::Slo,
                format!("≥ {:.3}%", target * 100.0),
                format!("{} of {total}", pct(v)),
                Outcome::judge(v.is_none_or(|v| v >= target), total >= need),
            )
            .needing(format!("≥ {need} requests"), requests(total))
            .with(bad_examples),
        );
    }
}

/// At most this share of the arrivals, plus [`LATE_ALLOWANCE`], may be offered late (≥
/// `loadgen::run::LATE_MS`) for the generator to count as having kept its schedule.
pub const MAX_LATE_SHARE: f64 = 0.01;
/// A few late arrivals are a hiccup, whatever the run's length.
pub const LATE_ALLOWANCE: u64 = 5;

/// The generator, not the system, kept the schedule: every user was up when the clock started
/// and the arrivals were offered on time. Otherwise the latencies measured the lab (a starved
/// or not yet started generator), not the system: inconclusive, never a pass.
fn generator_kept_schedule(ev: &Evidence<'_>, results: &mut Vec<CheckResult>) {
    let end = ev.events.iter().rev().find(|e| e["event"] == "load_end");
    let health: Option<loadgen::GeneratorHealth> =
        end.and_then(|e| serde_json::from_value(e["generator"].clone()).ok());
    let offered = end.and_then(|e| e["offered"].as_u64()).unwrap_or(0);
    let (measured, ok) = match &health {
        None => ("not recorded".to_string(), false),
        Some(g) => {
            let users_up = g.users_ready_at_start >= g.max_in_flight;
            let late_ok = (g.late_arrivals as f64) <= MAX_LATE_SHARE * offered as f64 + LATE_ALLOWANCE as f64;
            (
                format!(
                    "{} of {} users up at the start; {} of {offered} arrivals offered ≥ {} ms late (max {:.0} ms)",
                    g.users_ready_at_start,
                    g.max_in_flight,
                    g.late_arrivals,
                    loadgen::run::LATE_MS,
                    g.feeder_late.max_ms
                ),
                users_up && late_ok && offered > 0,
            )
        }
    };
    results.push(
        CheckResult::new(
            "generator kept its schedule",
            Kind::SteadyState,
            format!("every user up at the start, ≤ {:.0}% + {LATE_ALLOWANCE} arrivals late", MAX_LATE_SHARE * 100.0),
            measured.clone(),
            Outcome::judge(true, ok),
        )
        .needing("a generator on schedule (else the latencies are the lab's)", measured),
    );
}

/// Latency per phase: of the attempts outside the fault windows (those inside are judged by the
/// availability during faults), or of all of a phase given its own limit.
pub fn latency(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>) {
    let scenario = ev.scenario;
    let need = scenario.evidence.min_latency_samples;
    let mut per_phase: BTreeMap<&str, [Vec<u64>; 4]> = BTreeMap::new(); // corrected/service, all/outside
    let mut names: Vec<&str> = Vec::new();
    for &(i, _) in &run.attempts {
        let a = &ev.history[i];
        if a.op != Op::Buy {
            continue;
        }
        if !names.contains(&a.phase.as_str()) {
            names.push(&a.phase);
        }
        let v = per_phase.entry(a.phase.as_str()).or_default();
        v[0].push(a.corrected_us());
        v[1].push(a.service_us());
        if !run.in_fault(a) {
            v[2].push(a.corrected_us());
            v[3].push(a.service_us());
        }
    }
    // Every planned phase, in order; one without a single request is judged too (inconclusive).
    let planned: Vec<String> = rundir::events::phases(ev.events).into_iter().map(|p| p.name).collect();
    let phases: Vec<&str> = if planned.is_empty() { names } else { planned.iter().map(String::as_str).collect() };
    for phase in phases {
        let own_p99 = scenario.slo.phase_p99_ms.get(phase).copied();
        let exempt = scenario.slo.latency_exempt_phases.iter().any(|p| p == phase);
        if exempt && own_p99.is_none() {
            continue;
        }
        let mut empty: [Vec<u64>; 4] = Default::default();
        let samples = per_phase.get_mut(phase).unwrap_or(&mut empty);
        let (p95, p99, scope, corrected, service) = if own_p99.is_some() {
            let [c, s, _, _] = samples;
            (None, own_p99, "all", c, s)
        } else {
            let [_, _, c, s] = samples;
            (scenario.slo.p95_ms, scenario.slo.p99_ms, "outside faults", c, s)
        };
        corrected.sort_unstable();
        service.sort_unstable();
        let n = corrected.len() as u64;
        for (label, q, limit) in [("p95", 0.95, p95), ("p99", 0.99, p99)] {
            let Some(limit) = limit else { continue };
            let c = quantile_ms(corrected, q);
            let measured = match c {
                Some(c) => format!(
                    "{c:.1} ms corrected, {:.1} ms service, {n} requests",
                    quantile_ms(service, q).unwrap_or(0.0)
                ),
                None => "no requests".into(),
            };
            results.push(
                CheckResult::new(
                    &format!("{label} latency, phase {phase} ({scope})"),
                    Kind::Slo,
                    format!("≤ {limit} ms (corrected)"),
                    measured,
                    Outcome::judge(c.is_none_or(|c| c <= limit), n >= need),
                )
                .needing(format!("≥ {need} samples"), format!("{n} samples")),
            );
        }
    }
}

/// What became of one fault's recovery.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Seconds from the fault's end to the start of the first good hold.
    After(f64),
    /// The fault was never lifted.
    NeverEnded,
    /// The run went on for at least a hold after the fault, and never held.
    NotRecovered,
    /// Fewer seconds with traffic after the fault's end than one hold: cannot tell.
    TooShort { seconds: u64 },
}

/// Recovery of every fault window: from its end, the first second from which every second of
/// the hold had requests and at least `recovered_at` good answers. A second without requests is
/// not evidence of recovery.
pub fn recoveries(ev: &Evidence<'_>, run: &Judged<'_>) -> Vec<(String, Recovery)> {
    let scenario = ev.scenario;
    let recovered_at = scenario.slo.recovered_at.unwrap_or(scenario.steady_state.availability);
    let hold = scenario.slo.rto_hold.as_secs().max(1);
    let mut per_second: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for &(i, ok) in &run.attempts {
        let s = per_second.entry(ev.history[i].intended_us / 1_000_000).or_default();
        s.0 += u64::from(ok);
        s.1 += 1;
    }
    let ok_at = |s: u64| per_second.get(&s).is_some_and(|(g, t)| *t > 0 && *g as f64 >= recovered_at * *t as f64);
    let last_s = per_second.keys().next_back().copied().unwrap_or(0);
    run.windows
        .iter()
        .map(|w| {
            let name = format!("#{} {}", w.id, w.description);
            let Some(end_ms) = w.end_ms else { return (name, Recovery::NeverEnded) };
            // The first whole second after the end.
            let from = end_ms.div_ceil(1000);
            let found = (from..=last_s.saturating_sub(hold - 1)).find(|&s| (s..s + hold).all(ok_at));
            let recovery = match found {
                Some(s) => Recovery::After((s * 1000).saturating_sub(end_ms) as f64 / 1000.0),
                None => {
                    let seconds = per_second.range(from..).count() as u64;
                    if seconds < hold {
                        Recovery::TooShort { seconds }
                    } else {
                        Recovery::NotRecovered
                    }
                }
            };
            (name, recovery)
        })
        .collect()
}

pub fn rto(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let scenario = ev.scenario;
    let recoveries = recoveries(ev, run);
    for (name, r) in &recoveries {
        figures.rto_s.insert(name.clone(), if let Recovery::After(s) = r { Some(*s) } else { None });
    }
    let Some(limit) = scenario.slo.rto else { return };
    let recovered_at = scenario.slo.recovered_at.unwrap_or(scenario.steady_state.availability);
    let hold = scenario.slo.rto_hold.as_secs().max(1);
    let target = format!("≤ {} s to ≥ {:.1}% good, held {hold} s", limit.as_secs_f64(), recovered_at * 100.0);
    let needed = format!("every fault lifted, then ≥ {hold} s with requests");
    if recoveries.is_empty() {
        results.push(
            CheckResult::new("RTO", Kind::Slo, target, "no fault in the run", Outcome::Inconclusive)
                .needing(needed, "no fault"),
        );
        return;
    }
    // The faults that did not pass first (the examples are capped), then the others.
    let mut problems = Vec::new();
    let mut fine = Vec::new();
    let mut outcome = Outcome::Pass;
    let mut worst: Option<f64> = None;
    for (name, r) in &recoveries {
        let (o, line) = match r {
            Recovery::After(s) => {
                worst = Some(worst.map_or(*s, |w: f64| w.max(*s)));
                (Outcome::judge(*s <= limit.as_secs_f64(), true), format!("{name}: {s:.1} s"))
            }
            Recovery::NeverEnded => (Outcome::Fail, format!("{name}: never lifted within the drill")),
            Recovery::NotRecovered => (Outcome::Fail, format!("{name}: never recovered")),
            Recovery::TooShort { seconds } => (
                Outcome::Inconclusive,
                format!("{name}: only {seconds} s of traffic after it, the hold needs {hold} s"),
            ),
        };
        outcome = outcome.max(o);
        if o == Outcome::Pass {
            fine.push(line);
        } else {
            problems.push(line);
        }
    }
    let measured = match worst {
        Some(w) if problems.is_empty() => format!("{w:.1} s (worst fault)"),
        _ => problems.join("; "),
    };
    let evidence: Vec<String> = problems.into_iter().chain(fine).collect();
    let seen = format!("{} fault(s)", recoveries.len());
    results.push(CheckResult::new("RTO", Kind::Slo, target, measured, outcome).needing(needed, seen).with(evidence));
}

/// Steady state before the first fault and after the last (plus the recovery allowed).
pub fn steady_state(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>) {
    let scenario = ev.scenario;
    let Some(first) = run.windows.iter().map(|w| w.start_ms).min() else { return };
    let need = scenario.evidence.min_window_requests;
    let last_end = run.windows.iter().map(|w| w.end_ms.unwrap_or(ev.run_end_ms)).max().unwrap_or(first);
    let after_from = last_end + scenario.steady_state.recovery.as_millis() as u64;
    for (label, before) in [("before the first fault", true), ("after the last fault", false)] {
        let (mut g, mut t) = (0u64, 0u64);
        let mut latencies = Vec::new();
        for &(i, ok) in &run.attempts {
            let a = &ev.history[i];
            // Before: done before the first fault; after: intended after the recovery.
            let inside = if before { a.done_us / 1000 < first } else { a.intended_us / 1000 >= after_from };
            if inside {
                t += 1;
                g += u64::from(ok);
                if a.op == Op::Buy {
                    latencies.push(a.corrected_us());
                }
            }
        }
        let v = share(g, t);
        let wanted = scenario.steady_state.availability;
        results.push(
            CheckResult::new(
                &format!("steady state {label}"),
                Kind::SteadyState,
                format!("availability ≥ {:.3}%", wanted * 100.0),
                format!("{} of {t}", pct(v)),
                Outcome::judge(v.is_none_or(|v| v >= wanted), t >= need),
            )
            .needing(format!("≥ {need} requests"), requests(t)),
        );
        if let Some(limit) = scenario.steady_state.p99_ms {
            latencies.sort_unstable();
            let p99 = quantile_ms(&latencies, 0.99);
            let n = latencies.len() as u64;
            results.push(
                CheckResult::new(
                    &format!("steady state {label}: p99"),
                    Kind::SteadyState,
                    format!("≤ {limit} ms (corrected)"),
                    p99.map(|p| format!("{p:.1} ms")).unwrap_or_else(|| "no requests".into()),
                    Outcome::judge(
                        p99.is_none_or(|p| p <= limit),
                        n >= scenario.evidence.min_latency_samples.min(need),
                    ),
                )
                .needing(
                    format!("≥ {} samples", scenario.evidence.min_latency_samples.min(need)),
                    format!("{n} samples"),
                ),
            );
        }
    }
}

/// Accepted (202) → decided, per phase of the acceptance. An accepted order with no decision
/// has no time: it counts as never decided.
/// Each order's first attempt: when the gateway accepted it and when it was first decided (ms),
/// by `request_id`.
pub fn first_decisions<'a>(ev: &Evidence<'a>) -> BTreeMap<&'a str, (u64, u64)> {
    rundir::state::first_decisions(ev.states.after.outcomes.iter().filter(|o| o.attempt == 1))
        .into_iter()
        .map(|(id, o)| (id, (o.accepted_at_ms, o.decided_at_ms)))
        .collect()
}

pub fn time_to_decision(ev: &Evidence<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let scenario = ev.scenario;
    let decided_at = first_decisions(ev);
    let mut per_phase: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut all = Vec::new();
    let mut never = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for a in ev.history.iter().filter(|a| a.op == Op::Buy && a.status == Some(202)) {
        if !seen.insert(a.request_id.as_str()) {
            continue;
        }
        match decided_at.get(a.request_id.as_str()) {
            Some((accepted, decided)) => {
                let us = decided.saturating_sub(*accepted) * 1000;
                per_phase.entry(a.phase.as_str()).or_default().push(us);
                all.push(us);
            }
            None => never.push(format!("{}: accepted, never decided", a.request_id)),
        }
    }
    for (phase, v) in &mut per_phase {
        v.sort_unstable();
        figures.time_to_decision.insert(
            phase.to_string(),
            DecisionTimes {
                decisions: v.len() as u64,
                p99_ms: quantile_ms(v, 0.99).unwrap_or(0.0),
                max_ms: quantile_ms(v, 1.0).unwrap_or(0.0),
            },
        );
    }
    all.sort_unstable();
    let n = all.len() as u64;
    let need = scenario.evidence.min_decisions;
    for (label, q, limit) in
        [("p99", 0.99, scenario.slo.time_to_decision_p99_ms), ("max", 1.0, scenario.slo.time_to_decision_max_ms)]
    {
        let Some(limit) = limit else { continue };
        let v = quantile_ms(&all, q);
        let undecided_breaks = label == "max" && !never.is_empty();
        let held = v.is_none_or(|v| v <= limit) && !undecided_breaks;
        let mut measured =
            v.map(|v| format!("{v:.0} ms over {n} orders")).unwrap_or_else(|| "no decided orders".into());
        if !never.is_empty() {
            measured.push_str(&format!("; {} accepted never decided", never.len()));
        }
        results.push(
            CheckResult::new(
                &format!("time to decision ({label})"),
                Kind::Slo,
                format!("≤ {limit} ms, accepted → decided"),
                measured,
                Outcome::judge(held, n >= need),
            )
            .needing(format!("≥ {need} decided orders"), format!("{n} decided"))
            .with(if undecided_breaks { never.clone() } else { Vec::new() }),
        );
    }
}

/// The largest total consumer lag in any second: per second, the latest scrape of each
/// processor, summed. A processor that is down reports nothing (a gap, not a zero).
pub fn consumer_lag(ev: &Evidence<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let mut per_second: BTreeMap<u64, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in ev.scrapes.iter().filter(|s| s.up && s.component.starts_with("processor")) {
        if let Some(lag) = s.sum("processor_consumer_lag") {
            per_second.entry(s.ts_ms / 1000).or_default().insert(&s.component, lag);
        }
    }
    let max = per_second
        .values()
        .map(|c| c.values().sum::<f64>())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    figures.max_consumer_lag = max;
    let Some(limit) = ev.scenario.slo.max_consumer_lag else { return };
    let n = per_second.len() as u64;
    let need = ev.scenario.evidence.min_lag_seconds;
    results.push(
        CheckResult::new(
            "max consumer lag",
            Kind::Slo,
            format!("≤ {limit} messages"),
            max.map(|m| format!("{m:.0} messages")).unwrap_or_else(|| "never scraped".into()),
            Outcome::judge(max.is_none_or(|m| m <= limit), n >= need),
        )
        .needing(format!("≥ {need} s of processor scrapes"), format!("{n} s")),
    );
}

/// The history's attempts of `Op::Buy` (not polls, not unserved), for callers that need them.
pub fn buys(history: &[Attempt]) -> impl Iterator<Item = &Attempt> {
    history.iter().filter(|a| a.op == Op::Buy)
}
