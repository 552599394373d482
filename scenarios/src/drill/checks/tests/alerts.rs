//! The alert checks over synthetic `alerts.jsonl` records: each expectation (fired, notified,
//! resolved) passed, failed and inconclusive; false alarms outside faults and unexpected ones;
//! an undetected fault; monitoring that never ran.

use std::collections::BTreeMap;

use rundir::{AlertPhase, AlertRecord, Outcome};

use super::{ms, run, Run};

/// One fault from 10 s to 20 s; CircuitBreakerOpen expected within 10 s, notified within 10 s,
/// resolved within 10 s of the end; settle 5 s.
fn alerting() -> Run {
    let mut r = run(
        "[[faults]]\nat = \"10s\"\nfor = \"10s\"\nkind = \"kill\"\ntarget = \"broker\"\n\
         [alerts]\nmonitoring = true\nsettle = \"5s\"\n\
         [[alerts.expect]]\nalert = \"CircuitBreakerOpen\"\nfires_within = \"10s\"\nnotified_within = \"10s\"\nresolves_within = \"10s\"\n",
    );
    r.fault(1, 10.0, Some(20.0));
    setup(&mut r, 60.0);
    r
}

/// The monitoring's setup record: rules evaluated each second from 0 to `to_s`.
fn setup(r: &mut Run, to_s: f64) {
    r.alerts.retain(|a| !matches!(a, AlertRecord::Setup { .. }));
    r.alerts.push(AlertRecord::Setup {
        rules: vec!["shipped".into()],
        alertmanager_config: "shipped".into(),
        time_factor: 1.0,
        from_ms: ms(0.0),
        to_ms: ms(to_s),
        evaluation_rounds: to_s as u64 - 1,
    });
}

fn state(r: &mut Run, name: &str, severity: &str, phase: AlertPhase, from_s: f64, to_s: f64) {
    let labels = BTreeMap::from([("severity".to_string(), severity.to_string())]);
    r.alerts.push(AlertRecord::State {
        alertname: name.into(),
        state: phase,
        labels,
        from_ms: ms(from_s),
        to_ms: ms(to_s),
    });
}

fn notified(r: &mut Run, name: &str, at_s: f64) {
    r.alerts.push(AlertRecord::Notification {
        received_ms: ms(at_s),
        alertname: name.into(),
        status: "firing".into(),
        labels: BTreeMap::new(),
        starts_at: String::new(),
        ends_at: String::new(),
    });
}

/// The breaker alert pending at 12 s, firing 14–25 s, notified at 16 s: on time everywhere.
fn on_time(r: &mut Run) {
    state(r, "CircuitBreakerOpen", "critical", AlertPhase::Pending, 12.0, 13.0);
    state(r, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 14.0, 25.0);
    notified(r, "CircuitBreakerOpen", 16.0);
}

#[test]
fn an_alert_on_time_passes_detect_notify_and_resolve() {
    let mut r = alerting();
    on_time(&mut r);
    assert_eq!(r.outcome("rules evaluated"), Outcome::Pass);
    let detect = r.result("CircuitBreakerOpen detects fault #1");
    assert_eq!((detect.outcome, detect.measured.as_str()), (Outcome::Pass, "fired after 4.0 s (pending after 2.0 s)"));
    assert_eq!(r.result("CircuitBreakerOpen notified for fault #1").measured, "notified after 6.0 s");
    assert_eq!(r.outcome("CircuitBreakerOpen notified for fault #1"), Outcome::Pass);
    let resolved = r.result("CircuitBreakerOpen resolves after fault #1");
    assert_eq!((resolved.outcome, resolved.measured.as_str()), (Outcome::Pass, "resolved 5.0 s after the fault's end"));
    assert_eq!(r.outcome("no false alarms"), Outcome::Pass);
    assert_eq!(r.check().1.undetected_faults, Vec::<u64>::new());
}

#[test]
fn late_unnotified_and_never_resolved_alerts_fail() {
    let mut late = alerting();
    state(&mut late, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 25.0, 30.0);
    assert_eq!(late.result("CircuitBreakerOpen detects fault #1").measured, "fired after 15.0 s");
    assert_eq!(late.outcome("CircuitBreakerOpen detects fault #1"), Outcome::Fail);
    assert_eq!(late.result("CircuitBreakerOpen notified for fault #1").measured, "no notification");
    assert_eq!(late.outcome("CircuitBreakerOpen notified for fault #1"), Outcome::Fail);

    let never = alerting();
    assert_eq!(never.result("CircuitBreakerOpen detects fault #1").measured, "never fired");
    assert_eq!(never.outcome("CircuitBreakerOpen detects fault #1"), Outcome::Fail);
    assert_eq!(never.outcome("CircuitBreakerOpen resolves after fault #1"), Outcome::Fail);
    assert_eq!(never.check().1.undetected_faults, vec![1], "nobody was paged for fault #1");

    let mut stuck = alerting();
    state(&mut stuck, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 14.0, 60.0);
    notified(&mut stuck, "CircuitBreakerOpen", 16.0);
    assert_eq!(stuck.outcome("CircuitBreakerOpen detects fault #1"), Outcome::Pass);
    let resolved = stuck.result("CircuitBreakerOpen resolves after fault #1");
    assert_eq!((resolved.outcome, resolved.measured.as_str()), (Outcome::Fail, "still firing when the drill ended"));
}

#[test]
fn an_alert_that_first_fires_after_the_fault_ended_is_judged_on_its_resolve_too() {
    // Fault 10–20 s; the alert fires only at 22 s (a short fault, a slow rule) and stays on.
    let mut late_start = alerting();
    state(&mut late_start, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 22.0, 60.0);
    let resolved = late_start.result("CircuitBreakerOpen resolves after fault #1");
    assert_eq!((resolved.outcome, resolved.measured.as_str()), (Outcome::Fail, "still firing when the drill ended"));

    // The same, resolved at 27 s: 7 s after the end, within the 10 s.
    let mut resolves = alerting();
    state(&mut resolves, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 22.0, 27.0);
    assert_eq!(resolves.outcome("CircuitBreakerOpen resolves after fault #1"), Outcome::Pass);
}

#[test]
fn a_drill_that_ends_before_the_resolve_deadline_is_inconclusive_not_passed() {
    // Evaluations stop at 25 s, 5 s after the fault's end, with the alert still firing: the
    // 10 s allowed had not run out, so nothing was seen either way.
    let mut r = alerting();
    setup(&mut r, 25.0);
    state(&mut r, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 14.0, 25.0);
    let resolved = r.result("CircuitBreakerOpen resolves after fault #1");
    assert_eq!(
        (resolved.outcome, resolved.measured.as_str()),
        (Outcome::Inconclusive, "still firing when the drill ended, 5.0 s after the fault's end")
    );
    // And it says what was missing (the table prints "needs …, saw …").
    assert_eq!(
        (resolved.needed.as_str(), resolved.seen.as_str()),
        ("the drill to run until it resolved, or 10.0 s after the fault's end", "ended 5.0 s after the fault's end")
    );
}

#[test]
fn too_few_rule_evaluations_make_a_held_alert_check_inconclusive_not_passed() {
    let mut r = alerting();
    r.alerts[0] = AlertRecord::Setup {
        rules: vec![],
        alertmanager_config: String::new(),
        time_factor: 1.0,
        from_ms: ms(0.0),
        to_ms: ms(60.0),
        evaluation_rounds: 20,
    };
    on_time(&mut r);
    assert_eq!(r.outcome("rules evaluated"), Outcome::Inconclusive);
    assert_eq!(r.outcome("CircuitBreakerOpen detects fault #1"), Outcome::Inconclusive);
    assert_eq!(r.outcome("no false alarms"), Outcome::Inconclusive);
    // What was seen to fail still fails.
    let mut late = alerting();
    late.alerts[0] = r.alerts[0].clone();
    assert_eq!(late.outcome("CircuitBreakerOpen detects fault #1"), Outcome::Fail);
}

#[test]
fn alarms_outside_faults_or_unexpected_are_false_alarms_and_info_is_not() {
    let mut outside = alerting();
    on_time(&mut outside);
    state(&mut outside, "HighErrorRate", "critical", AlertPhase::Firing, 40.0, 45.0);
    state(&mut outside, "InventoryLow", "info", AlertPhase::Firing, 40.0, 45.0);
    let check = outside.result("no false alarms");
    assert_eq!(check.outcome, Outcome::Fail);
    assert_eq!(check.evidence, vec!["HighErrorRate fired at 40.0 s (outside every fault)".to_string()]);
    assert_eq!(outside.check().1.false_alarms, 1);

    let mut unexpected = alerting();
    on_time(&mut unexpected);
    state(&mut unexpected, "ConsumerLagHigh", "warning", AlertPhase::Firing, 15.0, 18.0);
    let check = unexpected.result("no false alarms");
    assert_eq!(check.evidence, vec!["ConsumerLagHigh fired at 15.0 s (not expected during the fault)".to_string()]);

    // Listed in may_fire: it may fire during a fault, not outside one.
    let mut allowed = alerting();
    allowed.scenario.alerts.may_fire = vec!["ConsumerLagHigh".into()];
    on_time(&mut allowed);
    state(&mut allowed, "ConsumerLagHigh", "warning", AlertPhase::Firing, 15.0, 18.0);
    assert_eq!(allowed.outcome("no false alarms"), Outcome::Pass);
    state(&mut allowed, "ConsumerLagHigh", "warning", AlertPhase::Firing, 50.0, 52.0);
    assert_eq!(allowed.outcome("no false alarms"), Outcome::Fail);

    // Within the settle time after the fault an expected alert is not a false alarm.
    let mut settling = alerting();
    on_time(&mut settling);
    state(&mut settling, "CircuitBreakerOpen", "critical", AlertPhase::Firing, 23.0, 26.0);
    assert_eq!(settling.outcome("no false alarms"), Outcome::Pass);
}

#[test]
fn monitoring_asked_for_but_not_recorded_fails() {
    let mut r = alerting();
    r.alerts.clear();
    let check = r.result("monitoring ran");
    assert_eq!(check.outcome, Outcome::Fail);
    // A drill without monitoring has no alert checks at all.
    let plain = run("");
    assert!(plain.check().0.iter().all(|c| c.kind != rundir::Kind::Alert));
}
