//! Auto-recovery, when the drill runs a supervisor (`[supervisor]`): every service a fault took
//! down was brought back — running and ready again — within the drill's RTO of the fault's end,
//! by the supervisor alone; and a service that kept dying was restarted with a back-off that
//! grew (Kubernetes' CrashLoopBackOff), not in a tight loop.
//!
//! What counts as "taken down": the supervisor marked the fault's component not ready between
//! the fault's start and its end (exit, failed liveness, held down). A fault that never took it
//! down (a CPU quota, say) has nothing to recover from and is not judged here.

use rundir::events::SupervisorEvent;
use rundir::{CheckResult, Figures, Kind};

use super::Evidence;

/// Whether fault `id` was a kill or terminate without a duration: the supervisor's to heal.
fn handed_to_supervisor(events: &[serde_json::Value], id: u64) -> bool {
    events.iter().any(|e| {
        e["event"] == "fault_start"
            && e["id"].as_u64() == Some(id)
            && matches!(e["action"].as_str(), Some("kill" | "terminate"))
            && e["duration_ms"].is_null()
    })
}

/// Without an RTO in the scenario, how long the supervisor may take.
const DEFAULT_LIMIT_S: f64 = 60.0;

pub fn recovery(
    ev: &Evidence<'_>,
    windows: &[rundir::FaultWindow],
    results: &mut Vec<CheckResult>,
    figures: &mut Figures,
) {
    let Some(events) = rundir::events::supervisor_events(ev.events) else { return };
    let limit_s = ev.scenario.slo.rto.map(|d| d.as_secs_f64()).unwrap_or(DEFAULT_LIMIT_S);
    for w in windows {
        let end = w.end_ms.unwrap_or(ev.run_end_ms);
        let mine = |e: &&SupervisorEvent| e.component() == w.target;
        let Some(down_ms) = events
            .iter()
            .filter(mine)
            .find(|e| {
                matches!(e, SupervisorEvent::Ready { ready: false, .. })
                    && (w.start_ms..=end.max(w.start_ms) + 1_000).contains(&e.ts_ms())
            })
            .map(SupervisorEvent::ts_ms)
        else {
            // A kill left to the supervisor that it never saw is no recovery: it fails rather
            // than go unjudged.
            if handed_to_supervisor(ev.events, w.id) {
                results.push(CheckResult::held(
                    &format!("supervisor brought {} back after fault #{}", w.target, w.id),
                    Kind::Slo,
                    format!("running and ready ≤ {limit_s:.0} s after the fault's end"),
                    "the supervisor never marked it down: no exit, restart or readiness change seen",
                    false,
                ));
            }
            continue;
        };
        let restarts: Vec<&SupervisorEvent> = events
            .iter()
            .filter(mine)
            .filter(|e| matches!(e, SupervisorEvent::Restart { .. }) && e.ts_ms() >= down_ms)
            .collect();
        let ready = events
            .iter()
            .filter(mine)
            .find(|e| matches!(e, SupervisorEvent::Ready { ready: true, .. }) && e.ts_ms() >= down_ms.max(end));
        let name = format!("supervisor brought {} back after fault #{}", w.target, w.id);
        let target = format!("running and ready ≤ {limit_s:.0} s after the fault's end");
        let back_offs: Vec<String> = restarts
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::Restart { back_off_ms, ok, .. } => {
                    Some(format!("{:.1} s{}", *back_off_ms as f64 / 1000.0, if *ok { "" } else { " (died starting)" }))
                }
                _ => None,
            })
            .take(8)
            .collect();
        let restarted = match restarts.len() {
            0 => "never restarted".to_string(),
            n => format!("restarted {n} time(s), back-off {}", back_offs.join(", ")),
        };
        let result = match ready {
            Some(r) => {
                let after_s = r.ts_ms().saturating_sub(end) as f64 / 1000.0;
                figures.rto_s.entry(format!("#{} {} (supervisor)", w.id, w.target)).or_insert(Some(after_s));
                CheckResult::held(
                    &name,
                    Kind::Slo,
                    target,
                    format!("ready {after_s:.1} s after the fault's end ({restarted})"),
                    after_s <= limit_s,
                )
            }
            None => CheckResult::held(&name, Kind::Slo, target, format!("never ready again ({restarted})"), false),
        };
        results.push(result);
        // In a crash loop the waits must grow (each at least the one before) and get past zero.
        let waits: Vec<u64> = restarts
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::Restart { back_off_ms, .. } => Some(*back_off_ms),
                _ => None,
            })
            .collect();
        if waits.len() >= 3 {
            let grows = waits.windows(2).all(|p| p[1] >= p[0]) && waits.last() > waits.first();
            results.push(CheckResult::held(
                &format!("back-off grew while {} kept dying", w.target),
                Kind::Slo,
                "each wait ≥ the one before, the last above the first",
                format!("{} restarts, waits {}", waits.len(), back_offs.join(", ")),
                grows,
            ));
        }
    }
}
