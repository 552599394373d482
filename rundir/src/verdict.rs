//! `verdict.json`: every check with its target, what it measured, its outcome and the evidence
//! it needed and saw; the headline figures; the verdict.
//!
//! A check has three outcomes (DESIGN.md): **pass**, **fail**, or **inconclusive** — it saw too
//! little to judge (too few requests, samples or seconds), which is not a pass. A fail wins over
//! too little evidence: a violation seen is a violation. The verdict is PASS only when every
//! check passed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Inconclusive,
    Fail,
}

impl Outcome {
    /// `PASS`, `INCONCLUSIVE`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Inconclusive => "INCONCLUSIVE",
            Outcome::Fail => "FAIL",
        }
    }

    /// A check's outcome: failed if `held` is false (whatever the evidence), else passed only
    /// with `enough` evidence.
    pub fn judge(held: bool, enough: bool) -> Outcome {
        match (held, enough) {
            (false, _) => Outcome::Fail,
            (true, false) => Outcome::Inconclusive,
            (true, true) => Outcome::Pass,
        }
    }

    /// The verdict over several checks: any fail is a FAIL, else anything inconclusive is
    /// INCONCLUSIVE; no checks at all is INCONCLUSIVE too.
    pub fn combine(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        outcomes
            .into_iter()
            .fold(None, |acc: Option<Outcome>, o| Some(acc.map_or(o, |a| a.max(o))))
            .unwrap_or(Outcome::Inconclusive)
    }
}

/// What kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SteadyState,
    Slo,
    Invariant,
    /// An alert expectation, or false alarms (the monitoring's verdict).
    Alert,
    /// A fault's or action's own check (did it take effect, did it heal, did it succeed).
    Fault,
}

/// For an invariant of a drill with a repair step: which state it judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The damage: the state just before the first repair step.
    BeforeRepair,
    /// The state after the repair and the drain.
    AfterRepair,
}

/// One row of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: Kind,
    pub target: String,
    pub measured: String,
    pub outcome: Outcome,
    /// The evidence the check needs to be judged (`≥ 100 requests`); empty when any is enough.
    #[serde(default)]
    pub needed: String,
    /// The evidence it had (`2,310 requests`).
    #[serde(default)]
    pub seen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Example request_ids and what is wrong with them.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// How many example ids a failed check quotes.
pub const EXAMPLES: usize = 5;

impl CheckResult {
    pub fn new(
        name: &str,
        kind: Kind,
        target: impl Into<String>,
        measured: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        CheckResult {
            name: name.into(),
            kind,
            target: target.into(),
            measured: measured.into(),
            outcome,
            needed: String::new(),
            seen: String::new(),
            stage: None,
            evidence: vec![],
        }
    }

    /// Passed or failed; any evidence is enough (invariants over the whole state).
    pub fn held(name: &str, kind: Kind, target: impl Into<String>, measured: impl Into<String>, held: bool) -> Self {
        Self::new(name, kind, target, measured, Outcome::judge(held, true))
    }

    /// What was needed and seen.
    pub fn needing(mut self, needed: impl Into<String>, seen: impl Into<String>) -> Self {
        self.needed = needed.into();
        self.seen = seen.into();
        self
    }

    /// Example ids (at most [`EXAMPLES`]).
    pub fn with(mut self, evidence: Vec<String>) -> Self {
        self.evidence = evidence.into_iter().take(EXAMPLES).collect();
        self
    }

    pub fn at(mut self, stage: Stage) -> Self {
        self.stage = Some(stage);
        self
    }

    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// The check's name with its stage, as reports show it.
    pub fn title(&self) -> String {
        match self.stage {
            None => self.name.clone(),
            Some(Stage::BeforeRepair) => format!("{} (damage found, before repair)", self.name),
            Some(Stage::AfterRepair) => format!("{} (after repair)", self.name),
        }
    }
}

/// Time from acceptance (202) to the order's decision, of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct DecisionTimes {
    pub decisions: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The headline figures of the verdict. `None`: not measured (never a pretend zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Figures {
    pub availability: Option<f64>,
    pub availability_outside_faults: Option<f64>,
    pub availability_during_faults: Option<f64>,
    /// `POST /buy` attempts judged, unserved arrivals included.
    #[serde(default)]
    pub requests: u64,
    /// Arrivals the generator could not send (dropped, not started): failed requests.
    #[serde(default)]
    pub unserved: u64,
    /// Share of a 30-day 99.9% error budget this run burned (0.01 = 1%).
    pub error_budget_burned: f64,
    /// Per fault: seconds from its end until the system held `recovered_at` for the hold;
    /// `None`: not recovered (or not measurable).
    pub rto_s: BTreeMap<String, Option<f64>>,
    /// Acknowledged orders lost (`None`: not measured).
    pub rpo: Option<u64>,
    /// Per phase: accepted → decided.
    #[serde(default)]
    pub time_to_decision: BTreeMap<String, DecisionTimes>,
    /// The largest total consumer lag seen in one second (sum over the processors).
    #[serde(default)]
    pub max_consumer_lag: Option<f64>,
    /// Orders whose buyer was told it failed (503/5xx) that later completed.
    #[serde(default)]
    pub answered_failed_then_completed: u64,
    /// Units of stock a repair step (`reconcile --fix`) rewrote, per item.
    #[serde(default)]
    pub drift_fixed: BTreeMap<String, i64>,
    /// Faults (numbers, from 1) during which no alarm fired at all: nobody would have been paged.
    #[serde(default)]
    pub undetected_faults: Vec<u64>,
    /// Alarms that fired outside every fault, or unexpected during one.
    #[serde(default)]
    pub false_alarms: u64,
    /// `POST /buy` answered with the front's maintenance page (no gateway was up).
    #[serde(default)]
    pub maintenance_pages: u64,
    /// Per fault (`#N description`): the orders it held undecided past its heal, and how long
    /// after the heal they were decided (`[slo] decided_after_heal`).
    #[serde(default)]
    pub decided_after_heal: BTreeMap<String, DecisionTimes>,
    /// A drill that deployed a candidate (`[release]`): detection, rollback and what it touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseFigures>,
}

/// A candidate's time on the system: from its first deploy to the gate's detection and to the
/// last instance back on the release, and the orders it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReleaseFigures {
    /// The candidate's name (`FLASHSALE_RELEASE`).
    pub candidate: String,
    /// Instances it was deployed on, one count per deploy.
    pub deploys: u64,
    /// First deploy → the gate's condition first breached (ms); `None`: the gate never
    /// breached (or there was none).
    pub detected_ms: Option<u64>,
    /// First deploy → every instance back on the release (ms); `None`: never rolled back.
    pub rolled_back_ms: Option<u64>,
    /// Who rolled it back: `gate` or `timeline`.
    pub rolled_back_by: Option<String>,
    /// Orders the candidate decided (distinct `request_id`s of outcomes it published).
    pub orders_touched: u64,
    /// Of those, the ones it failed for payment.
    pub touched_failed_payment: u64,
    /// Some of their `request_id`s.
    pub touched_examples: Vec<String>,
}

impl ReleaseFigures {
    /// `(what, figure)` rows, as the terminal table and the reports show them.
    pub fn rows(&self) -> Vec<(String, String)> {
        let s =
            |v: Option<u64>, none: &str| v.map_or_else(|| none.to_string(), |v| format!("{:.1} s", v as f64 / 1000.0));
        let by = self.rolled_back_by.as_ref().map(|b| format!(" (by the {b})")).unwrap_or_default();
        let examples = if self.touched_examples.is_empty() {
            String::new()
        } else {
            format!(", e.g. {}", self.touched_examples.join(", "))
        };
        let name = &self.candidate;
        vec![
            (format!("release {name}: deploy → detected"), s(self.detected_ms, "never detected")),
            (
                format!("release {name}: deploy → rolled back"),
                format!("{}{by}", s(self.rolled_back_ms, "never rolled back")),
            ),
            (
                format!("release {name}: orders it decided"),
                format!("{} ({} failed payment){examples}", self.orders_touched, self.touched_failed_payment),
            ),
        ]
    }
}

/// `verdict.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub scale: f64,
    pub outcome: Outcome,
    /// `outcome == pass`, for consumers that only want a yes.
    pub pass: bool,
    pub started_unix_ms: u64,
    pub ended_unix_ms: u64,
    pub figures: Figures,
    pub checks: Vec<CheckResult>,
    /// Each alert expectation per fault, and each alert that fired unexpected: the report's
    /// alerts table (empty for a run without monitoring).
    #[serde(default)]
    pub alerts: Vec<AlertScore>,
}

/// One row of the alerts table: an alert around one fault (or, for a false alarm, on its own).
/// Times are ms after the fault's start (pending, firing, notified) or end (resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertScore {
    pub alert: String,
    /// The fault number (from 1, timeline order); `None`: outside every fault.
    pub fault: Option<u64>,
    /// The scenario expected it for this fault.
    pub expected: bool,
    pub pending_after_ms: Option<u64>,
    pub fired_after_ms: Option<u64>,
    pub notified_after_ms: Option<u64>,
    pub resolved_after_ms: Option<u64>,
    pub outcome: Outcome,
    /// What went wrong, or what it measured (`fired after 4.0 s`, `false alarm: outside faults`).
    pub note: String,
}

impl Verdict {
    /// The checks not passed, and why, in one line each.
    pub fn not_passed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed())
    }
}

pub fn read(path: &Path) -> Result<Verdict, crate::RunDirError> {
    crate::io::read_json(path)
}

pub fn write(path: &Path, verdict: &Verdict) -> Result<(), crate::RunDirError> {
    crate::io::write_json(path, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fail_wins_then_too_little_evidence() {
        assert_eq!(Outcome::judge(false, false), Outcome::Fail);
        assert_eq!(Outcome::judge(true, false), Outcome::Inconclusive);
        assert_eq!(Outcome::judge(true, true), Outcome::Pass);
        use Outcome::*;
        assert_eq!(Outcome::combine([Pass, Pass]), Pass);
        assert_eq!(Outcome::combine([Pass, Inconclusive, Pass]), Inconclusive);
        assert_eq!(Outcome::combine([Inconclusive, Fail]), Fail);
        assert_eq!(Outcome::combine([]), Inconclusive, "no checks is no evidence");
    }
}
