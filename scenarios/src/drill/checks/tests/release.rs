//! A deployed candidate's checks: every instance back on the release within `rollback_within`
//! (never rolled back fails; no deploy at all is inconclusive), the gate answered every time it
//! was asked, the orders the candidate decided named, and the payment success objective.

use flashsale::order::Decision;
use rundir::Outcome;
use serde_json::json;

use super::{ms, run, Run};

const ROLLED_BACK: &str = "bad release candidate rolled back";
const GATE: &str = "canary gate watched the candidate";

const RELEASE: &str = "[release]\n[release.gate]\nquery = 'up > 0'\n[[faults]]\nat = \"10s\"\nkind = \"deploy\"\n\
target = \"processor[0]\"\n[slo]\nrollback_within = \"30s\"\n";

impl Run {
    /// `target` moved to the candidate (`candidate`) or back to the release at `at_s`.
    fn deployed(&mut self, target: &str, candidate: bool, at_s: f64) {
        let release = if candidate { json!("candidate") } else { json!(null) };
        self.events.push(
            json!({"event": "deploy", "target": target, "release": release, "ok": true, "took_ms": 3000, "ts_ms": ms(at_s)}),
        );
    }

    /// `n` orders from `from_s`, decided `decision` by the candidate.
    fn by_candidate(&mut self, from_s: f64, n: u64, decision: Decision) {
        for id in self.orders(from_s, n, 10.0, 202, 5) {
            self.states.after.outcomes.retain(|o| o.request_id != id);
            self.decide(&id, 1, decision, from_s + 1.0, false);
            if let Some(o) = self.states.after.outcomes.last_mut() {
                o.release = Some("candidate".into());
            }
        }
    }
}

#[test]
fn a_candidate_rolled_back_in_time_passes_late_or_never_fails_and_no_deploy_proves_nothing() {
    let mut r = run(RELEASE);
    r.deployed("processor[0]", true, 10.0);
    r.by_candidate(12.0, 20, Decision::FailedPayment);
    r.events.push(json!({"event": "gate_breach", "query": "up > 0", "value": 1.0, "first_ms": ms(14.0), "held_ms": 0, "ts_ms": ms(15.0)}));
    r.deployed("processor[0]", false, 18.0);
    r.events.push(json!({"event": "action", "action": "rollback", "by": "gate", "ok": true, "targets": ["processor[0]"], "ts_ms": ms(18.0)}));
    let result = r.result(ROLLED_BACK);
    assert_eq!(result.outcome, Outcome::Pass, "{result:?}");
    let (_, figures) = r.check();
    let f = figures.release.expect("release figures");
    assert_eq!((f.detected_ms, f.rolled_back_ms, f.rolled_back_by.as_deref()), (Some(5000), Some(8000), Some("gate")));
    assert_eq!((f.orders_touched, f.touched_failed_payment, f.deploys), (20, 20, 1));
    assert!(result.evidence.iter().any(|e| e.ends_with("decided by candidate")), "{:?}", result.evidence);

    let mut late = run(RELEASE);
    late.deployed("processor[0]", true, 10.0);
    late.deployed("processor[0]", false, 45.0);
    let result = late.result(ROLLED_BACK);
    assert_eq!(result.outcome, Outcome::Fail, "35 s > 30 s: {result:?}");
    assert!(result.evidence.iter().any(|e| e.contains("back after 35000 ms")), "{:?}", result.evidence);

    let mut never = run(RELEASE);
    never.deployed("processor[0]", true, 10.0);
    never.deployed("processor[1]", true, 20.0);
    never.deployed("processor[0]", false, 25.0);
    let result = never.result(ROLLED_BACK);
    assert_eq!(result.outcome, Outcome::Fail, "{result:?}");
    assert!(
        result.evidence.iter().any(|e| e == "processor[1]: still runs candidate at the end"),
        "{:?}",
        result.evidence
    );
    assert_eq!(never.check().1.release.unwrap().rolled_back_ms, None);

    let nothing = run(RELEASE);
    assert_eq!(nothing.outcome(ROLLED_BACK), Outcome::Inconclusive, "no candidate ran: nothing was rolled back");
}

#[test]
fn the_gate_must_answer_while_the_candidate_runs() {
    let mut r = run(RELEASE);
    r.deployed("processor[0]", true, 10.0);
    r.deployed("processor[0]", false, 20.0);
    // Deployed, never asked: the gate watched nothing.
    assert_eq!(r.outcome(GATE), Outcome::Inconclusive);
    r.events.push(json!({"event": "gate_evaluated", "breached": false, "value": null, "ts_ms": ms(12.0)}));
    assert_eq!(r.outcome(GATE), Outcome::Pass);
    r.events.push(
        json!({"event": "gate_error", "error": "prometheus refused the query (400): parse error", "ts_ms": ms(13.0)}),
    );
    let result = r.result(GATE);
    assert_eq!(result.outcome, Outcome::Fail, "a gate that cannot be evaluated protects nothing");
    assert!(result.evidence[0].contains("parse error"), "{result:?}");
}

#[test]
fn payment_success_passes_fails_and_needs_decisions() {
    let mut r = run("[slo]\npayment_success = 0.9\n");
    r.orders(0.0, 95, 10.0, 202, 5);
    r.by_candidate(20.0, 5, Decision::FailedPayment);
    let result = r.result("payment success");
    assert_eq!(result.outcome, Outcome::Pass, "95 of 100: {result:?}");
    r.by_candidate(30.0, 10, Decision::FailedPayment);
    let result = r.result("payment success");
    assert_eq!(result.outcome, Outcome::Fail, "95 of 110: {result:?}");
    assert!(result.evidence[0].ends_with("FAILED_PAYMENT (by candidate)"), "{:?}", result.evidence);
    // Sold out is not a payment.
    let mut few = run("[slo]\npayment_success = 0.9\n");
    few.orders(0.0, 10, 10.0, 202, 5);
    few.by_candidate(5.0, 60, Decision::FailedSoldOut);
    assert_eq!(few.outcome("payment success"), Outcome::Inconclusive, "10 payments < 50");
}
