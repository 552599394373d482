//! Every shipped drill plans room above the evidence its checks need, at the scale `ci/test`
//! runs them (0.3): counted from the arrival schedule and the timeline, each judged window whose
//! size depends on when a fault is healed holds at least [`MARGIN`] times its floor even when
//! every heal takes its allowance ([`RESTART_ALLOWANCE`], [`HEAL_ALLOWANCE`]), and one fixed by
//! the schedule [`FIXED_MARGIN`] times. Below the
//! floor a check is inconclusive and the drill is not a pass: stop 27's landing CI lost a green
//! run to an "after" window one latency sample short, because the window starts only once the
//! last restart is healed. This finds such a drill before a CI run does.

use std::time::Duration;

use chaos::Action;
use scenarios::scenario::{load, resolve, shipped, Scenario, Step};

/// The scale `ci/test` runs the drills at.
const SCALE: f64 = 0.3;
/// How long a fault that stops a process is assumed to take to heal once its time is up (the
/// process started again and ready): about the slowest seen in CI (a processor restart, ~3 s).
const RESTART_ALLOWANCE: Duration = Duration::from_secs(3);
/// The same for every other fault (a proxy cleared, a process thawed, a quota lifted).
const HEAL_ALLOWANCE: Duration = Duration::from_secs(1);
/// Planned samples per sample needed, at least, in a window the heals move.
const MARGIN: f64 = 1.2;
/// The same in a window fixed by the schedule: the requests in flight when a fault starts are
/// the fault's (seen: 107 of 108 planned).
const FIXED_MARGIN: f64 = 1.05;

/// One judged window of a drill, with the arrivals planned in it and the floor it needs.
#[derive(Debug)]
struct Window {
    check: String,
    planned: u64,
    floor: u64,
}

/// The windows of `scenario` (already scaled), counted from its arrival schedule with every heal
/// taking its allowance, and whether each depends on the heals (else its count is fixed by the
/// schedule and the timeline alone).
fn windows(scenario: &Scenario) -> Vec<(Window, bool)> {
    let slow = windows_with(scenario, 1.0);
    let instant = windows_with(scenario, 0.0);
    slow.into_iter()
        .zip(instant)
        .map(|(w, i)| {
            let heal_dependent = w.planned != i.planned;
            (w, heal_dependent)
        })
        .collect()
}

/// The windows with `allowance` times each heal allowance.
fn windows_with(scenario: &Scenario, allowance_factor: f64) -> Vec<Window> {
    let schedule: loadgen::ArrivalSchedule = scenario.load.phases.parse().expect("valid phases");
    let arrivals: Vec<(f64, usize)> =
        schedule.arrivals(scenario.seed).map(|a| (a.due.as_secs_f64(), a.phase)).collect();
    let recovery = scenario.steady_state.recovery.as_secs_f64();
    let run_end = schedule.duration().as_secs_f64();
    // Each fault from its start to its heal (plus the allowance), widened by the recovery the
    // checks allow after it, as `Judged::in_fault` does.
    let faults: Vec<(f64, f64)> = scenario
        .steps()
        .into_iter()
        .filter_map(|(at, step)| match step {
            Step::Fault(f) => {
                let start = at.as_secs_f64();
                let restarts = matches!(
                    f.action,
                    Action::Kill
                        | Action::Terminate
                        | Action::Restart
                        | Action::RedisLoss { .. }
                        | Action::Memory { .. }
                );
                let allowance = if restarts { RESTART_ALLOWANCE } else { HEAL_ALLOWANCE };
                let end =
                    f.duration.map_or(start, |d| start + d.as_secs_f64()) + allowance.as_secs_f64() * allowance_factor;
                Some((start, end.min(run_end) + recovery))
            }
            _ => None,
        })
        .collect();
    let in_fault = |t: f64| faults.iter().any(|(from, to)| t >= *from && t <= *to);
    let count = |keep: &dyn Fn(f64, usize) -> bool| arrivals.iter().filter(|(t, p)| keep(*t, *p)).count() as u64;
    let ev = &scenario.evidence;
    let slo = &scenario.slo;
    let mut out = vec![Window { check: "availability".into(), planned: count(&|_, _| true), floor: ev.min_requests }];
    if slo.availability_outside_faults.is_some() {
        let planned = count(&|t, _| !in_fault(t));
        out.push(Window { check: "availability outside faults".into(), planned, floor: ev.min_requests });
    }
    if !faults.is_empty() {
        let first = faults.iter().map(|w| w.0).fold(f64::MAX, f64::min);
        let last = faults.iter().map(|w| w.1).fold(0.0, f64::max);
        out.push(Window {
            check: "steady state before the first fault".into(),
            planned: count(&|t, _| t < first),
            floor: ev.min_window_requests,
        });
        out.push(Window {
            check: "steady state after the last fault".into(),
            planned: count(&|t, _| t > last),
            floor: ev.min_window_requests,
        });
    }
    for (i, phase) in schedule.phases.iter().enumerate() {
        let name = &phase.name;
        if let Some(&_share) = slo.phase_availability.get(name) {
            let planned = count(&|_, p| p == i);
            out.push(Window { check: format!("availability, phase {name}"), planned, floor: ev.min_requests });
        }
        let own = slo.phase_p99_ms.contains_key(name);
        let exempt = slo.latency_exempt_phases.contains(name);
        let judged = slo.p95_ms.is_some() || slo.p99_ms.is_some();
        if own {
            let planned = count(&|_, p| p == i);
            out.push(Window { check: format!("latency, phase {name} (all)"), planned, floor: ev.min_latency_samples });
        } else if judged && !exempt {
            let planned = count(&|t, p| p == i && !in_fault(t));
            out.push(Window {
                check: format!("latency, phase {name} (outside faults)"),
                planned,
                floor: ev.min_latency_samples,
            });
        }
    }
    out
}

#[test]
fn every_shipped_drill_plans_room_above_the_evidence_its_checks_need() {
    let mut short = Vec::new();
    let mut table = Vec::new();
    for (name, _) in shipped() {
        let scenario = load(&resolve(&name).unwrap()).unwrap().scaled(SCALE).unwrap();
        for (w, heal_dependent) in windows(&scenario) {
            let ratio = w.planned as f64 / w.floor.max(1) as f64;
            // A window the heals move needs room; one fixed by the schedule a little.
            let margin = if heal_dependent { MARGIN } else { FIXED_MARGIN };
            let kind = if heal_dependent { "after heals" } else { "fixed" };
            table.push(format!("{ratio:6.2}  {name:<26} {:<45} {} of {} ({kind})", w.check, w.planned, w.floor));
            if ratio < margin {
                short.push(format!(
                    "{name}: {} ({kind}) plans {} samples, needs {} (x{margin})",
                    w.check, w.planned, w.floor
                ));
            }
        }
    }
    table.sort();
    eprintln!("planned / needed at --scale {SCALE}:\n{}", table.join("\n"));
    assert!(short.is_empty(), "windows without room at --scale {SCALE}:\n{}", short.join("\n"));
}

#[test]
fn a_window_that_starts_after_a_slow_heal_is_found_short() {
    // processor-restart-storm as it was in stop 27: its "after" window (40 s at scale 1) began
    // once the last restart (at 112 s) was healed, and saw 99 of the 100 samples it needs.
    let path = resolve("processor-restart-storm").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text.replace("after:60s@80", "after:40s@80");
    assert_ne!(old, text, "the shipped drill's after phase is 60 s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.toml");
    std::fs::write(&file, old).unwrap();
    let scenario = load(&file).unwrap().scaled(SCALE).unwrap();
    let (after, heal_dependent) =
        windows(&scenario).into_iter().find(|(w, _)| w.check == "latency, phase after (outside faults)").unwrap();
    assert!(heal_dependent && (after.planned as f64) < MARGIN * after.floor as f64, "{after:?}");
}
