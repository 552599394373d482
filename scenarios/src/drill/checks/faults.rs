//! The drill's own steps: every planned fault landed (applied and verified on the system) and
//! healed (verified), and every lab action (backup, DLQ replay, reconcile --fix) succeeded. A
//! fault that could not be injected — refused, conflicting, failed, or never attempted — fails
//! the drill: a drill whose fault did not happen tested nothing.

use rundir::{CheckResult, Figures, Kind, Outcome};
use serde_json::Value;

use super::Evidence;
use crate::scenario::Step;

pub fn faults_landed(ev: &Evidence<'_>, results: &mut Vec<CheckResult>) {
    let mut attempted = 0usize;
    for e in ev.events {
        let kind = e["event"].as_str().unwrap_or_default();
        if kind == "fault_stop" && e["reason"] == "instant" {
            continue; // an instant fault's one check is its start's
        }
        let what = match kind {
            "fault_start" => "applied",
            "fault_stop" => "healed",
            "fault_error" => "failed",
            "fault_refused" => "refused",
            _ => continue,
        };
        if kind != "fault_stop" {
            attempted += 1;
        }
        let ok = e["check"]["ok"].as_bool().unwrap_or(false) && matches!(kind, "fault_start" | "fault_stop");
        let measured = e["check"]["observed"].as_str().or(e["error"].as_str()).unwrap_or_default();
        let id = if e["id"].is_null() { String::new() } else { format!("#{} ", e["id"]) };
        results.push(CheckResult::held(
            &format!("fault {id}{what}: {}", e["description"].as_str().unwrap_or_default()),
            Kind::Fault,
            "verified on the system",
            measured,
            ok,
        ));
    }
    // Every fault of the timeline was at least attempted (an abort or a stop skips the rest).
    let planned = ev.scenario.steps().iter().filter(|(_, s)| matches!(s, Step::Fault(_))).count();
    if planned > 0 {
        results.push(
            CheckResult::held(
                "every planned fault injected",
                Kind::Fault,
                format!("{planned} fault(s)"),
                format!("{attempted} attempted"),
                attempted >= planned,
            )
            .needing(format!("{planned} attempts"), format!("{attempted}")),
        );
    }
}

pub fn actions(ev: &Evidence<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    // Every action of the timeline was run (an abort or a stop skips the rest): a failover or a
    // repair that never ran is judged, not left out.
    let planned = ev.scenario.steps().iter().filter(|(_, s)| !matches!(s, Step::Fault(_))).count();
    if planned > 0 {
        let ran = ev.events.iter().filter(|e| e["event"] == "action").count();
        results.push(
            CheckResult::held(
                "every planned action run",
                Kind::Fault,
                format!("{planned} action(s)"),
                format!("{ran} run"),
                ran >= planned,
            )
            .needing(format!("{planned} runs"), format!("{ran}")),
        );
    }
    for e in ev.events.iter().filter(|e| e["event"] == "action") {
        let ok = e["ok"].as_bool().unwrap_or(false);
        let output = e["output"].as_str().unwrap_or_default();
        // reconcile --json: say what it fixed and what stays wrong; the drift is a figure.
        let measured = match serde_json::from_str::<Value>(output) {
            Ok(r) if r.get("fixed_items").is_some() => {
                for item in r["items"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(was), Some(expected)) =
                        (item["item_id"].as_str(), item["was"].as_i64(), item["expected"].as_i64())
                    {
                        *figures.drift_fixed.entry(id.to_string()).or_default() += expected - was;
                    }
                }
                format!(
                    "fixed {} item(s) and {} order state(s); {} completed without capture, {} captures without order",
                    r["fixed_items"],
                    r["fixed_states"],
                    r["completed_without_capture"].as_array().map_or(0, Vec::len),
                    r["captures_without_order"].as_array().map_or(0, Vec::len)
                )
            }
            _ => output.lines().next().unwrap_or_default().chars().take(200).collect::<String>(),
        };
        results.push(CheckResult::new(
            &format!("action {}", e["action"].as_str().unwrap_or_default()),
            Kind::Fault,
            "succeeded",
            measured,
            if ok { Outcome::Pass } else { Outcome::Fail },
        ));
    }
}
