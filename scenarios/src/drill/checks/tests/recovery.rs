//! The supervisor's checks: a service a fault took down must be ready again within the RTO of
//! the fault's end, and a crash loop must be restarted with a growing back-off.

use rundir::Outcome;
use serde_json::json;

use super::{ms, run, Run};

const BACK: &str = "supervisor brought processor[0] back after fault #1";
const GREW: &str = "back-off grew while processor[0] kept dying";

/// A supervised run: a kill of processor[0] at 10 s, over at once (the supervisor's to heal),
/// marked not ready at 10.1 s.
fn supervised() -> Run {
    let mut r = run("[slo]\nrto = \"20s\"\n");
    r.events.push(json!({"event": "supervisor_start", "components": ["processor[0]"], "ts_ms": ms(0.0)}));
    r.events.push(json!({"event": "fault_start", "id": 1, "description": "kill processor[0]", "target": "processor[0]", "action": "kill", "duration_ms": null, "ts_ms": ms(10.0), "check": {"ok": true, "observed": "gone"}}));
    r.events.push(json!({"event": "fault_stop", "id": 1, "description": "kill processor[0]", "target": "processor[0]", "reason": "instant", "ts_ms": ms(10.0), "check": {"ok": true, "observed": "gone"}}));
    r.ready(10.1, false);
    r
}

impl Run {
    fn ready(&mut self, at_s: f64, ready: bool) {
        self.events
            .push(json!({"event": "supervisor_ready", "component": "processor[0]", "ready": ready, "ts_ms": ms(at_s)}));
    }

    fn restart(&mut self, at_s: f64, back_off_ms: u64, ok: bool) {
        self.events.push(json!({"event": "supervisor_restart", "component": "processor[0]", "reason": "exited", "back_off_ms": back_off_ms, "restarts": 1, "ok": ok, "ts_ms": ms(at_s)}));
    }
}

#[test]
fn a_service_ready_again_in_time_passes_late_or_never_fails() {
    let mut r = supervised();
    r.restart(10.3, 0, true);
    r.ready(11.0, true);
    let result = r.result(BACK);
    assert_eq!(result.outcome, Outcome::Pass, "{result:?}");
    assert!(
        result.measured.contains("ready 1.0 s after the fault's end")
            && result.measured.contains("restarted 1 time(s)"),
        "{}",
        result.measured
    );

    let mut late = supervised();
    late.restart(10.3, 0, true);
    late.ready(40.0, true);
    assert_eq!(late.outcome(BACK), Outcome::Fail);

    let mut never = supervised();
    never.restart(10.3, 0, false);
    let result = never.result(BACK);
    assert_eq!(result.outcome, Outcome::Fail);
    assert!(
        result.measured.contains("never ready again") && result.measured.contains("died starting"),
        "{}",
        result.measured
    );
}

#[test]
fn a_crash_loop_needs_a_growing_back_off() {
    let mut r = supervised();
    for (i, wait) in [0, 3_000, 6_000].into_iter().enumerate() {
        r.restart(10.2 + i as f64 * 7.0, wait, false);
    }
    r.ready(30.0, true);
    assert_eq!(r.outcome(GREW), Outcome::Pass);

    let mut tight = supervised();
    for i in 0..4 {
        tight.restart(10.2 + i as f64 * 0.2, 0, false);
    }
    tight.ready(30.0, true);
    let result = tight.result(GREW);
    assert_eq!(result.outcome, Outcome::Fail, "{result:?}");
    assert!(result.measured.contains("4 restarts"), "{}", result.measured);
}

#[test]
fn without_a_supervisor_or_a_service_taken_down_there_is_nothing_to_judge() {
    let mut r = run("[slo]\nrto = \"20s\"\n");
    r.fault(1, 10.0, Some(20.0));
    let (results, _) = r.check();
    assert!(results.iter().all(|c| !c.name.starts_with("supervisor")), "no supervisor, no check");

    // A supervised run whose fault never took processor[0] down (a CPU quota, say).
    let mut r = supervised();
    r.events.retain(|e| e["event"] != "supervisor_ready");
    for e in r.events.iter_mut().filter(|e| e["event"] == "fault_start") {
        e["action"] = json!("cpu");
        e["duration_ms"] = json!(9000);
    }
    let (results, _) = r.check();
    assert!(results.iter().all(|c| c.name != BACK), "{:?}", results.iter().map(|c| &c.name).collect::<Vec<_>>());
}

#[test]
fn a_kill_left_to_the_supervisor_that_it_never_saw_fails() {
    let mut r = supervised();
    r.events.retain(|e| {
        !e["event"].as_str().is_some_and(|k| k.starts_with("supervisor_")) || e["event"] == "supervisor_start"
    });
    let result = r.result(BACK);
    assert_eq!(result.outcome, Outcome::Fail, "{result:?}");
    assert!(result.measured.contains("never marked it down"), "{}", result.measured);
}
