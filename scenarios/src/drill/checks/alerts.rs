//! The monitoring's verdict, from `alerts.jsonl`: each expected alert fired (time to detect),
//! was notified (time to notify) and resolved within its bounds around its fault, and no alarm
//! fired where none should (false alarms: outside every fault and its settle time, or
//! unexpected during one). Faults no alarm fired for at all are a figure shown first.
//!
//! Evidence: the rule evaluations Prometheus made while the drill ran. With fewer than
//! [`MIN_EVALUATION_COVERAGE`] of the seconds evaluated, an alert that did not fire may just not
//! have been looked for: every alert check is then inconclusive, never passed.

use rundir::alerts::{first_in_state, first_notified, severity};
use rundir::{AlertPhase, AlertRecord, AlertScore, CheckResult, FaultWindow, Figures, Kind, Outcome};

use super::Evidence;
use crate::scenario::Expectation;

/// The share of the drill's seconds with a full round of rule evaluation an alert check needs.
pub const MIN_EVALUATION_COVERAGE: f64 = 0.9;

pub fn alerts(
    ev: &Evidence<'_>,
    windows: &[FaultWindow],
    results: &mut Vec<CheckResult>,
    figures: &mut Figures,
) -> Vec<AlertScore> {
    let config = &ev.scenario.alerts;
    if !config.monitoring {
        return Vec::new();
    }
    let Some((from_ms, to_ms, rounds)) = ev.alerts.iter().find_map(|r| match r {
        AlertRecord::Setup { from_ms, to_ms, evaluation_rounds, .. } => Some((*from_ms, *to_ms, *evaluation_rounds)),
        _ => None,
    }) else {
        results.push(CheckResult::held(
            "monitoring ran",
            Kind::Alert,
            "Prometheus and Alertmanager watched the drill",
            "no record of the monitoring in alerts.jsonl",
            false,
        ));
        return Vec::new();
    };
    let seconds = to_ms.saturating_sub(from_ms) / 1000;
    let coverage = if seconds == 0 { 0.0 } else { rounds as f64 / seconds as f64 };
    let enough = coverage >= MIN_EVALUATION_COVERAGE;
    results.push(
        CheckResult::new(
            "rules evaluated",
            Kind::Alert,
            format!("≥ {:.0}% of the seconds", MIN_EVALUATION_COVERAGE * 100.0),
            format!("{rounds} rounds in {seconds} s ({:.0}%)", coverage * 100.0),
            Outcome::judge(true, enough),
        )
        .needing(format!("{:.0} rounds", seconds as f64 * MIN_EVALUATION_COVERAGE), rounds.to_string()),
    );

    let mut windows: Vec<&FaultWindow> = windows.iter().collect();
    windows.sort_by_key(|w| w.id);
    let end_of = |w: &FaultWindow| w.end_ms.unwrap_or(to_ms);
    let mut scores = Vec::new();
    for e in &config.expect {
        let numbers: Vec<usize> = match e.fault {
            Some(n) => vec![n],
            None => (1..=windows.len().max(1)).collect(),
        };
        for n in numbers {
            // The fault's id is its number: a fault that failed to apply keeps its number.
            match windows.iter().find(|w| w.id == n as u64) {
                Some(w) => scores.push(expectation(ev.alerts, e, n as u64, w, end_of(w), to_ms, enough, results)),
                None => results.push(CheckResult::held(
                    &format!("{} detects fault #{n}", e.alert),
                    Kind::Alert,
                    format!("fires within {}", secs(e.fires_within.as_millis() as u64)),
                    format!("fault #{n} never started"),
                    false,
                )),
            }
        }
    }

    // False alarms: alarms outside every fault (+ settle), or unexpected during one.
    let settle_ms = config.settle.as_millis() as u64;
    let mut false_alarms = Vec::new();
    for r in ev.alerts {
        let AlertRecord::State { alertname, state: AlertPhase::Firing, labels, from_ms: a, to_ms: b } = r else {
            continue;
        };
        if !config.alarms.iter().any(|s| s == severity(labels)) {
            continue;
        }
        let during: Vec<usize> = windows
            .iter()
            .enumerate()
            .filter(|(_, w)| *b >= w.start_ms && *a <= end_of(w) + settle_ms)
            .map(|(i, _)| i + 1)
            .collect();
        let expected_here = during
            .iter()
            .any(|n| config.expect.iter().any(|e| &e.alert == alertname && e.fault.is_none_or(|f| f == *n)))
            || (!during.is_empty() && config.may_fire.contains(alertname));
        if expected_here {
            continue;
        }
        let why = if during.is_empty() { "outside every fault" } else { "not expected during the fault" };
        false_alarms.push(format!("{alertname} fired at {} ({why})", secs(a.saturating_sub(from_ms))));
        scores.push(AlertScore {
            alert: alertname.clone(),
            fault: during.first().map(|n| *n as u64),
            expected: false,
            pending_after_ms: None,
            fired_after_ms: None,
            notified_after_ms: None,
            resolved_after_ms: None,
            outcome: Outcome::Fail,
            note: format!(
                "false alarm: {why}, from {} to {} of the drill",
                secs(a.saturating_sub(from_ms)),
                secs(b.saturating_sub(from_ms))
            ),
        });
    }
    figures.false_alarms = false_alarms.len() as u64;
    let alarms = config.alarms.join("/");
    results.push(
        CheckResult::new(
            "no false alarms",
            Kind::Alert,
            format!("no {alarms} alert outside a fault (+{} settle) or unexpected", secs(settle_ms)),
            if false_alarms.is_empty() { "none".to_string() } else { format!("{} false alarm(s)", false_alarms.len()) },
            Outcome::judge(false_alarms.is_empty(), enough),
        )
        .needing("rules evaluated", format!("{:.0}%", coverage * 100.0))
        .with(false_alarms),
    );

    // Faults nobody was paged for: a finding, shown first by the reports.
    figures.undetected_faults = windows
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            !ev.alerts.iter().any(|r| match r {
                AlertRecord::State { state: AlertPhase::Firing, labels, from_ms: a, to_ms: b, .. } => {
                    config.alarms.iter().any(|s| s == severity(labels))
                        && *b >= w.start_ms
                        && *a <= end_of(w) + settle_ms
                }
                _ => false,
            })
        })
        .map(|(i, _)| i as u64 + 1)
        .collect();
    scores
}

/// One expectation around fault number `n`: fired, notified, resolved.
#[allow(clippy::too_many_arguments)]
fn expectation(
    records: &[AlertRecord],
    e: &Expectation,
    n: u64,
    w: &FaultWindow,
    end_ms: u64,
    run_end_ms: u64,
    enough: bool,
    results: &mut Vec<CheckResult>,
) -> AlertScore {
    let start = w.start_ms;
    let after = |t: Option<u64>| t.map(|t| t.saturating_sub(start));
    let pending = after(first_in_state(records, &e.alert, AlertPhase::Pending, start));
    let fired = after(first_in_state(records, &e.alert, AlertPhase::Firing, start));
    let notified = after(first_notified(records, &e.alert, "firing", start));
    let within = e.fires_within.as_millis() as u64;
    let fired_in_time = fired.is_some_and(|f| f <= within);
    let measured = match (fired, pending) {
        (Some(f), Some(p)) if p <= f => format!("fired after {} (pending after {})", secs(f), secs(p)),
        (Some(f), _) => format!("fired after {}", secs(f)),
        (None, Some(p)) => format!("pending after {}, never fired", secs(p)),
        (None, None) => "never fired".to_string(),
    };
    let name = format!("{} detects fault #{n}", e.alert);
    results.push(CheckResult::new(
        &name,
        Kind::Alert,
        format!("fires within {} of the start", secs(within)),
        measured.clone(),
        Outcome::judge(fired_in_time, enough),
    ));
    let mut outcomes = vec![Outcome::judge(fired_in_time, enough)];
    if let Some(limit) = e.notified_within {
        let limit = limit.as_millis() as u64;
        let held = notified.is_some_and(|t| t <= limit);
        let outcome = Outcome::judge(held, enough);
        outcomes.push(outcome);
        results.push(CheckResult::new(
            &format!("{} notified for fault #{n}", e.alert),
            Kind::Alert,
            format!("notification within {} of the start", secs(limit)),
            notified.map_or("no notification".into(), |t| format!("notified after {}", secs(t))),
            outcome,
        ));
    }
    // The last firing stretch of this fault's episode: on at or after its start and begun
    // before the resolve deadline (an alert may first fire after a short fault has ended).
    let deadline = end_ms + e.resolves_within.map_or(0, |l| l.as_millis() as u64);
    let last_on = records
        .iter()
        .filter_map(|r| match r {
            AlertRecord::State { alertname, state: AlertPhase::Firing, from_ms, to_ms, .. }
                if *alertname == e.alert && *to_ms >= start && *from_ms <= deadline =>
            {
                Some(*to_ms)
            }
            _ => None,
        })
        .max();
    // Firing at the last evaluations: not resolved (yet).
    let still_on = last_on.is_some_and(|t| t + 2_000 >= run_end_ms);
    let resolved = last_on.filter(|_| !still_on).map(|t| t.saturating_sub(end_ms));
    if let Some(limit) = e.resolves_within {
        let limit = limit.as_millis() as u64;
        let outcome = match (fired, resolved) {
            (Some(_), Some(t)) => Outcome::judge(t <= limit, enough),
            // Still firing, and the drill ended before the deadline: nothing was seen either way.
            (Some(_), None) if run_end_ms < deadline => Outcome::Inconclusive,
            _ => Outcome::Fail,
        };
        outcomes.push(outcome);
        let measured = match (fired, resolved) {
            (None, _) => "never fired".to_string(),
            (Some(_), Some(t)) => format!("resolved {} after the fault's end", secs(t)),
            (Some(_), None) if run_end_ms < deadline => {
                format!(
                    "still firing when the drill ended, {} after the fault's end",
                    secs(run_end_ms.saturating_sub(end_ms))
                )
            }
            (Some(_), None) => "still firing when the drill ended".to_string(),
        };
        results.push(
            CheckResult::new(
                &format!("{} resolves after fault #{n}", e.alert),
                Kind::Alert,
                format!("within {} of the end", secs(limit)),
                measured,
                outcome,
            )
            .needing(
                format!("the drill to run until it resolved, or {} after the fault's end", secs(limit)),
                format!("ended {} after the fault's end", secs(run_end_ms.saturating_sub(end_ms))),
            ),
        );
    }
    AlertScore {
        alert: e.alert.clone(),
        fault: Some(n),
        expected: true,
        pending_after_ms: pending,
        fired_after_ms: fired,
        notified_after_ms: notified,
        resolved_after_ms: resolved,
        outcome: Outcome::combine(outcomes),
        note: measured,
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
