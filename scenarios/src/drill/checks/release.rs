//! A drill that deploys a candidate (`[release]`): how long it ran before the gate detected it
//! and before every instance was back on the release (`[slo] rollback_within`, the runbook's
//! "revert a bad release within 5 minutes"), whether the gate could watch it at all, which
//! orders it decided (every outcome names its processor's release), and what it cost
//! (`[slo] payment_success`: the share of decided payments that captured).

use std::collections::BTreeMap;

use flashsale::order::Decision;
use rundir::verdict::{ReleaseFigures, EXAMPLES};
use rundir::{CheckResult, Figures, Kind, Outcome};

use super::Evidence;

pub fn release(ev: &Evidence<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    payment_success(ev, results);
    let Some(release) = &ev.scenario.release else { return };
    let deploys: Vec<&serde_json::Value> =
        ev.events.iter().filter(|e| e["event"] == "deploy" && e["ok"] == true).collect();
    // Per instance: since when it ran the candidate, and each stretch it did.
    let mut since: BTreeMap<String, u64> = BTreeMap::new();
    let mut stretches: Vec<(String, u64, Option<u64>)> = Vec::new();
    for e in &deploys {
        let target = e["target"].as_str().unwrap_or_default().to_string();
        let at = e["ts_ms"].as_u64().unwrap_or(0);
        match e["release"].as_str() {
            Some(_) => {
                since.entry(target).or_insert(at);
            }
            None => {
                if let Some(from) = since.remove(&target) {
                    stretches.push((target, from, Some(at)));
                }
            }
        }
    }
    stretches.extend(since.into_iter().map(|(target, from)| (target, from, None)));
    let first = stretches.iter().map(|s| s.1).min();
    let all_back = stretches.iter().all(|s| s.2.is_some());
    let last_back = stretches.iter().filter_map(|s| s.2).max();
    let breach = ev.events.iter().find(|e| e["event"] == "gate_breach").and_then(|e| e["ts_ms"].as_u64());
    let by = ev
        .events
        .iter()
        .filter(|e| e["event"] == "action" && e["action"] == "rollback" && e["ok"] == true)
        .rfind(|e| e["targets"].as_array().is_some_and(|t| !t.is_empty()))
        .and_then(|e| e["by"].as_str().map(str::to_owned));

    // The orders the candidate decided, by their outcomes' release.
    let mut touched: BTreeMap<&str, Decision> = BTreeMap::new();
    for o in ev.states.after.outcomes.iter().filter(|o| o.release.as_deref() == Some(release.name.as_str())) {
        touched.entry(o.request_id.as_str()).or_insert(o.outcome);
    }
    let failed = touched.values().filter(|d| **d == Decision::FailedPayment).count() as u64;
    let examples: Vec<String> = touched.keys().take(EXAMPLES).map(|id| id.to_string()).collect();
    figures.release = Some(ReleaseFigures {
        candidate: release.name.clone(),
        deploys: stretches.len() as u64,
        detected_ms: first.zip(breach).map(|(f, b)| b.saturating_sub(f)),
        rolled_back_ms: if all_back { first.zip(last_back).map(|(f, l)| l.saturating_sub(f)) } else { None },
        rolled_back_by: by,
        orders_touched: touched.len() as u64,
        touched_failed_payment: failed,
        touched_examples: examples.clone(),
    });

    if let Some(limit) = ev.scenario.slo.rollback_within {
        let limit_ms = limit.as_millis() as u64;
        let mut late = Vec::new();
        let mut longest = 0;
        for (target, from, to) in &stretches {
            match to {
                Some(to) => {
                    longest = longest.max(to - from);
                    if to - from > limit_ms {
                        late.push(format!("{target}: back after {} ms", to - from));
                    }
                }
                None => late.push(format!("{target}: still runs {} at the end", release.name)),
            }
        }
        let measured = if stretches.is_empty() {
            "no instance ran the candidate".to_string()
        } else if late.iter().any(|l| l.contains("still runs")) {
            format!("never rolled back; {} order(s) decided by {}", touched.len(), release.name)
        } else {
            format!("the longest instance {longest} ms; {} order(s) decided by {}", touched.len(), release.name)
        };
        let evidence: Vec<String> = late
            .iter()
            .cloned()
            .chain(examples.iter().map(|id| format!("{id}: decided by {}", release.name)))
            .take(EXAMPLES)
            .collect();
        results.push(
            CheckResult::new(
                &format!("bad release {} rolled back", release.name),
                Kind::Slo,
                format!("every instance back on the release ≤ {limit_ms} ms after its deploy"),
                measured,
                Outcome::judge(late.is_empty(), !stretches.is_empty()),
            )
            .needing("≥ 1 deploy of the candidate".to_string(), format!("{}", stretches.len()))
            .with(evidence),
        );
    }

    if release.gate.is_some() && !stretches.is_empty() {
        let evaluated = ev.events.iter().filter(|e| e["event"] == "gate_evaluated").count();
        let errors: Vec<String> = ev
            .events
            .iter()
            .filter(|e| e["event"] == "gate_error")
            .filter_map(|e| e["error"].as_str().map(str::to_owned))
            .collect();
        let measured = match (&errors.first(), breach) {
            (Some(e), _) => format!("{} error(s): {e}", errors.len()),
            (None, Some(_)) => format!("evaluated {evaluated} time(s); breached, rolled back"),
            (None, None) => format!("evaluated {evaluated} time(s); never breached"),
        };
        results.push(
            CheckResult::new(
                "canary gate watched the candidate",
                Kind::Slo,
                "Prometheus answered every evaluation",
                measured,
                Outcome::judge(errors.is_empty(), evaluated >= 1),
            )
            .needing("≥ 1 evaluation while the candidate ran".to_string(), format!("{evaluated}"))
            .with(errors.into_iter().take(EXAMPLES).collect()),
        );
    }
}

/// `[slo] payment_success`: of the orders decided for payment (each order's first decision),
/// the share that captured.
fn payment_success(ev: &Evidence<'_>, results: &mut Vec<CheckResult>) {
    let Some(least) = ev.scenario.slo.payment_success else { return };
    let need = ev.scenario.evidence.min_decisions;
    let first = rundir::state::first_decisions(
        ev.states.after.outcomes.iter().filter(|o| !o.request_id.starts_with(super::WARMUP_PREFIX)),
    );
    let captured = first.values().filter(|o| o.outcome == Decision::Completed).count() as u64;
    let failed: Vec<String> = first
        .iter()
        .filter(|(_, o)| o.outcome == Decision::FailedPayment)
        .map(|(id, o)| {
            format!("{id}: FAILED_PAYMENT{}", o.release.as_deref().map(|r| format!(" (by {r})")).unwrap_or_default())
        })
        .collect();
    let n = captured + failed.len() as u64;
    let share = if n == 0 { 0.0 } else { captured as f64 / n as f64 };
    results.push(
        CheckResult::new(
            "payment success",
            Kind::Slo,
            format!("≥ {:.1}% of decided payments captured", least * 100.0),
            format!("{:.2}% of {n} ({} failed)", share * 100.0, failed.len()),
            Outcome::judge(share >= least, n >= need),
        )
        .needing(format!("≥ {need} payments decided"), format!("{n}"))
        .with(failed.into_iter().take(EXAMPLES).collect()),
    );
}
