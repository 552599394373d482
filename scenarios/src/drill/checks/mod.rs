//! The checks of a run, from the run directory's records alone (history, events, scrapes and the
//! final state): [`slo`] (availability, latency, RTO, time to decision, lag, steady state),
//! [`maintenance`] (the front's maintenance page while no gateway is up), [`held`] (the orders a
//! fault held decided after its heal, by the system alone),
//! [`invariants`] (DESIGN.md's six, on the state before and after any repair) and [`faults`]
//! (each planned fault landed and healed, each action succeeded), [`release`] (a deployed
//! candidate: detected by its gate, rolled back in time, the orders it decided, the payments it
//! failed), [`recovery`] (with a
//! supervisor: every service a fault took down back and ready in time, with a growing back-off
//! in a crash loop) and [`alerts`] (the expected alerts fired, were notified and resolved in
//! time; no false alarms).
//!
//! Every check has three outcomes ([`rundir::Outcome`]): pass, fail, or inconclusive when it
//! saw less evidence than the scenario's `[evidence]` asks for. Availability counts good answers
//! (DESIGN.md): 2xx, 409 for a *true* duplicate (an earlier attempt of that `request_id` was
//! accepted or its outcome is unknown), 429 and 400. Everything else — other 4xx, 5xx, timeouts,
//! connection errors, a 409 for an id nobody took, and every arrival the generator could not
//! send (unserved) — is bad.

pub mod alerts;
pub mod faults;
pub mod held;
pub mod invariants;
pub mod maintenance;
pub mod recovery;
pub mod release;
pub mod slo;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use rundir::state::States;
use rundir::{AlertRecord, AlertScore, Attempt, CheckResult, Class, FaultWindow, Figures, Op, Scrape};
use serde_json::Value;

use crate::scenario::Scenario;

/// The drill's warm-up orders (for an item with no stock) are not the load's.
pub const WARMUP_PREFIX: &str = "warmup-";

/// Everything the checks read.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub scenario: &'a Scenario,
    pub history: &'a [Attempt],
    pub events: &'a [Value],
    pub scrapes: &'a [Scrape],
    pub states: &'a States,
    /// `alerts.jsonl` (empty without monitoring).
    pub alerts: &'a [AlertRecord],
    /// When the run ended (ms since the epoch): a fault never lifted lasts until then.
    pub run_end_ms: u64,
}

/// Runs every check; also returns the alerts table.
pub fn check(ev: &Evidence<'_>) -> (Vec<CheckResult>, Figures, Vec<AlertScore>) {
    let mut results = Vec::new();
    let mut figures = Figures::default();
    let run = Judged::new(ev);
    slo::availability(ev, &run, &mut results, &mut figures);
    slo::phase_availability(ev, &run, &mut results);
    slo::latency(ev, &run, &mut results);
    maintenance::maintenance(ev, &run, &mut results, &mut figures);
    held::decided_after_heal(ev, &run, &mut results, &mut figures);
    slo::rto(ev, &run, &mut results, &mut figures);
    slo::steady_state(ev, &run, &mut results);
    slo::time_to_decision(ev, &mut results, &mut figures);
    slo::consumer_lag(ev, &mut results, &mut figures);
    faults::faults_landed(ev, &mut results);
    faults::actions(ev, &mut results, &mut figures);
    recovery::recovery(ev, &run.windows, &mut results, &mut figures);
    release::release(ev, &mut results, &mut figures);
    invariants::all(ev, &run, &mut results, &mut figures);
    let scores = alerts::alerts(ev, &run.windows, &mut results, &mut figures);
    (results, figures, scores)
}

/// The history judged once: good or bad per `POST /buy` attempt and unserved arrival.
#[derive(Debug)]
pub struct Judged<'a> {
    /// `(history index, good)`, by completion time.
    pub attempts: Vec<(usize, bool)>,
    pub windows: Vec<FaultWindow>,
    ev: &'a Evidence<'a>,
}

impl<'a> Judged<'a> {
    pub fn new(ev: &'a Evidence<'a>) -> Judged<'a> {
        Judged { attempts: judge(ev.history), windows: rundir::fault_windows(ev.events), ev }
    }

    /// Whether an attempt belongs to a fault: its life (intended → done) overlaps a window
    /// extended by the recovery allowed (a request in flight when the broker died is the
    /// fault's).
    pub fn in_fault(&self, a: &Attempt) -> bool {
        let recovery_ms = self.ev.scenario.steady_state.recovery.as_millis() as u64;
        let (from, to) = (a.intended_us / 1000, a.done_us / 1000);
        self.windows.iter().any(|w| to >= w.start_ms && from <= w.end_ms.unwrap_or(self.ev.run_end_ms) + recovery_ms)
    }
}

/// Good or bad per `POST /buy` attempt and unserved arrival, in completion order (a 409 is good
/// only for a true duplicate; an unserved arrival is always bad).
pub fn judge(history: &[Attempt]) -> Vec<(usize, bool)> {
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut order: Vec<usize> = (0..history.len()).filter(|&i| history[i].op != Op::Status).collect();
    order.sort_by_key(|&i| (history[i].done_us, i));
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let a = &history[i];
        let good = match (a.op, a.status) {
            (Op::Unserved, _) => false,
            (_, Some(409)) => taken.contains(a.request_id.as_str()),
            (_, other) => loadgen::Live::is_good(other),
        };
        if a.op == Op::Buy && (a.status == Some(202) || a.class == Class::Info) {
            taken.insert(&a.request_id);
        }
        out.push((i, good));
    }
    out
}

/// `ok` as a share: `None` for no requests.
pub fn share(good: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| good as f64 / total as f64)
}

pub fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.3}%", v * 100.0)).unwrap_or_else(|| "no requests".into())
}

/// `none` or `N violation(s)`.
pub fn summary(evidence: &[String]) -> String {
    if evidence.is_empty() {
        "none".into()
    } else {
        format!("{} violation(s)", evidence.len())
    }
}
