//! Which component saturated first: the trials at the boundary against the lowest sustained
//! one. The signals, each with the figures that show it:
//!
//! - **CPU** of every process (`processes.jsonl`): cores used ÷ what it can use (Redis runs
//!   commands on one thread: 1 core; the others: the machine's cores);
//! - **waits**: the gateway's produce latency (the broker), Redis's µs per command, the
//!   processors' orders in flight against their limit while their CPU idles (the payment
//!   provider), the gateway's admission refusals (its own limit).
//!
//! The component with the highest score is named, and only when that score is at least
//! [`MIN_SCORE`]: a process at 8 % of what it can use has not saturated, whatever else is lower
//! (then nothing is named and the answer says so). When the machine's cores were nearly all busy
//! that is said too (on one host every process shares them).

use rundir::capacity::{Bottleneck, Trial, TrialOutcome};

use crate::drill::procs::LAB;

/// The least share of what a component can use for it to be named as the one that saturated.
pub const MIN_SCORE: f64 = 0.5;

/// Processes that are the lab's, not the system's.
fn is_system(component: &str) -> bool {
    component != LAB && !matches!(component, "prometheus" | "alertmanager" | "redis_exporter" | "process-exporter")
}

/// Names the bottleneck from a topology's trials; `processor_limit` is one processor's
/// `PROCESSOR_MAX_IN_FLIGHT` where the processors do not export it, `cores` the machine's
/// (`None`: unknown — a deployment's hosts — and CPU is then shown, never scored).
pub fn bottleneck(
    trials: &[Trial],
    sustainable: Option<f64>,
    processors: usize,
    processor_limit: f64,
    cores: Option<f64>,
) -> Option<Bottleneck> {
    let valid = |t: &&Trial| t.outcome != TrialOutcome::Invalid && !t.m.components.is_empty();
    let base = trials
        .iter()
        .filter(valid)
        .filter(|t| t.outcome == TrialOutcome::Sustained)
        .min_by(|a, b| a.rate.total_cmp(&b.rate))?;
    let above = |t: &&Trial| sustainable.is_none_or(|s| t.rate > s);
    let at = trials
        .iter()
        .filter(valid)
        .filter(|t| t.outcome == TrialOutcome::Failed)
        .filter(above)
        .min_by(|a, b| a.rate.total_cmp(&b.rate))
        .or_else(|| trials.iter().filter(valid).max_by(|a, b| a.rate.total_cmp(&b.rate)))?;
    let (r, r0) = (at.rate, base.rate);
    let mut candidates: Vec<(String, f64, String)> = Vec::new();
    for (component, u) in at.m.components.iter().filter(|(c, _)| is_system(c)) {
        let was = base.m.components.get(component).map(|b| b.cores).unwrap_or(0.0);
        let cap = if component == "redis" { Some(1.0) } else { cores };
        let (score, of) = match cap {
            Some(cap) => (u.cores / cap, format!(" of {cap:.0} it can use")),
            None => (0.0, " (its host's cores unknown)".to_string()),
        };
        candidates.push((
            component.clone(),
            score,
            format!("{component} used {:.2} cores at {r:.0}/s ({was:.2} at {r0:.0}/s){of}", u.cores),
        ));
    }
    let grew = |now: Option<f64>, then: Option<f64>| match (now, then) {
        (Some(n), Some(t)) if t > 0.0 => Some((n, t, n / t)),
        _ => None,
    };
    if let Some((n, t, g)) = grew(at.m.produce_ms, base.m.produce_ms) {
        if g >= 3.0 && n >= 5.0 {
            candidates.push((
                "broker".into(),
                0.95,
                format!("the broker answered produces in {n:.1} ms on average at {r:.0}/s ({t:.1} ms at {r0:.0}/s)"),
            ));
        }
    }
    if let Some((n, t, g)) = grew(at.m.redis_usec_per_call, base.m.redis_usec_per_call) {
        if g >= 2.0 {
            candidates.push((
                "redis".into(),
                0.9,
                format!("Redis spent {n:.1} µs per command at {r:.0}/s ({t:.1} µs at {r0:.0}/s)"),
            ));
        }
    }
    // Waiting on payment: the processors' orders in flight at their limit — most of the time
    // (75th percentile at 90 % of it) or on average at 75 % — while their CPU idles.
    let limit = at.m.processor_in_flight_limit.unwrap_or(processor_limit * processors as f64);
    if let (Some(mean), p75) = (at.m.processor_in_flight, at.m.processor_in_flight_p75) {
        let cpu: f64 = at.m.components.iter().filter(|(c, _)| c.starts_with("processor")).map(|(_, u)| u.cores).sum();
        let at_limit = mean >= 0.75 * limit || p75.is_some_and(|p| p >= 0.9 * limit);
        if processors > 0 && limit > 0.0 && at_limit && cpu / (processors as f64) < 0.5 {
            candidates.push((
                "payment".into(),
                1.0,
                format!(
                    "the processors held {mean:.1} of {limit:.0} orders in flight on average ({} most of the time) at {r:.0}/s with {cpu:.2} cores busy: waiting on the payment provider",
                    p75.map(|p| format!("{p:.0}")).unwrap_or_else(|| "–".into())
                ),
            ));
        }
    }
    if at.m.admission_rejected > 0 {
        candidates.push((
            "gateway".into(),
            1.0,
            format!("the gateway's admission limit refused {} orders at {r:.0}/s", at.m.admission_rejected),
        ));
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (component, _, first) = candidates.first().filter(|c| c.1 >= MIN_SCORE)?.clone();
    let mut evidence = vec![first];
    evidence.extend(candidates.iter().skip(1).take(2).map(|c| c.2.clone()));
    let total: f64 = at.m.components.values().map(|u| u.cores).sum();
    if let Some(cores) = cores.filter(|c| total >= 0.9 * c) {
        evidence.push(format!(
            "the machine's {cores:.0} cores were {:.0} % busy at {r:.0}/s (the lab's own share {:.2} cores)",
            100.0 * total / cores,
            at.m.components.get(LAB).map(|u| u.cores).unwrap_or(0.0)
        ));
    }
    Some(Bottleneck { component, evidence })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rundir::capacity::{Role, TrialMeasures};
    use rundir::processes::Usage;

    fn trial(rate: f64, outcome: TrialOutcome, m: TrialMeasures) -> Trial {
        Trial { index: 0, role: Role::Grow, rate, duration_s: 15.0, dir: String::new(), outcome, reasons: Vec::new(), m }
    }

    fn cpu(parts: &[(&str, f64)]) -> std::collections::BTreeMap<String, Usage> {
        parts.iter().map(|(c, cores)| (c.to_string(), Usage { cores: *cores, peak_rss_bytes: 0 })).collect()
    }

    #[test]
    fn names_what_the_figures_show_first() {
        // The broker: produces 100× slower at the failed rate, its CPU modest.
        let base = TrialMeasures { produce_ms: Some(5.0), components: cpu(&[("broker", 0.1), ("redis", 0.02)]), ..Default::default() };
        let at = TrialMeasures { produce_ms: Some(500.0), components: cpu(&[("broker", 0.6), ("redis", 0.25)]), ..Default::default() };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(4000.0, TrialOutcome::Failed, at)];
        let b = bottleneck(&trials, Some(100.0), 1, 256.0, Some(2.0)).unwrap();
        assert_eq!(b.component, "broker");
        assert!(b.evidence[0].contains("500.0 ms"), "{b:?}");
        // Redis at its one core.
        let at = TrialMeasures { produce_ms: Some(6.0), components: cpu(&[("broker", 0.3), ("redis", 0.97)]), ..Default::default() };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(4000.0, TrialOutcome::Failed, at)];
        assert_eq!(bottleneck(&trials, Some(100.0), 1, 256.0, Some(2.0)).unwrap().component, "redis");
        // The gateway's own admission limit.
        let at = TrialMeasures { admission_rejected: 40, components: cpu(&[("gateway[0]", 0.2)]), ..Default::default() };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(300.0, TrialOutcome::Failed, at)];
        assert_eq!(bottleneck(&trials, Some(100.0), 1, 256.0, Some(2.0)).unwrap().component, "gateway");
        // The payment provider: in flight at the limit most of the time (a processor that got its
        // partitions late pulls the mean down), CPU idle.
        let at = TrialMeasures {
            processor_in_flight: Some(6.8),
            processor_in_flight_p75: Some(8.0),
            components: cpu(&[("processor[0]", 0.1), ("processor[1]", 0.1), ("gateway[0]", 0.16)]),
            ..Default::default()
        };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(143.0, TrialOutcome::Failed, at.clone())];
        let b = bottleneck(&trials, Some(100.0), 2, 4.0, Some(2.0)).unwrap();
        assert_eq!(b.component, "payment", "{b:?}");
        // Busy processors are not waiting on payment; below the limit neither.
        let busy = TrialMeasures { components: cpu(&[("processor[0]", 1.2), ("processor[1]", 1.2)]), ..at.clone() };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(143.0, TrialOutcome::Failed, busy)];
        assert_ne!(bottleneck(&trials, Some(100.0), 2, 4.0, Some(2.0)).map(|b| b.component), Some("payment".into()));
        let idle = TrialMeasures { processor_in_flight: Some(4.0), processor_in_flight_p75: Some(5.0), ..at };
        let trials = [trial(100.0, TrialOutcome::Sustained, base.clone()), trial(143.0, TrialOutcome::Failed, idle)];
        // …and a gateway at 0.16 of 2 cores has not saturated: nothing is named.
        assert!(bottleneck(&trials, Some(100.0), 2, 4.0, Some(2.0)).is_none());
        // The lab's own CPU is never the system's bottleneck; nothing judged: nothing named.
        let at = TrialMeasures { components: cpu(&[(LAB, 1.9)]), ..Default::default() };
        let trials = [trial(100.0, TrialOutcome::Sustained, base), trial(300.0, TrialOutcome::Failed, at)];
        assert!(bottleneck(&trials, Some(100.0), 1, 256.0, Some(2.0)).is_none());
        assert!(bottleneck(&[], None, 1, 256.0, Some(2.0)).is_none());
    }
}
