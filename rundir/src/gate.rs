//! `gate.json`: a regression gate (`flashlab gate`) — its two sides (base and head: two builds,
//! two configurations, or a stored baseline and a build), every drill run of each side, and per
//! drill and figure the judgement with the statistics behind it; the invariants that broke.
//! Each run is a drill run directory beside it (`<drill>/<side>-NN/`). A stored baseline
//! (`flashlab baseline update`) is the same record with only its base side run.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Outcome;

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// The gate's answer for one figure of one drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Worse, beyond the noise (p < α) and by at least the smallest change that matters.
    Regressed,
    /// Better, the same way.
    Improved,
    /// Not worse: the interval of the difference reaches no further the worse way than the
    /// smallest change that matters.
    Unchanged,
    /// Too few or too noisy runs to say: not a pass.
    Inconclusive,
}

/// The whole gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRun {
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    /// `a/b` (both sides run here, interleaved), `baseline` (the head against a stored base),
    /// or `baseline update` (the base only, stored).
    pub mode: String,
    /// The suite file as given.
    pub suite: String,
    pub alpha: f64,
    pub confidence: f64,
    pub base: Side,
    pub head: Side,
    pub machine: Machine,
    pub drills: Vec<DrillGate>,
    /// Ctrl-C or a run that could not start ended the gate early: what was measured stands.
    pub interrupted: bool,
}

/// One side: what ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Side {
    /// `base` or `head`.
    pub label: String,
    /// The `flashsale` binary (`--base-bin`, `--head-bin`; default the lab's own).
    pub bin: String,
    /// Its size and modification time, to tell two builds apart in the record.
    pub bin_identity: String,
    /// Environment its services got (`--base-env`, `--head-env` files).
    pub env: BTreeMap<String, String>,
    /// The lab's git commit when the side ran.
    pub commit: String,
}

/// The machine a side ran on: a baseline is refused on another kind of machine's numbers only
/// with a warning, since a runner changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Machine {
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
}

/// One drill of the suite, both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillGate {
    /// As the suite names it.
    pub drill: String,
    pub scale: f64,
    pub repetitions: u32,
    pub runs: Vec<GateRunRecord>,
    pub figures: Vec<FigureGate>,
}

/// One run of a drill on one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRunRecord {
    /// `base` or `head`.
    pub side: String,
    /// From 0.
    pub repetition: u32,
    pub seed: u64,
    /// Its run directory, relative to the gate's.
    pub dir: String,
    /// The drill's verdict; `None`: it could not run (`error` says why).
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The figures read of it (`gate::figures`), by name.
    pub values: BTreeMap<String, f64>,
    /// Invariants that broke in it: never statistical, one fails the gate.
    pub broken_invariants: Vec<String>,
    pub took_ms: u64,
}

/// One figure of one drill: both sides' values and the judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureGate {
    pub name: String,
    pub what: String,
    pub better: Better,
    pub base: Vec<f64>,
    pub head: Vec<f64>,
    #[serde(flatten)]
    pub judgement: Judgement,
}

/// The judgement of one figure, with the statistics that say why (`gate::stats::judge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub change: Change,
    pub base_median: f64,
    pub head_median: f64,
    /// head − base, of the medians.
    pub difference: f64,
    /// The bootstrap interval of `difference`.
    pub interval: (f64, f64),
    /// The smallest change that matters, in the figure's unit.
    pub threshold: f64,
    /// Mann–Whitney's two-sided p.
    pub p: f64,
}

/// The gate's answer as the exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// Nothing regressed, no invariant broke, every figure decided: exit 0.
    Pass,
    /// A figure regressed or an invariant broke on some run: exit 1.
    Fail,
    /// No regression found, but a figure could not be decided or a run could not run: exit 2.
    Undecided,
}

impl GateRun {
    /// The answer: an invariant broken on any run of either side, or a regressed figure, fails;
    /// else an inconclusive figure or a run that could not run leaves the gate undecided.
    pub fn outcome(&self) -> GateOutcome {
        let runs = || self.drills.iter().flat_map(|d| &d.runs);
        let figures = || self.drills.iter().flat_map(|d| &d.figures);
        if runs().any(|r| !r.broken_invariants.is_empty()) || figures().any(|f| f.judgement.change == Change::Regressed)
        {
            GateOutcome::Fail
        } else if self.interrupted
            || runs().any(|r| r.outcome.is_none())
            || figures().any(|f| f.judgement.change == Change::Inconclusive)
        {
            GateOutcome::Undecided
        } else {
            GateOutcome::Pass
        }
    }
}

pub fn write(path: &Path, run: &GateRun) -> Result<(), crate::RunDirError> {
    crate::io::write_json(path, run)
}

pub fn read(path: &Path) -> Result<GateRun, crate::RunDirError> {
    crate::io::read_json(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(change: Change) -> FigureGate {
        FigureGate {
            name: "p99_ms".into(),
            what: String::new(),
            better: Better::Lower,
            base: vec![],
            head: vec![],
            judgement: Judgement {
                change,
                base_median: 0.0,
                head_median: 0.0,
                difference: 0.0,
                interval: (0.0, 0.0),
                threshold: 1.0,
                p: 1.0,
            },
        }
    }

    fn run(outcome: Option<Outcome>, broken: &[&str]) -> GateRunRecord {
        GateRunRecord {
            side: "head".into(),
            repetition: 0,
            seed: 1,
            dir: String::new(),
            outcome,
            error: None,
            values: BTreeMap::new(),
            broken_invariants: broken.iter().map(|s| s.to_string()).collect(),
            took_ms: 0,
        }
    }

    fn gate(runs: Vec<GateRunRecord>, figures: Vec<FigureGate>) -> GateRun {
        GateRun {
            started_unix_ms: 0,
            ended_unix_ms: None,
            mode: "a/b".into(),
            suite: String::new(),
            alpha: 0.05,
            confidence: 0.95,
            base: Side::default(),
            head: Side::default(),
            machine: Machine::default(),
            drills: vec![DrillGate { drill: "d".into(), scale: 0.3, repetitions: 3, runs, figures }],
            interrupted: false,
        }
    }

    #[test]
    fn the_outcome_fails_on_a_regression_or_any_broken_invariant_and_is_undecided_on_too_little() {
        let ok = || run(Some(Outcome::Pass), &[]);
        assert_eq!(
            gate(vec![ok()], vec![figure(Change::Unchanged), figure(Change::Improved)]).outcome(),
            GateOutcome::Pass
        );
        assert_eq!(gate(vec![ok()], vec![figure(Change::Regressed)]).outcome(), GateOutcome::Fail);
        let broken = run(Some(Outcome::Fail), &["no oversell: 101: 12 completed of 10"]);
        assert_eq!(
            gate(vec![ok(), broken], vec![figure(Change::Unchanged)]).outcome(),
            GateOutcome::Fail,
            "never statistical"
        );
        assert_eq!(gate(vec![ok()], vec![figure(Change::Inconclusive)]).outcome(), GateOutcome::Undecided);
        assert_eq!(gate(vec![run(None, &[])], vec![figure(Change::Unchanged)]).outcome(), GateOutcome::Undecided);
        let mut cut = gate(vec![ok()], vec![figure(Change::Unchanged)]);
        cut.interrupted = true;
        assert_eq!(cut.outcome(), GateOutcome::Undecided);
    }
}
