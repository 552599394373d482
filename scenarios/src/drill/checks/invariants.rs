//! DESIGN.md's invariants, on the raw records of the final state (every outcome record, dead
//! letter and capture as written, duplicates kept), and "409 only for true duplicates" and "no
//! false sold-out". When the drill had a repair step (`reconcile --fix`, the one step that
//! rewrites the state judged here), each is judged twice: on the drained state just before the
//! repair ("damage found") and after it; the damage must be of the kind the scenario
//! expects (`invariants.expect_damage`), and after the repair every invariant must hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flashsale::order::{Decision, Outcome};
use rundir::state::FinalState;
use rundir::{Attempt, CheckResult, Class, Figures, Kind, Op, Outcome as Verdict, Stage};

use super::{summary, Evidence, Judged, WARMUP_PREFIX};

/// Every invariant, on the state after the drain and, if there was a repair, before it.
pub fn all(ev: &Evidence<'_>, run: &Judged<'_>, results: &mut Vec<CheckResult>, figures: &mut Figures) {
    let after = judge_state(ev, run, &ev.states.after, ev.history, figures, Stage::AfterRepair);
    let Some(before) = &ev.states.before_repair else {
        let repairs = ev.scenario.steps().iter().any(|(_, s)| *s == crate::scenario::Step::ReconcileFix);
        if repairs {
            // The repair ran (or was due) but its damage was never read: the judgement after it
            // cannot tell what it hid.
            results.push(CheckResult::new(
                "books read before the repair",
                Kind::Invariant,
                "the state before reconcile --fix, judged",
                "not read (events.jsonl: repair_snapshot)",
                Verdict::Inconclusive,
            ));
        }
        results.extend(after);
        return;
    };
    // The damage: only what had happened by then.
    let cut_us = before.read_at_ms * 1000;
    let history: Vec<Attempt> = ev.history.iter().filter(|a| a.done_us <= cut_us).cloned().collect();
    let sub = Evidence { history: &history, ..*ev };
    let sub_run = Judged { attempts: super::judge(&history), windows: run.windows.clone(), ev: &sub };
    let mut scratch = Figures::default();
    let expected = &ev.scenario.invariants.expect_damage;
    for mut c in judge_state(&sub, &sub_run, before, &history, &mut scratch, Stage::BeforeRepair) {
        let expects = expected.iter().any(|e| e == &c.name);
        c.outcome = match (expects, c.outcome) {
            // The damage the drill is about: found is what it should be.
            (true, Verdict::Fail) => {
                c.target = format!("damage expected: {}", c.target);
                Verdict::Pass
            }
            (true, _) => {
                c.target = format!("damage expected: {}", c.target);
                c.measured = format!("{} — no damage: the repair had nothing to repair", c.measured);
                Verdict::Inconclusive
            }
            // Damage of another kind than expected is a failure of the system.
            (false, o) => o,
        };
        results.push(c.at(Stage::BeforeRepair));
    }
    results.extend(after.into_iter().map(|c| c.at(Stage::AfterRepair)));
}

/// The first decision of each (request_id, attempt); records that contradict it; identical
/// re-publications (an at-least-once redelivery publishes the decision again).
struct Decisions<'a> {
    first: BTreeMap<(&'a str, u32), &'a Outcome>,
    conflicts: Vec<String>,
    republished: usize,
}

fn decisions(outcomes: &[Outcome]) -> Decisions<'_> {
    let mut d = Decisions { first: BTreeMap::new(), conflicts: Vec::new(), republished: 0 };
    for o in outcomes {
        match d.first.get(&(o.request_id.as_str(), o.attempt)) {
            Some(first) if first.outcome != o.outcome => d.conflicts.push(format!(
                "{}/{}: decided {} and {}",
                o.request_id,
                o.attempt,
                first.outcome.as_str(),
                o.outcome.as_str()
            )),
            Some(_) => d.republished += 1,
            None => {
                d.first.insert((o.request_id.as_str(), o.attempt), o);
            }
        }
    }
    d
}

fn judge_state(
    ev: &Evidence<'_>,
    run: &Judged<'_>,
    state: &FinalState,
    history: &[Attempt],
    figures: &mut Figures,
    stage: Stage,
) -> Vec<CheckResult> {
    let wanted = &ev.scenario.invariants;
    let mut results = Vec::new();
    let d = decisions(&state.outcomes);
    let mut by_request: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for ((rid, _), o) in &d.first {
        by_request.entry(rid).or_default().push(o);
    }
    let mut acked: BTreeSet<&str> = BTreeSet::new();
    let mut unknown: BTreeSet<&str> = BTreeSet::new();
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    let mut told_failed: BTreeSet<&str> = BTreeSet::new();
    for a in history.iter().filter(|a| a.op == Op::Buy) {
        sent.insert(&a.request_id);
        if a.status == Some(202) {
            acked.insert(&a.request_id);
        } else if a.class == Class::Info {
            unknown.insert(&a.request_id);
        } else if a.status.is_some_and(|s| s >= 500) {
            told_failed.insert(&a.request_id);
        }
    }
    // All completions of a request, over its attempts, counted on the raw records.
    let mut completions: BTreeMap<&str, usize> = BTreeMap::new();
    for o in state.outcomes.iter().filter(|o| o.outcome == Decision::Completed) {
        *completions.entry(o.request_id.as_str()).or_default() += 1;
    }
    let completed_attempts =
        |rid: &str| by_request.get(rid).map_or(0, |v| v.iter().filter(|o| o.outcome == Decision::Completed).count());

    // 1. Every acknowledged order decided exactly once; nothing unexpected.
    if wanted.no_lost_or_doubled_orders {
        let queued: BTreeSet<&str> = state.queued.iter().map(|(r, _)| r.as_str()).collect();
        // Before a repair made with the processors stopped, orders wait queued behind them: not
        // lost yet, and judged on the final state like every other order.
        let waiting = |rid: &str| stage == Stage::BeforeRepair && queued.contains(rid);
        let still_queued = acked.iter().filter(|rid| !by_request.contains_key(**rid) && waiting(rid)).count();
        let lost: Vec<String> = acked
            .iter()
            .filter(|rid| !by_request.contains_key(**rid) && !waiting(rid))
            .map(|rid| {
                let where_ = if queued.contains(rid) { "queued, never decided" } else { "202 but never queued" };
                format!("{rid}: {where_}")
            })
            .collect();
        let rpo = acked.iter().filter(|rid| !queued.contains(**rid) && !by_request.contains_key(**rid)).count() as u64;
        figures.rpo = Some(rpo);
        let doubled: Vec<String> = d
            .conflicts
            .iter()
            .cloned()
            .chain(
                by_request
                    .keys()
                    .filter(|rid| completed_attempts(rid) > 1)
                    .map(|rid| format!("{rid}: completed in {} attempts", completed_attempts(rid))),
            )
            .collect();
        let unexpected: Vec<String> = by_request
            .keys()
            .filter(|rid| !rid.starts_with(WARMUP_PREFIX) && !acked.contains(*rid) && !unknown.contains(*rid))
            .map(|rid| {
                if sent.contains(rid) {
                    format!("{rid}: decided although every answer said it was not taken")
                } else {
                    format!("{rid}: decided but never sent")
                }
            })
            .collect();
        figures.answered_failed_then_completed = told_failed
            .iter()
            .filter(|rid| {
                !acked.contains(*rid) && !unknown.contains(*rid) && completions.get(*rid).is_some_and(|n| *n > 0)
            })
            .count() as u64;
        results.push(
            CheckResult::held(
                "lost orders",
                Kind::Invariant,
                format!("0 of {} acknowledged", acked.len()),
                if still_queued > 0 {
                    format!("{} lost; {still_queued} still queued (judged after the repair)", lost.len())
                } else {
                    format!("{} lost", lost.len())
                },
                lost.is_empty(),
            )
            .with(lost),
        );
        results.push(
            CheckResult::held(
                "doubled orders",
                Kind::Invariant,
                "0 (conflicting decisions, or more than one completed attempt)",
                format!(
                    "{} doubled; {} identical re-publications of a decision (at-least-once redeliveries)",
                    doubled.len(),
                    d.republished
                ),
                doubled.is_empty(),
            )
            .with(doubled),
        );
        results.push(
            CheckResult::held(
                "unexpected orders",
                Kind::Invariant,
                "0",
                format!("{} unexpected", unexpected.len()),
                unexpected.is_empty(),
            )
            .with(unexpected),
        );
        let limit = ev.scenario.slo.rpo;
        results.push(CheckResult::held(
            "RPO",
            Kind::Slo,
            format!("≤ {limit} acknowledged orders lost"),
            format!("{rpo}"),
            rpo <= limit,
        ));
    }

    // Completed quantity per item, over the raw records (a doubled completion counts twice:
    // that is stock that left twice).
    let mut completed_qty: BTreeMap<&str, u64> = BTreeMap::new();
    for o in d.first.values().filter(|o| o.outcome == Decision::Completed) {
        *completed_qty.entry(o.item_id.as_str()).or_default() += u64::from(o.amount);
    }

    // 2. No oversell, never negative; and no false sold-out.
    if wanted.no_oversell {
        let mut lowest: BTreeMap<&str, f64> = BTreeMap::new();
        for s in ev.scrapes.iter().filter(|s| s.up) {
            for (k, v) in &s.metrics {
                if let Some(item) =
                    k.strip_prefix("processor_inventory_level{item_id=\"").and_then(|r| r.strip_suffix("\"}"))
                {
                    let e = lowest.entry(item).or_insert(*v);
                    *e = e.min(*v);
                }
            }
        }
        let mut evidence = Vec::new();
        for (item, initial) in &ev.scenario.stock {
            let done = completed_qty.get(item.as_str()).copied().unwrap_or(0);
            if done > *initial {
                evidence.push(format!("item {item}: {done} completed of {initial}"));
            }
            if let Some(Some(v)) = state.stock.get(item) {
                if *v < 0 {
                    evidence.push(format!("item {item}: stock {v} at the end"));
                }
            }
            if let Some(low) = lowest.get(item.as_str()) {
                if *low < 0.0 {
                    evidence.push(format!("item {item}: processor_inventory_level {low} during the run"));
                }
            }
        }
        results.push(
            CheckResult::held(
                "no oversell",
                Kind::Invariant,
                "completed ≤ initial, stock ≥ 0",
                summary(&evidence),
                evidence.is_empty(),
            )
            .with(evidence),
        );
        let false_sold_out: Vec<String> = d
            .first
            .values()
            .filter(|o| o.outcome == Decision::FailedSoldOut)
            .filter(|o| o.stock_seen.is_some_and(|s| s >= i64::from(o.amount)))
            .map(|o| {
                format!(
                    "{}/{}: sold out with {} in stock for {}",
                    o.request_id,
                    o.attempt,
                    o.stock_seen.unwrap_or(0),
                    o.amount
                )
            })
            .collect();
        let sold_out = d.first.values().filter(|o| o.outcome == Decision::FailedSoldOut).count();
        results.push(
            CheckResult::held(
                "no false sold-out",
                Kind::Invariant,
                "sold out only when the stock read < amount",
                format!("{sold_out} sold out; {}", summary(&false_sold_out)),
                false_sold_out.is_empty(),
            )
            .with(false_sold_out),
        );
    }

    // 3. Conservation.
    if wanted.stock_conservation {
        let mut evidence = Vec::new();
        let mut measured = Vec::new();
        for (item, initial) in &ev.scenario.stock {
            let done = completed_qty.get(item.as_str()).copied().unwrap_or(0);
            let left = state.stock.get(item).copied().flatten();
            let left_text = left.map(|v| v.to_string()).unwrap_or("missing".into());
            measured.push(format!("{item}: {initial} = {left_text} + {done}"));
            if left != Some(*initial as i64 - done as i64) {
                evidence.push(format!("item {item}: initial {initial}, remaining {left_text}, completed {done}"));
            }
        }
        results.push(
            CheckResult::held(
                "stock conservation",
                Kind::Invariant,
                "initial = remaining + completed",
                measured.join("; "),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 4. Money ↔ stock, both ways, every capture counted.
    if wanted.money_matches_stock {
        let mut captured: HashMap<&str, Vec<u64>> = HashMap::new();
        for c in &state.captures {
            captured.entry(c.key.as_str()).or_default().push(c.amount);
        }
        let mut evidence = Vec::new();
        let mut completed_keys = BTreeSet::new();
        for o in d.first.values().filter(|o| o.outcome == Decision::Completed) {
            let key = format!("{}/{}", o.request_id, o.attempt);
            match captured.get(key.as_str()).map(Vec::as_slice) {
                None | Some([]) => evidence.push(format!("{key}: completed, never captured")),
                Some([amount]) if *amount != u64::from(o.amount) => {
                    evidence.push(format!("{key}: captured {amount}, ordered {}", o.amount))
                }
                Some([_]) => {}
                Some(many) => evidence.push(format!("{key}: captured {} times", many.len())),
            }
            completed_keys.insert(key);
        }
        // Before a repair with the processors stopped, an attempt caught between its capture and
        // its decision waits queued: the restarted processor completes it (judged after).
        let decided_keys: BTreeSet<String> = d.first.keys().map(|(rid, a)| format!("{rid}/{a}")).collect();
        let waiting: BTreeSet<String> = state
            .queued
            .iter()
            .map(|(rid, a)| format!("{rid}/{a}"))
            .filter(|k| stage == Stage::BeforeRepair && !decided_keys.contains(k))
            .collect();
        for c in &state.captures {
            if !completed_keys.contains(&c.key) && !waiting.contains(&c.key) {
                evidence.push(format!("{}: captured {} but not completed", c.key, c.amount));
            }
        }
        results.push(
            CheckResult::held(
                "money matches stock",
                Kind::Invariant,
                "captures = completed orders, same amounts",
                format!(
                    "{} captures, {} completed; {}",
                    state.captures.len(),
                    completed_keys.len(),
                    summary(&evidence)
                ),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 5. Payment failures refunded (conservation) and dead-lettered exactly once — counted on
    // the raw dead letters.
    if wanted.refunds_and_dlq {
        let mut letters: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        for l in &state.dlq {
            *letters.entry((l.request_id.as_str(), l.attempt)).or_default() += 1;
        }
        let mut evidence = Vec::new();
        let failed: Vec<_> = d.first.values().filter(|o| o.outcome == Decision::FailedPayment).collect();
        for o in &failed {
            match letters.get(&(o.request_id.as_str(), o.attempt)) {
                None => evidence.push(format!("{}/{}: FAILED_PAYMENT, not in the DLQ", o.request_id, o.attempt)),
                Some(n) if *n > 1 => evidence.push(format!("{}/{}: in the DLQ {n} times", o.request_id, o.attempt)),
                _ => {}
            }
        }
        for (rid, attempt) in letters.keys() {
            if d.first.get(&(*rid, *attempt)).map(|o| o.outcome) != Some(Decision::FailedPayment) {
                evidence.push(format!("{rid}/{attempt}: in the DLQ without a payment failure"));
            }
        }
        results.push(
            CheckResult::held(
                "payment failures refunded and dead-lettered once",
                Kind::Invariant,
                "each FAILED_PAYMENT attempt in the DLQ exactly once",
                format!("{} failed payments, {} dead letters; {}", failed.len(), state.dlq.len(), summary(&evidence)),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }

    // 6. One effect per request_id; statuses never move backwards; 409 only when true.
    if wanted.one_effect_per_request {
        let mut evidence = Vec::new();
        let mut captures_per_request: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &state.captures {
            let rid = c.key.rsplit_once('/').map(|(r, _)| r).unwrap_or(&c.key);
            *captures_per_request.entry(rid).or_default() += 1;
        }
        for (rid, n) in &captures_per_request {
            if *n > 1 {
                evidence.push(format!("{rid}: charged {n} times"));
            }
        }
        // The final status is the latest attempt's decision.
        for (rid, outcomes) in &by_request {
            let Some(latest) = outcomes.iter().max_by_key(|o| o.attempt) else { continue };
            if let Some(s) = state.orders.get(*rid) {
                if s.status.as_deref() != Some(latest.outcome.as_str()) {
                    evidence.push(format!(
                        "{rid}: status {} in Redis, decided {} (attempt {})",
                        s.status.as_deref().unwrap_or("missing"),
                        latest.outcome.as_str(),
                        latest.attempt
                    ));
                }
            }
        }
        // What buyers saw when polling never went back (decided → PENDING, or COMPLETED to
        // anything else).
        let mut seen: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
        for a in history.iter().filter(|a| a.op == Op::Status) {
            if let Some(s) = &a.order_status {
                seen.entry(&a.request_id).or_default().push((a.done_us, s));
            }
        }
        for (rid, mut polls) in seen {
            polls.sort();
            let mut decided_once: Option<&str> = None;
            for (_, s) in polls {
                match (decided_once, s) {
                    (Some(d), "PENDING") => {
                        evidence.push(format!("{rid}: seen {d}, then PENDING"));
                        break;
                    }
                    (Some(d), now) if now != d && d == "COMPLETED" => {
                        evidence.push(format!("{rid}: seen COMPLETED, then {now}"));
                        break;
                    }
                    (_, "PENDING") => {}
                    (_, now) => decided_once = Some(now),
                }
            }
        }
        // A 409 says "you already have this order": only true when an earlier attempt of the
        // id was accepted or may have been (`judge` decided which).
        let false_duplicates: Vec<String> = run
            .attempts
            .iter()
            .map(|&(i, good)| (&history[i], good))
            .filter(|(a, good)| a.op == Op::Buy && a.status == Some(409) && !good)
            .map(|(a, _)| format!("{} attempt {}: 409, yet no earlier attempt was taken", a.request_id, a.attempt))
            .collect();
        results.push(
            CheckResult::held(
                "409 only for true duplicates",
                Kind::Invariant,
                "0 false duplicates",
                summary(&false_duplicates),
                false_duplicates.is_empty(),
            )
            .with(false_duplicates),
        );
        results.push(
            CheckResult::held(
                "one effect per request_id, no status backwards",
                Kind::Invariant,
                "≤ 1 charge and completion per request_id; statuses only move forward",
                summary(&evidence),
                evidence.is_empty(),
            )
            .with(evidence),
        );
    }
    // An invariant over no accepted order saw nothing: not a pass (a violation still fails).
    let acked_n = acked.len() as u64;
    for c in &mut results {
        c.needed = "≥ 1 acknowledged order".into();
        c.seen = format!("{acked_n} acknowledged");
        if acked_n == 0 && c.outcome == Verdict::Pass {
            c.outcome = Verdict::Inconclusive;
        }
    }
    results
}
