//! What the gate compares of one drill run, read from its run directory alone: the figures
//! (each with the way that is better and the smallest change that matters by default) and the
//! invariants that broke (never statistical: one broken invariant on any run fails the gate).

use std::collections::BTreeMap;
use std::path::Path;

use flashsale::order::Decision;
use rundir::{Kind, Op, Outcome, Verdict};

use super::stats::Better;

/// One figure the gate knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub what: &'static str,
    pub better: Better,
    /// The smallest change that matters, by default: a share of the base's median ...
    pub min_relative: f64,
    /// ... and at least this much in the figure's unit.
    pub min_absolute: f64,
}

/// Every figure, in report order. The defaults are the changes an SRE would act on at the
/// drills' scale: a fifth of a latency percentile (and at least 10 ms: a 2-core runner moves a
/// p99 of 20 ms by a few), 15 % of the time to decision (at least 20 ms: a payment provider 50 ms
/// slower must show), a quarter of a recovery or a detection time (and at least a second: the
/// scrape and evaluation step), a tenth of a percent of availability, a percent of payments.
pub const FIGURES: [Figure; 8] = [
    Figure {
        name: "availability",
        what: "good answers over all POST /buy",
        better: Better::Higher,
        min_relative: 0.0,
        min_absolute: 0.001,
    },
    Figure {
        name: "p95_ms",
        what: "corrected p95 of POST /buy, ms",
        better: Better::Lower,
        min_relative: 0.2,
        min_absolute: 10.0,
    },
    Figure {
        name: "p99_ms",
        what: "corrected p99 of POST /buy, ms",
        better: Better::Lower,
        min_relative: 0.2,
        min_absolute: 10.0,
    },
    Figure {
        name: "rto_s",
        what: "the slowest recovery after a fault, s",
        better: Better::Lower,
        min_relative: 0.25,
        min_absolute: 1.0,
    },
    Figure {
        name: "time_to_decision_p99_ms",
        what: "accepted → decided, p99, ms",
        better: Better::Lower,
        min_relative: 0.15,
        min_absolute: 20.0,
    },
    Figure {
        name: "payment_success",
        what: "of the orders decided for payment, the share captured",
        better: Better::Higher,
        min_relative: 0.0,
        min_absolute: 0.01,
    },
    Figure {
        name: "mttd_s",
        what: "the slowest detection of a fault by its expected alert, s",
        better: Better::Lower,
        min_relative: 0.25,
        min_absolute: 1.0,
    },
    Figure {
        name: "decided_per_s",
        what: "orders decided per second of load",
        better: Better::Higher,
        min_relative: 0.05,
        min_absolute: 1.0,
    },
];

/// The figure called `name`.
pub fn figure(name: &str) -> Option<&'static Figure> {
    FIGURES.iter().find(|f| f.name == name)
}

/// What the gate reads of one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunFigures {
    /// By figure name; a figure the run has no evidence for (no fault: no RTO) is absent.
    pub values: BTreeMap<&'static str, f64>,
    /// Invariant checks that failed: `name (stage): first evidence`.
    pub broken_invariants: Vec<String>,
    /// The drill's own outcome.
    pub outcome: Option<Outcome>,
}

/// Reads `dir`'s `verdict.json`, `history.jsonl` and `final_state.json`.
pub fn read(dir: &Path) -> Result<RunFigures, rundir::RunDirError> {
    let verdict: Verdict = rundir::io::read_json(&dir.join(rundir::files::VERDICT))?;
    let history = rundir::history::read(&dir.join(rundir::files::HISTORY))?;
    let states = rundir::state::read(&dir.join(rundir::files::FINAL_STATE))?;
    Ok(of(&verdict, &history, &states.after.outcomes))
}

/// The figures of a run from its records.
pub fn of(verdict: &Verdict, history: &[rundir::Attempt], outcomes: &[flashsale::order::Outcome]) -> RunFigures {
    let mut values = BTreeMap::new();
    let f = &verdict.figures;
    if let Some(a) = f.availability {
        values.insert("availability", a);
    }
    let mut latencies: Vec<u64> = history
        .iter()
        .filter(|a| a.op == Op::Buy && (a.status.is_some() || a.error.is_some()))
        .map(|a| a.corrected_us())
        .collect();
    latencies.sort_unstable();
    if let Some(p) = rundir::stats::quantile_ms(&latencies, 0.95) {
        values.insert("p95_ms", p);
    }
    if let Some(p) = rundir::stats::quantile_ms(&latencies, 0.99) {
        values.insert("p99_ms", p);
    }
    // A fault never recovered from has no RTO: the drill's own check fails, and the figure is
    // left out rather than made up.
    if !f.rto_s.is_empty() && f.rto_s.values().all(Option::is_some) {
        values.insert("rto_s", f.rto_s.values().flatten().fold(0.0, |m: f64, s| m.max(*s)));
    }
    // Accepted (202) → the first decision, per order.
    let mut accepted: BTreeMap<&str, ()> = BTreeMap::new();
    for a in history.iter().filter(|a| a.op == Op::Buy && a.status == Some(202)) {
        accepted.insert(a.request_id.as_str(), ());
    }
    let first =
        rundir::state::first_decisions(outcomes.iter().filter(|o| accepted.contains_key(o.request_id.as_str())));
    let mut waits: Vec<u64> = first.values().map(|o| o.decided_at_ms.saturating_sub(o.accepted_at_ms) * 1000).collect();
    waits.sort_unstable();
    if let Some(p) = rundir::stats::quantile_ms(&waits, 0.99) {
        values.insert("time_to_decision_p99_ms", p);
    }
    // Of the orders decided for payment (sold out and refused orders never reach it), the share
    // whose first decision captured.
    let captured = first.values().filter(|o| o.outcome == Decision::Completed).count();
    let failed = first.values().filter(|o| o.outcome == Decision::FailedPayment).count();
    if captured + failed > 0 {
        values.insert("payment_success", captured as f64 / (captured + failed) as f64);
    }
    let detections: Vec<u64> = verdict.alerts.iter().filter(|s| s.expected).filter_map(|s| s.fired_after_ms).collect();
    if !detections.is_empty() && detections.len() == verdict.alerts.iter().filter(|s| s.expected).count() {
        values.insert("mttd_s", *detections.iter().max().unwrap_or(&0) as f64 / 1000.0);
    }
    let span_us = history.iter().map(|a| a.intended_us).max().zip(history.iter().map(|a| a.intended_us).min());
    if let Some((last, start)) = span_us {
        let seconds = (last.saturating_sub(start)) as f64 / 1e6;
        if seconds > 0.0 {
            values.insert("decided_per_s", first.len() as f64 / seconds);
        }
    }
    let broken_invariants = verdict
        .checks
        .iter()
        .filter(|c| c.kind == Kind::Invariant && c.outcome == Outcome::Fail)
        .map(|c| match c.evidence.first() {
            Some(e) => format!("{}: {e}", c.title()),
            None => format!("{}: {}", c.title(), c.measured),
        })
        .collect();
    RunFigures { values, broken_invariants, outcome: Some(verdict.outcome) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(i: u64, latency_ms: u64, status: u16) -> rundir::Attempt {
        let intended_us = 1_000_000_000 + i * 100_000;
        rundir::Attempt {
            op: Op::Buy,
            request_id: format!("o{i}"),
            user: "u".into(),
            item: "i".into(),
            amount: 1,
            kind: loadgen::UserKind::Buyer,
            attempt: 1,
            phase: "p".into(),
            phase_index: 0,
            intended_us,
            sent_us: intended_us,
            done_us: intended_us + latency_ms * 1000,
            status: Some(status),
            error: None,
            order_status: None,
            class: rundir::Class::Ok,
        }
    }

    fn decided(i: u64, after_ms: u64) -> flashsale::order::Outcome {
        flashsale::order::Outcome {
            request_id: format!("o{i}"),
            user_id: "u".into(),
            item_id: "i".into(),
            amount: 1,
            attempt: 1,
            outcome: flashsale::order::Decision::Completed,
            correlation_id: String::new(),
            accepted_at_ms: 1_000_000,
            decided_at_ms: 1_000_000 + after_ms,
            stock_seen: None,
            release: None,
        }
    }

    fn verdict() -> Verdict {
        let mut figures = rundir::Figures { availability: Some(0.999), ..Default::default() };
        figures.rto_s.insert("#1 kill broker".into(), Some(3.0));
        figures.rto_s.insert("#2 kill broker".into(), Some(5.5));
        Verdict {
            scenario: "t".into(),
            description: String::new(),
            seed: 1,
            scale: 1.0,
            outcome: Outcome::Pass,
            pass: true,
            started_unix_ms: 0,
            ended_unix_ms: 0,
            figures,
            checks: Vec::new(),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn a_run_gives_its_figures_and_leaves_out_what_it_has_no_evidence_for() {
        // 100 orders, 10 a second, latencies 1..=100 ms, each decided 10 ms after (one 900 ms).
        let history: Vec<_> = (1..=100).map(|i| attempt(i, i, 202)).collect();
        let mut outcomes: Vec<_> = (1..=100).map(|i| decided(i, if i == 50 { 900 } else { 10 })).collect();
        // Order 7's payment failed first; a later record (redelivered) completed: the first counts.
        outcomes[6].outcome = flashsale::order::Decision::FailedPayment;
        let mut again = decided(7, 500);
        again.outcome = flashsale::order::Decision::Completed;
        outcomes.push(again);
        let run = of(&verdict(), &history, &outcomes);
        assert_eq!(run.values["payment_success"], 0.99, "{:?}", run.values);
        assert_eq!(run.values["availability"], 0.999);
        assert_eq!(run.values["rto_s"], 5.5, "the slowest recovery");
        assert!((run.values["p99_ms"] - 99.0).abs() <= 1.0, "{:?}", run.values);
        assert!((run.values["p95_ms"] - 95.0).abs() <= 1.0, "{:?}", run.values);
        assert!(run.values["time_to_decision_p99_ms"] >= 10.0, "{:?}", run.values);
        assert!((run.values["decided_per_s"] - 100.0 / 9.9).abs() < 0.01, "{:?}", run.values);
        assert!(!run.values.contains_key("mttd_s"), "no expected alert: no detection time");
        assert!(run.broken_invariants.is_empty());

        // A fault never recovered from: no RTO rather than a made-up one; a broken invariant named.
        let mut v = verdict();
        v.figures.rto_s.insert("#3 kill broker".into(), None);
        v.checks.push(
            rundir::CheckResult::new("no oversell", Kind::Invariant, "completed ≤ initial", "oversold", Outcome::Fail)
                .with(vec!["101: 12 completed of 10".into()]),
        );
        let run = of(&v, &history, &outcomes);
        assert!(!run.values.contains_key("rto_s"), "{:?}", run.values);
        assert_eq!(run.broken_invariants, ["no oversell: 101: 12 completed of 10"]);
    }

    #[test]
    fn every_figure_has_a_unique_name_and_a_threshold() {
        for (i, f) in FIGURES.iter().enumerate() {
            assert!(FIGURES[i + 1..].iter().all(|g| g.name != f.name), "{} twice", f.name);
            assert!(f.min_absolute > 0.0, "{}: a zero threshold would flag any change", f.name);
            assert_eq!(figure(f.name), Some(f));
        }
        assert_eq!(figure("p99"), None);
    }
}
