//! Every check over small synthetic runs: for each, an input that passes it, one that fails it,
//! and one with too little evidence. The check table of docs/drills.md points here.

use flashsale::order::{Decision, Outcome as Record};
use rundir::state::{Capture, DeadLetter, FinalState, States};
use rundir::{Attempt, CheckResult, Class, Figures, Op, Outcome, Scrape};
use serde_json::{json, Value};

use super::{check, Evidence};
use crate::scenario::{parse, Scenario};

mod alerts;
mod recovery;
mod release;

/// Second 0 of every synthetic run (ms since the epoch).
const T0: u64 = 1_800_000_000_000;

fn ms(s: f64) -> u64 {
    T0 + (s * 1000.0) as u64
}

/// A synthetic run directory, built up by the test.
struct Run {
    scenario: Scenario,
    history: Vec<Attempt>,
    events: Vec<Value>,
    scrapes: Vec<Scrape>,
    states: States,
    alerts: Vec<rundir::AlertRecord>,
    end_s: f64,
    next: u64,
}

/// A scenario: one item with `stock` 1000, a phase `p`, plus `extra` TOML.
fn run(extra: &str) -> Run {
    let text = format!(
        "name = \"t\"\ndescription = \"synthetic\"\n[stock]\n\"i\" = 1000\n[load]\nphases = \"p:60s@10\"\n{extra}"
    );
    let scenario = parse(&text, "t.toml").expect("a valid scenario");
    let mut states = States::default();
    states.after.stock.insert("i".into(), Some(1000));
    let mut r = Run {
        scenario,
        history: vec![],
        events: vec![],
        scrapes: vec![],
        states,
        alerts: vec![],
        end_s: 60.0,
        next: 0,
    };
    r.events.push(json!({"event": "phase", "name": "p", "start_ms": T0, "duration_ms": 60_000, "ts_ms": T0}));
    r.generator(64, 0);
    r
}

impl Run {
    /// The load's end: 600 arrivals offered, `users` of 64 up at the start, `late` of them late.
    fn generator(&mut self, users: u64, late: u64) {
        self.events.retain(|e| e["event"] != "load_end");
        let health = loadgen::GeneratorHealth {
            users_ready_at_start: users,
            max_in_flight: 64,
            late_arrivals: late,
            ..Default::default()
        };
        self.events.push(
            json!({"event": "load_end", "interrupted": false, "offered": 600, "generator": health, "ts_ms": ms(60.0)}),
        );
    }

    fn attempt(&mut self, op: Op, id: &str, at_s: f64, took_ms: u64, status: Option<u16>) -> &mut Attempt {
        let class = match status {
            Some(200..=299) => Class::Ok,
            Some(_) => Class::Fail,
            None if op == Op::Unserved => Class::Fail,
            None => Class::Info,
        };
        let intended_us = ms(at_s) * 1000;
        self.history.push(Attempt {
            op,
            request_id: id.to_string(),
            user: "u".into(),
            item: "i".into(),
            amount: 1,
            kind: loadgen::UserKind::Buyer,
            attempt: 1,
            phase: "p".into(),
            phase_index: 0,
            intended_us,
            sent_us: intended_us,
            done_us: intended_us + took_ms * 1000,
            status,
            error: status.is_none().then(|| if op == Op::Unserved { "dropped".into() } else { "timeout".into() }),
            order_status: None,
            class,
        });
        self.history.last_mut().expect("just pushed")
    }

    /// `n` orders at `rate`/s from `from_s`, answered `status` in `took_ms`; accepted ones are
    /// decided COMPLETED (captured, stock taken) 100 ms later.
    fn orders(&mut self, from_s: f64, n: u64, rate: f64, status: u16, took_ms: u64) -> Vec<String> {
        let mut ids = Vec::new();
        for k in 0..n {
            self.next += 1;
            let id = format!("o{}", self.next);
            let at = from_s + k as f64 / rate;
            self.attempt(Op::Buy, &id, at, took_ms, Some(status));
            if status == 202 {
                self.decide(&id, 1, Decision::Completed, at + 0.1, true);
            }
            ids.push(id);
        }
        ids
    }

    /// Records a decision (and its capture and stock when completed and `books`).
    fn decide(&mut self, id: &str, attempt: u32, decision: Decision, at_s: f64, books: bool) {
        let accepted = self.history.iter().find(|a| a.request_id == id).map(|a| a.done_us / 1000).unwrap_or(ms(at_s));
        self.states.after.outcomes.push(Record {
            request_id: id.into(),
            user_id: "u".into(),
            item_id: "i".into(),
            amount: 1,
            attempt,
            outcome: decision,
            correlation_id: id.into(),
            accepted_at_ms: accepted,
            decided_at_ms: ms(at_s),
            stock_seen: None,
            release: None,
        });
        self.states.after.queued.push((id.into(), attempt));
        if decision == Decision::Completed && books {
            self.states.after.captures.push(Capture { key: format!("{id}/{attempt}"), amount: 1 });
            if let Some(Some(s)) = self.states.after.stock.get_mut("i") {
                *s -= 1;
            }
        }
    }

    fn fault(&mut self, id: u64, from_s: f64, to_s: Option<f64>) {
        self.events.push(json!({"event": "fault_start", "id": id, "description": "kill broker", "ts_ms": ms(from_s), "check": {"ok": true, "observed": "gone"}}));
        if let Some(to) = to_s {
            self.events.push(json!({"event": "fault_stop", "id": id, "description": "kill broker", "ts_ms": ms(to), "undone_ms": ms(to), "check": {"ok": true, "observed": "back"}}));
        }
    }

    fn lag(&mut self, at_s: f64, component: &str, lag: f64) {
        let metrics = [("processor_consumer_lag{partition=\"0\"}".to_string(), lag)].into_iter().collect();
        self.scrapes.push(Scrape { ts_ms: ms(at_s), component: component.into(), up: true, metrics });
    }

    fn check(&self) -> (Vec<CheckResult>, Figures) {
        let ev = Evidence {
            scenario: &self.scenario,
            history: &self.history,
            events: &self.events,
            scrapes: &self.scrapes,
            states: &self.states,
            alerts: &self.alerts,
            run_end_ms: ms(self.end_s),
        };
        let (results, figures, _) = check(&ev);
        (results, figures)
    }

    /// The one check called `name`.
    fn outcome(&self, name: &str) -> Outcome {
        self.result(name).outcome
    }

    fn result(&self, name: &str) -> CheckResult {
        let (results, _) = self.check();
        let found: Vec<_> = results.iter().filter(|c| c.name == name).collect();
        assert_eq!(found.len(), 1, "one check {name:?} in {:#?}", results.iter().map(|c| &c.name).collect::<Vec<_>>());
        found[0].clone()
    }
}

// --- Availability and unserved users.

#[test]
fn availability_passes_fails_and_needs_requests() {
    let mut r = run("");
    r.orders(0.0, 200, 10.0, 202, 5);
    assert_eq!(r.outcome("availability"), Outcome::Pass);
    r.orders(20.0, 5, 10.0, 503, 5);
    assert_eq!(r.outcome("availability"), Outcome::Fail, "5 of 205 bad < 99.9%");
    let mut few = run("");
    few.orders(0.0, 10, 10.0, 202, 5);
    let c = few.result("availability");
    assert_eq!(c.outcome, Outcome::Inconclusive);
    assert_eq!((c.needed.as_str(), c.seen.as_str()), ("≥ 100 requests", "10 requests"));
    let none = run("");
    assert_eq!(none.outcome("availability"), Outcome::Inconclusive, "no data is not a pass");
}

#[test]
fn unserved_arrivals_are_failed_requests_and_the_run_says_it_could_not_offer_its_load() {
    let mut r = run("");
    r.orders(0.0, 300, 10.0, 202, 5);
    assert_eq!(r.outcome("load offered as planned"), Outcome::Pass);
    r.attempt(Op::Unserved, "never-sent", 31.0, 0, None);
    let (results, figures) = r.check();
    assert_eq!(figures.unserved, 1);
    assert_eq!(figures.requests, 301);
    let get = |n: &str| results.iter().find(|c| c.name == n).unwrap().outcome;
    assert_eq!(get("availability"), Outcome::Fail, "300 of 301 < 99.9%");
    assert_eq!(get("load offered as planned"), Outcome::Inconclusive);
}

#[test]
fn a_generator_off_its_schedule_makes_the_run_inconclusive_not_passed() {
    let mut r = run("");
    r.orders(0.0, 300, 10.0, 202, 5);
    assert_eq!(r.outcome("generator kept its schedule"), Outcome::Pass);
    // 11 of 600 late is the 1% + 5 allowed; 12 is not.
    r.generator(64, 11);
    assert_eq!(r.outcome("generator kept its schedule"), Outcome::Pass);
    r.generator(64, 12);
    assert_eq!(r.outcome("generator kept its schedule"), Outcome::Inconclusive);
    // The clock started with users missing (the wait for goose ran out).
    r.generator(60, 0);
    let c = r.result("generator kept its schedule");
    assert_eq!(c.outcome, Outcome::Inconclusive);
    assert!(c.measured.starts_with("60 of 64 users up at the start"), "{}", c.measured);
    // Not recorded at all: not a pass either.
    r.events.retain(|e| e["event"] != "load_end");
    assert_eq!(r.outcome("generator kept its schedule"), Outcome::Inconclusive);
}

#[test]
fn availability_outside_and_during_faults() {
    let mut r = run("[slo]\navailability = 0.5\navailability_outside_faults = 0.999\navailability_during_faults = 0.9");
    r.orders(0.0, 150, 10.0, 202, 5);
    r.fault(1, 20.0, Some(30.0));
    r.orders(20.0, 100, 10.0, 503, 5);
    r.orders(45.0, 150, 10.0, 202, 5);
    assert_eq!(r.outcome("availability outside faults"), Outcome::Pass);
    assert_eq!(r.outcome("availability during faults"), Outcome::Fail);
    let mut quiet = run("[slo]\navailability_during_faults = 0.9");
    quiet.orders(0.0, 150, 10.0, 202, 5);
    quiet.fault(1, 20.0, Some(21.0));
    assert_eq!(quiet.outcome("availability during faults"), Outcome::Inconclusive, "no request in the fault");
}

#[test]
fn availability_of_one_phase_three_ways() {
    const CHECK: &str = "availability, phase p";
    let mut r = run("[slo]\navailability = 0.0\nphase_availability = { p = 0.999 }");
    r.fault(1, 0.0, Some(60.0));
    r.orders(0.0, 200, 10.0, 202, 5);
    assert_eq!(r.outcome(CHECK), Outcome::Pass, "judged during a fault too");
    r.orders(25.0, 1, 10.0, 503, 5);
    let failed = r.result(CHECK);
    assert_eq!(failed.outcome, Outcome::Fail, "200 of 201 < 99.9%");
    assert_eq!(failed.evidence.len(), 1, "the bad answer is named: {:?}", failed.evidence);
    let mut few = run("[slo]\nphase_availability = { p = 0.999 }");
    few.orders(0.0, 20, 10.0, 202, 5);
    assert_eq!(few.outcome(CHECK), Outcome::Inconclusive);
}

// --- Latency.

#[test]
fn latency_per_phase_three_ways() {
    let mut r = run("[slo]\np99_ms = 100");
    r.orders(0.0, 200, 10.0, 202, 5);
    assert_eq!(r.outcome("p99 latency, phase p (outside faults)"), Outcome::Pass);
    r.orders(25.0, 5, 10.0, 202, 900);
    assert_eq!(r.outcome("p99 latency, phase p (outside faults)"), Outcome::Fail);
    let mut few = run("[slo]\np99_ms = 100");
    few.orders(0.0, 20, 10.0, 202, 5);
    assert_eq!(few.outcome("p99 latency, phase p (outside faults)"), Outcome::Inconclusive);
    // A planned phase without a single request is judged (inconclusive), not skipped.
    let empty = run("[slo]\np99_ms = 100");
    assert_eq!(empty.outcome("p99 latency, phase p (outside faults)"), Outcome::Inconclusive);
}

// --- The maintenance page.

fn maintenance_run() -> Run {
    run("[topology]\ngateways = 2\n[slo]\navailability = 0.0\nphase_maintenance_min = { p = 0.9 }")
}

impl Run {
    /// `n` orders answered with the front's maintenance page.
    fn pages(&mut self, from_s: f64, n: u64) {
        let ids = self.orders(from_s, n, 10.0, 503, 5);
        for a in self.history.iter_mut().filter(|a| ids.contains(&a.request_id)) {
            a.error = Some(rundir::MAINTENANCE.into());
        }
    }
}

#[test]
fn maintenance_page_three_ways() {
    const CHECK: &str = "maintenance page, phase p";
    let mut r = maintenance_run();
    r.pages(0.0, 95);
    r.orders(10.0, 5, 10.0, 202, 5);
    assert_eq!(r.outcome(CHECK), Outcome::Pass);
    assert_eq!(r.check().1.maintenance_pages, 95);
    // Refused connections instead of the page (a front that resets when no gateway is up).
    let mut refused = maintenance_run();
    for k in 0..100 {
        refused.attempt(Op::Buy, &format!("r{k}"), k as f64 * 0.1, 1, None).error = Some("connect".into());
    }
    let failed = refused.result(CHECK);
    assert_eq!(failed.outcome, Outcome::Fail);
    assert!(failed.evidence.iter().any(|e| e == "100 answered connect"), "{:?}", failed.evidence);
    let mut few = maintenance_run();
    few.pages(0.0, 20);
    assert_eq!(few.outcome(CHECK), Outcome::Inconclusive);
}

// --- RTO.

fn rto_run(extra: &str) -> Run {
    run(&format!("[slo]\navailability = 0.5\nrto = \"5s\"\n{extra}"))
}

#[test]
fn rto_passes_when_recovered_in_time_and_fails_when_not() {
    let mut r = rto_run("");
    r.orders(0.0, 100, 10.0, 202, 5);
    r.fault(1, 10.0, Some(20.0));
    r.orders(10.0, 110, 10.0, 503, 5); // bad until 21 s
    r.orders(21.0, 150, 10.0, 202, 5); // good from 21 s for 15 s
    let (results, figures) = r.check();
    assert_eq!(results.iter().find(|c| c.name == "RTO").unwrap().outcome, Outcome::Pass);
    assert_eq!(figures.rto_s["#1 kill broker"], Some(1.0));

    let mut slow = rto_run("");
    slow.orders(0.0, 100, 10.0, 202, 5);
    slow.fault(1, 10.0, Some(20.0));
    slow.orders(10.0, 190, 10.0, 503, 5); // bad until 29 s: recovered after 9 s > 5 s
    slow.orders(29.0, 150, 10.0, 202, 5);
    assert_eq!(slow.outcome("RTO"), Outcome::Fail);

    let mut never = rto_run("");
    never.orders(0.0, 100, 10.0, 202, 5);
    never.fault(1, 10.0, Some(20.0));
    never.orders(10.0, 400, 10.0, 503, 5);
    let c = never.result("RTO");
    assert_eq!(c.outcome, Outcome::Fail);
    assert!(c.measured.contains("never recovered"), "{}", c.measured);
}

#[test]
fn rto_is_inconclusive_when_the_run_ends_before_a_whole_hold_and_fails_a_fault_never_lifted() {
    let mut short = rto_run("");
    short.orders(0.0, 100, 10.0, 202, 5);
    short.fault(1, 10.0, Some(20.0));
    short.orders(20.5, 30, 10.0, 202, 5); // 3 s of traffic after the end; the hold is 10 s
    let c = short.result("RTO");
    assert_eq!(c.outcome, Outcome::Inconclusive, "{c:?}");
    let mut open = rto_run("");
    open.orders(0.0, 100, 10.0, 202, 5);
    open.fault(1, 10.0, None);
    open.orders(10.0, 300, 10.0, 202, 5);
    assert_eq!(open.outcome("RTO"), Outcome::Fail, "a fault that never ended");
    let mut nofault = rto_run("");
    nofault.orders(0.0, 100, 10.0, 202, 5);
    assert_eq!(nofault.outcome("RTO"), Outcome::Inconclusive, "no fault is no recovery measured");
}

#[test]
fn seconds_without_requests_are_no_evidence_of_recovery_and_recovery_has_its_own_threshold() {
    // Silence after the fault, then bad answers: the silent seconds do not count as recovered.
    let mut r = rto_run("");
    r.orders(0.0, 100, 10.0, 202, 5);
    r.fault(1, 10.0, Some(20.0));
    r.orders(35.0, 200, 10.0, 503, 5);
    assert_eq!(r.outcome("RTO"), Outcome::Fail);
    // Half the answers good: above a low availability target (0.3), not recovered (0.999).
    let mut half = run("[slo]\navailability = 0.3\nrto = \"30s\"");
    half.orders(0.0, 100, 10.0, 202, 5);
    half.fault(1, 10.0, Some(20.0));
    for k in 0..200 {
        half.orders(20.0 + k as f64 * 0.1, 1, 10.0, if k % 2 == 0 { 202 } else { 503 }, 5);
    }
    assert_eq!(half.outcome("RTO"), Outcome::Fail);
}

// --- Steady state, time to decision, lag.

#[test]
fn steady_state_windows_three_ways() {
    let mut r = run("");
    r.orders(0.0, 100, 10.0, 202, 5);
    r.fault(1, 10.0, Some(12.0));
    r.orders(25.0, 100, 10.0, 202, 5);
    assert_eq!(r.outcome("steady state before the first fault"), Outcome::Pass);
    assert_eq!(r.outcome("steady state after the last fault"), Outcome::Pass);
    r.orders(36.0, 5, 10.0, 503, 5);
    assert_eq!(r.outcome("steady state after the last fault"), Outcome::Fail);
    let mut few = run("");
    few.orders(0.0, 10, 10.0, 202, 5);
    few.fault(1, 2.0, Some(3.0));
    few.orders(20.0, 100, 10.0, 202, 5);
    assert_eq!(few.outcome("steady state before the first fault"), Outcome::Inconclusive, "10 requests");
}

#[test]
fn time_to_decision_three_ways_and_an_undecided_order_breaks_the_max() {
    let extra = "[slo]\ntime_to_decision_p99_ms = 500\ntime_to_decision_max_ms = 1000";
    let mut r = run(extra);
    r.orders(0.0, 100, 10.0, 202, 5);
    assert_eq!(r.outcome("time to decision (p99)"), Outcome::Pass);
    assert_eq!(r.outcome("time to decision (max)"), Outcome::Pass);
    let id = "late";
    r.attempt(Op::Buy, id, 30.0, 5, Some(202));
    r.decide(id, 1, Decision::Completed, 32.0, true);
    assert_eq!(r.outcome("time to decision (max)"), Outcome::Fail, "2 s > 1 s");
    let mut lost = run(extra);
    lost.orders(0.0, 100, 10.0, 202, 5);
    lost.attempt(Op::Buy, "never", 30.0, 5, Some(202));
    let c = lost.result("time to decision (max)");
    assert_eq!(c.outcome, Outcome::Fail);
    assert!(c.evidence[0].contains("never: accepted, never decided"));
    let mut few = run(extra);
    few.orders(0.0, 10, 10.0, 202, 5);
    assert_eq!(few.outcome("time to decision (p99)"), Outcome::Inconclusive);
}

#[test]
fn orders_held_by_a_fault_decided_after_its_heal_three_ways() {
    const CHECK: &str = "orders held by fault #1 kill broker decided after its heal";
    let held = |n: u64, decided_after_s: Option<f64>| {
        let mut r = run("[slo]\navailability = 0.0\ndecided_after_heal = \"2s\"");
        r.fault(1, 10.0, Some(20.0));
        for k in 0..n {
            let id = format!("h{k}");
            r.attempt(Op::Buy, &id, 10.0 + k as f64 * 0.1, 5, Some(202));
            if let Some(after) = decided_after_s {
                r.decide(&id, 1, Decision::Completed, 20.0 + after, true);
            }
        }
        // Decided before the heal: not held.
        r.orders(0.0, 50, 10.0, 202, 5);
        r
    };
    let ok = held(60, Some(0.5));
    assert_eq!(ok.outcome(CHECK), Outcome::Pass);
    let times = &ok.check().1.decided_after_heal["#1 kill broker"];
    assert_eq!((times.decisions, times.max_ms), (60, 500.0));
    let late = held(60, Some(5.0));
    let c = late.result(CHECK);
    assert_eq!(c.outcome, Outcome::Fail, "5 s > 2 s");
    assert!(c.evidence[0].contains("decided 5000 ms after the heal"), "{:?}", c.evidence);
    let mut lost = held(60, Some(0.5));
    lost.attempt(Op::Buy, "lost", 15.0, 5, Some(202));
    let c = lost.result(CHECK);
    assert_eq!(c.outcome, Outcome::Fail);
    assert!(c.evidence.iter().any(|e| e == "lost: accepted, never decided"), "{:?}", c.evidence);
    assert_eq!(held(10, Some(0.5)).outcome(CHECK), Outcome::Inconclusive, "10 held < 50");
}

#[test]
fn consumer_lag_three_ways() {
    let mut r = run("[slo]\nmax_consumer_lag = 100");
    for s in 0..12 {
        r.lag(s as f64, "processor[0]", 40.0);
        r.lag(s as f64, "processor[1]", 50.0);
    }
    let (_, f) = r.check();
    assert_eq!(f.max_consumer_lag, Some(90.0), "summed over the processors in one second");
    assert_eq!(r.outcome("max consumer lag"), Outcome::Pass);
    r.lag(5.5, "processor[1]", 70.0);
    assert_eq!(r.outcome("max consumer lag"), Outcome::Fail);
    let mut few = run("[slo]\nmax_consumer_lag = 100");
    few.lag(1.0, "processor[0]", 3.0);
    assert_eq!(few.outcome("max consumer lag"), Outcome::Inconclusive);
}

// --- Faults must land.

#[test]
fn a_fault_refused_failed_or_never_attempted_fails_the_drill() {
    let plan = "[[faults]]\nat = \"10s\"\nfor = \"5s\"\nkind = \"kill\"\ntarget = \"broker\"";
    let mut ok = run(plan);
    ok.fault(1, 10.0, Some(15.0));
    let (results, _) = ok.check();
    assert!(results.iter().filter(|c| c.kind == rundir::Kind::Fault).all(|c| c.passed()), "{results:#?}");
    let mut refused = run(plan);
    refused.events.push(json!({"event": "fault_refused", "description": "kill broker", "error": "conflicts with #1", "ts_ms": ms(10.0)}));
    assert_eq!(refused.outcome("fault refused: kill broker"), Outcome::Fail);
    let mut failed = run(plan);
    failed.events.push(json!({"event": "fault_error", "id": 1, "description": "kill broker", "error": "no such process", "ts_ms": ms(10.0)}));
    assert_eq!(failed.outcome("fault #1 failed: kill broker"), Outcome::Fail);
    let mut unverified = run(plan);
    unverified.events.push(json!({"event": "fault_start", "id": 1, "description": "kill broker", "ts_ms": ms(10.0), "check": {"ok": false, "observed": "still answers"}}));
    assert_eq!(unverified.outcome("fault #1 applied: kill broker"), Outcome::Fail);
    let never = run(plan);
    assert_eq!(never.outcome("every planned fault injected"), Outcome::Fail);
}

#[test]
fn a_planned_action_never_run_fails_the_drill() {
    let plan = "[[faults]]\nat = \"50s\"\nkind = \"reconcile_fix\"";
    let never = run(plan);
    assert_eq!(never.outcome("every planned action run"), Outcome::Fail);
    let mut ran = run(plan);
    ran.events
        .push(json!({"event": "action", "action": "reconcile_fix", "ok": true, "output": "{}", "ts_ms": ms(50.0)}));
    assert_eq!(ran.outcome("every planned action run"), Outcome::Pass);
    assert_eq!(ran.outcome("action reconcile_fix"), Outcome::Pass);
}

// --- Invariants.

#[test]
fn lost_doubled_unexpected_and_rpo() {
    let mut r = run("");
    r.orders(0.0, 10, 10.0, 202, 5);
    for name in ["lost orders", "doubled orders", "unexpected orders", "RPO"] {
        assert_eq!(r.outcome(name), Outcome::Pass, "{name}");
    }
    // Lost: accepted, never decided, never queued (RPO 1).
    r.attempt(Op::Buy, "gone", 5.0, 5, Some(202));
    let (_, f) = r.check();
    assert_eq!(f.rpo, Some(1));
    assert_eq!(r.outcome("lost orders"), Outcome::Fail);
    assert_eq!(r.outcome("RPO"), Outcome::Fail);
    // Doubled: one attempt decided two ways.
    let mut d = run("");
    d.orders(0.0, 3, 10.0, 202, 5);
    d.decide("o1", 1, Decision::FailedPayment, 1.0, false);
    assert_eq!(d.outcome("doubled orders"), Outcome::Fail);
    // An identical re-publication is counted and shown, not a double.
    let mut same = run("");
    same.orders(0.0, 3, 10.0, 202, 5);
    let dup = same.states.after.outcomes[0].clone();
    same.states.after.outcomes.push(dup);
    let c = same.result("doubled orders");
    assert_eq!(c.outcome, Outcome::Pass);
    assert!(c.measured.contains("1 identical re-publication"), "{}", c.measured);
    // Unexpected: decided although every answer said no.
    let mut u = run("");
    u.attempt(Op::Buy, "no", 1.0, 5, Some(503));
    u.decide("no", 1, Decision::Completed, 2.0, true);
    assert_eq!(u.outcome("unexpected orders"), Outcome::Fail);
    let (_, f) = u.check();
    assert_eq!(f.answered_failed_then_completed, 1);
}

#[test]
fn invariants_over_no_accepted_order_are_inconclusive() {
    let mut r = run("");
    r.orders(0.0, 200, 10.0, 503, 5);
    for name in ["lost orders", "stock conservation", "money matches stock", "no oversell"] {
        assert_eq!(r.outcome(name), Outcome::Inconclusive, "{name}");
    }
}

#[test]
fn oversell_false_sold_out_and_conservation() {
    let mut r = run("");
    r.orders(0.0, 5, 10.0, 202, 5);
    assert_eq!(r.outcome("no oversell"), Outcome::Pass);
    assert_eq!(r.outcome("stock conservation"), Outcome::Pass);
    assert_eq!(r.outcome("no false sold-out"), Outcome::Pass);
    // Conservation: a unit vanished.
    if let Some(Some(s)) = r.states.after.stock.get_mut("i") {
        *s -= 1;
    }
    assert_eq!(r.outcome("stock conservation"), Outcome::Fail);
    // Oversell: more completed than there was.
    let mut o = run("");
    o.states.after.stock.insert("i".into(), Some(0));
    o.scenario.stock.insert("i".into(), 2);
    o.orders(0.0, 3, 10.0, 202, 5);
    assert_eq!(o.outcome("no oversell"), Outcome::Fail);
    // A negative inventory level seen while the run went.
    let mut neg = run("");
    neg.scrapes.push(Scrape {
        ts_ms: ms(1.0),
        component: "processor[0]".into(),
        up: true,
        metrics: [("processor_inventory_level{item_id=\"i\"}".to_string(), -1.0)].into_iter().collect(),
    });
    assert_eq!(neg.outcome("no oversell"), Outcome::Fail);
    // False sold-out: the script read 7 units and said sold out for 1.
    let mut f = run("");
    f.attempt(Op::Buy, "s", 1.0, 5, Some(202));
    f.decide("s", 1, Decision::FailedSoldOut, 2.0, false);
    f.states.after.outcomes[0].stock_seen = Some(7);
    assert_eq!(f.outcome("no false sold-out"), Outcome::Fail);
}

#[test]
fn money_dlq_and_one_effect() {
    let mut r = run("");
    r.orders(0.0, 3, 10.0, 202, 5);
    assert_eq!(r.outcome("money matches stock"), Outcome::Pass);
    // A capture counted twice on the raw ledger.
    r.states.after.captures.push(Capture { key: "o1/1".into(), amount: 1 });
    assert_eq!(r.outcome("money matches stock"), Outcome::Fail);
    assert_eq!(r.outcome("one effect per request_id, no status backwards"), Outcome::Fail);
    // Completed, never captured.
    let mut n = run("");
    n.attempt(Op::Buy, "x", 1.0, 5, Some(202));
    n.decide("x", 1, Decision::Completed, 2.0, false);
    assert_eq!(n.outcome("money matches stock"), Outcome::Fail);
    // DLQ: a payment failure dead-lettered once passes, twice (raw records) fails, never fails.
    let dlq = "payment failures refunded and dead-lettered once";
    let mut p = run("");
    p.attempt(Op::Buy, "f", 1.0, 5, Some(202));
    p.decide("f", 1, Decision::FailedPayment, 2.0, false);
    assert_eq!(p.outcome(dlq), Outcome::Fail, "not in the DLQ");
    let letter = DeadLetter { request_id: "f".into(), attempt: 1, reason: "payment_error".into(), pending: true };
    p.states.after.dlq.push(letter.clone());
    assert_eq!(p.outcome(dlq), Outcome::Pass);
    p.states.after.dlq.push(letter);
    assert_eq!(p.outcome(dlq), Outcome::Fail, "dead-lettered twice");
}

#[test]
fn statuses_backwards_and_false_409s() {
    let one = "one effect per request_id, no status backwards";
    let mut r = run("");
    r.orders(0.0, 2, 10.0, 202, 5);
    assert_eq!(r.outcome(one), Outcome::Pass);
    r.attempt(Op::Status, "o1", 3.0, 5, Some(200)).order_status = Some("COMPLETED".into());
    r.attempt(Op::Status, "o1", 4.0, 5, Some(200)).order_status = Some("PENDING".into());
    assert_eq!(r.outcome(one), Outcome::Fail);
    let mut s = run("");
    s.orders(0.0, 1, 10.0, 202, 5);
    s.states
        .after
        .orders
        .insert("o1".into(), rundir::state::OrderState { status: Some("FAILED_PAYMENT".into()), attempt: Some(1) });
    assert_eq!(s.outcome(one), Outcome::Fail, "Redis says otherwise than the decision");
    let mut d = run("");
    d.attempt(Op::Buy, "q", 1.0, 5, Some(409));
    assert_eq!(d.outcome("409 only for true duplicates"), Outcome::Fail);
    let mut t = run("");
    t.attempt(Op::Buy, "q", 1.0, 5, Some(202));
    t.attempt(Op::Buy, "q", 2.0, 5, Some(409));
    t.decide("q", 1, Decision::Completed, 1.5, true);
    assert_eq!(t.outcome("409 only for true duplicates"), Outcome::Pass);
}

// --- Damage before repair.

fn repaired(expect: &str, broken_before: bool) -> Run {
    let mut r = run(&format!("[invariants]\nexpect_damage = [{expect}]"));
    r.orders(0.0, 5, 10.0, 202, 5);
    let mut before: FinalState = r.states.after.clone();
    before.read_at_ms = ms(30.0);
    if broken_before {
        before.stock.insert("i".into(), Some(1000));
    }
    r.states.before_repair = Some(Box::new(before));
    r
}

fn staged(r: &Run, name: &str, stage: rundir::Stage) -> Outcome {
    let (results, _) = r.check();
    results
        .iter()
        .find(|c| c.name == name && c.stage == Some(stage))
        .unwrap_or_else(|| panic!("{name} {stage:?}"))
        .outcome
}

#[test]
fn damage_is_judged_before_the_repair_and_must_be_the_expected_kind() {
    use rundir::Stage::{AfterRepair, BeforeRepair};
    // Expected damage found, repaired: both pass.
    let r = repaired("\"stock conservation\"", true);
    assert_eq!(staged(&r, "stock conservation", BeforeRepair), Outcome::Pass);
    assert_eq!(staged(&r, "stock conservation", AfterRepair), Outcome::Pass);
    // No damage where the drill expects some: the repair was not tested.
    let r = repaired("\"stock conservation\"", false);
    assert_eq!(staged(&r, "stock conservation", BeforeRepair), Outcome::Inconclusive);
    // Damage the drill did not expect fails, even though the repair hid it.
    let r = repaired("", true);
    assert_eq!(staged(&r, "stock conservation", BeforeRepair), Outcome::Fail);
    assert_eq!(staged(&r, "stock conservation", AfterRepair), Outcome::Pass);
    // And damage left after the repair fails.
    let mut r = repaired("\"stock conservation\"", true);
    r.states.after.stock.insert("i".into(), Some(3));
    assert_eq!(staged(&r, "stock conservation", AfterRepair), Outcome::Fail);
}

#[test]
fn a_repair_whose_damage_was_never_read_is_inconclusive() {
    let plan = "[[faults]]\nat = \"50s\"\nkind = \"reconcile_fix\"";
    let mut r = run(plan);
    r.orders(0.0, 5, 10.0, 202, 5);
    assert_eq!(r.outcome("books read before the repair"), Outcome::Inconclusive);
}

#[test]
fn the_verdict_is_pass_only_when_every_check_passed() {
    let mut r = run("");
    r.orders(0.0, 200, 10.0, 202, 5);
    let (results, _) = r.check();
    assert_eq!(Outcome::combine(results.iter().map(|c| c.outcome)), Outcome::Pass, "{results:#?}");
    let few = {
        let mut f = run("");
        f.orders(0.0, 20, 10.0, 202, 5);
        f
    };
    let (results, _) = few.check();
    assert_eq!(Outcome::combine(results.iter().map(|c| c.outcome)), Outcome::Inconclusive);
}

#[test]
fn before_a_repair_with_the_processors_stopped_a_queued_order_is_waiting_not_lost() {
    use rundir::Stage::{AfterRepair, BeforeRepair};
    // o1 waits queued behind the stopped processors when the books are read; decided after.
    let mut r = repaired("\"stock conservation\"", true);
    let before = r.states.before_repair.as_mut().unwrap();
    before.outcomes.retain(|o| o.request_id != "o1");
    assert_eq!(staged(&r, "lost orders", BeforeRepair), Outcome::Pass);
    let (results, _) = r.check();
    let lost = results.iter().find(|c| c.name == "lost orders" && c.stage == Some(BeforeRepair)).unwrap();
    assert!(lost.measured.contains("1 still queued"), "{lost:?}");
    // Captured, then caught by the stop before its decision: waiting too, not a money mismatch.
    let before = r.states.before_repair.as_mut().unwrap();
    before.captures.push(rundir::state::Capture { key: "w1/1".into(), amount: 1 });
    before.queued.push(("w1".into(), 1));
    assert_eq!(staged(&r, "money matches stock", BeforeRepair), Outcome::Pass);
    r.states.before_repair.as_mut().unwrap().queued.retain(|(id, _)| id != "w1");
    assert_eq!(staged(&r, "money matches stock", BeforeRepair), Outcome::Fail, "a capture of no queued order");
    // Never decided at all: lost, on the final state.
    r.states.after.outcomes.retain(|o| o.request_id != "o1");
    assert_eq!(staged(&r, "lost orders", AfterRepair), Outcome::Fail);
    // Acknowledged but never queued is lost already before the repair.
    let mut r = repaired("\"stock conservation\"", true);
    let before = r.states.before_repair.as_mut().unwrap();
    before.outcomes.retain(|o| o.request_id != "o2");
    before.queued.retain(|(id, _)| id != "o2");
    assert_eq!(staged(&r, "lost orders", BeforeRepair), Outcome::Fail);
}
