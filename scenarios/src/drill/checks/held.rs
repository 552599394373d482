//! Orders a fault held (`[slo] decided_after_heal`): those accepted before the fault ended and not
//! decided by then — a payment outage's deferred payments, a stalled processor's queue — must all
//! be decided within this long of the heal, by the system alone. The time from the heal to the
//! last of them is a figure per fault (the payment outage's time to complete after recovery).

use std::collections::BTreeMap;

use rundir::stats::quantile_ms;
use rundir::verdict::DecisionTimes;
use rundir::{CheckResult, Figures, Kind, Op, Outcome};

use super::{Evidence, Judged};

pub fn decided_after_heal(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let Some(limit) = ev.scenario.slo.decided_after_heal else { return };
    let need = ev.scenario.evidence.min_decisions;
    let decided = super::slo::first_decisions(ev);
    // Each accepted order, with when its accepted attempt was sent (ms).
    let mut accepted: BTreeMap<&str, u64> = BTreeMap::new();
    for a in ev.history.iter().filter(|a| a.op == Op::Buy && a.status == Some(202)) {
        let sent = accepted.entry(a.request_id.as_str()).or_insert(a.sent_us / 1000);
        *sent = (*sent).min(a.sent_us / 1000);
    }
    for w in &run.windows {
        let name = format!("#{} {}", w.id, w.description);
        let Some(end) = w.end_ms else {
            results.push(CheckResult::new(
                &format!("orders held by fault {name} decided after its heal"),
                Kind::Slo,
                format!("≤ {} ms after the heal", limit.as_millis()),
                "the fault was never healed".to_string(),
                Outcome::judge(false, true),
            ));
            continue;
        };
        let mut after = Vec::new();
        let mut never = Vec::new();
        let mut late = Vec::new();
        for (rid, sent_ms) in &accepted {
            match decided.get(rid) {
                Some((accepted_at, decided_at)) if *accepted_at <= end && *decided_at > end => {
                    let ms = decided_at - end;
                    if ms > limit.as_millis() as u64 {
                        late.push(format!("{rid}: decided {ms} ms after the heal"));
                    }
                    after.push(ms * 1000);
                }
                Some(_) => {}
                // Accepted before the heal (its request sent then) and never decided.
                None if *sent_ms <= end => never.push(format!("{rid}: accepted, never decided")),
                None => {}
            }
        }
        after.sort_unstable();
        let n = after.len() as u64 + never.len() as u64;
        let max = quantile_ms(&after, 1.0);
        figures.decided_after_heal.insert(
            name.clone(),
            DecisionTimes {
                decisions: after.len() as u64,
                p99_ms: quantile_ms(&after, 0.99).unwrap_or(0.0),
                max_ms: max.unwrap_or(0.0),
            },
        );
        let mut measured = match max {
            Some(max) => format!("the last of {} held orders {max:.0} ms after the heal", after.len()),
            None => "no order held past the heal".into(),
        };
        if !never.is_empty() {
            measured.push_str(&format!("; {} never decided", never.len()));
        }
        let evidence: Vec<String> = never.iter().chain(&late).take(rundir::verdict::EXAMPLES).cloned().collect();
        results.push(
            CheckResult::new(
                &format!("orders held by fault {name} decided after its heal"),
                Kind::Slo,
                format!("≤ {} ms after the heal", limit.as_millis()),
                measured,
                Outcome::judge(never.is_empty() && late.is_empty(), n >= need),
            )
            .needing(format!("≥ {need} orders held past the heal"), format!("{n} held"))
            .with(evidence),
        );
    }
}
