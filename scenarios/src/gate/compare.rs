//! One drill's figures, base against head, from its runs' records: each figure judged by
//! [`stats::judge`] over the runs that have it.

use rundir::gate::{Change, FigureGate, GateRunRecord, Judgement};

use super::figures::FIGURES;
use super::stats::{self, Criterion};
use super::suite::{Suite, SuiteDrill};

/// Every figure of `drill` the suite asks for (or, when it names none, every figure either side
/// has), judged over `runs`.
///
/// A figure some runs lack (a fault never recovered from has no RTO) is judged over the runs
/// that have it; one side without it at all while the other has it cannot be compared, and is
/// inconclusive — as is a figure the suite names that no run has.
pub fn compare(suite: &Suite, drill: &SuiteDrill, runs: &[GateRunRecord]) -> Vec<FigureGate> {
    let values = |side: &str, name: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.side == side && r.outcome.is_some())
            .filter_map(|r| r.values.get(name).copied())
            .filter(|v| v.is_finite())
            .collect()
    };
    let mut out = Vec::new();
    for f in FIGURES.iter().filter(|f| drill.figures.is_empty() || drill.figures.iter().any(|n| n == f.name)) {
        let (base, head) = (values("base", f.name), values("head", f.name));
        if base.is_empty() && head.is_empty() && drill.figures.is_empty() {
            continue; // not a figure of this drill (no fault: no RTO)
        }
        let effect = suite.effect_of(drill, f);
        let criterion = Criterion {
            better: f.better,
            min_relative: effect.relative,
            min_absolute: effect.absolute,
            alpha: suite.alpha,
            confidence: suite.confidence,
        };
        let judgement = if base.is_empty() || head.is_empty() {
            Judgement {
                change: Change::Inconclusive,
                base_median: stats::median(&base),
                head_median: stats::median(&head),
                difference: f64::NAN,
                interval: (f64::NAN, f64::NAN),
                threshold: (effect.relative * stats::median(&base).abs()).max(effect.absolute),
                p: 1.0,
            }
        } else {
            stats::judge(&base, &head, &criterion, seed_of(&drill.name, f.name))
        };
        out.push(FigureGate {
            name: f.name.to_string(),
            what: f.what.to_string(),
            better: f.better,
            base,
            head,
            judgement,
        });
    }
    out
}

/// A stable seed per drill and figure (FNV-1a): the same runs, the same interval.
fn seed_of(drill: &str, figure: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in drill.bytes().chain([0]).chain(figure.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::gate::suite::parse;

    fn run(side: &str, rep: u32, values: &[(&str, f64)]) -> GateRunRecord {
        GateRunRecord {
            side: side.into(),
            repetition: rep,
            seed: 1 + u64::from(rep),
            dir: String::new(),
            outcome: Some(rundir::Outcome::Pass),
            error: None,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            broken_invariants: vec![],
            took_ms: 0,
        }
    }

    #[test]
    fn figures_are_judged_per_side_and_a_missing_side_is_inconclusive() {
        let suite = parse("[[drill]]\nname = \"d\"\n", "s.toml").unwrap();
        let mut runs = Vec::new();
        for i in 0..5 {
            let base_p99 = 20.0 + f64::from(i);
            runs.push(run("base", i, &[("p99_ms", base_p99), ("availability", 1.0), ("rto_s", 3.0)]));
            runs.push(run("head", i, &[("p99_ms", base_p99 + 40.0), ("availability", 1.0)]));
        }
        let figures = compare(&suite, &suite.drills[0], &runs);
        let by = |n: &str| figures.iter().find(|f| f.name == n).unwrap_or_else(|| panic!("{n} in {figures:?}"));
        assert_eq!(by("p99_ms").judgement.change, Change::Regressed, "{:?}", by("p99_ms"));
        assert_eq!(by("p99_ms").judgement.difference, 40.0);
        assert_eq!(by("availability").judgement.change, Change::Unchanged);
        assert_eq!(by("rto_s").judgement.change, Change::Inconclusive, "the head never gave an RTO");
        assert!(figures.iter().all(|f| f.name != "mttd_s"), "no run has it: not a figure of this drill");
        // A run that could not run gives nothing.
        let mut broken = runs.clone();
        for r in broken.iter_mut().filter(|r| r.side == "head") {
            r.outcome = None;
        }
        let figures = compare(&suite, &suite.drills[0], &broken);
        assert!(figures.iter().all(|f| f.judgement.change == Change::Inconclusive), "{figures:?}");
        // A figure the suite names that no run has.
        let named = parse("[[drill]]\nname = \"d\"\nfigures = [\"mttd_s\"]\n", "s.toml").unwrap();
        let figures = compare(&named, &named.drills[0], &runs);
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].judgement.change, Change::Inconclusive);
    }
}
