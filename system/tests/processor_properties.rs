//! Property: whatever the interleaving of orders, restocks, payment failures, DLQ replays and
//! processor restarts, once the system drains, stock is conserved (initial + restocked =
//! left + completed) and money matches stock (one capture of the right amount per completed
//! attempt, and none other). On the real Redis, broker, provider and processor.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use flashsale::order::Decision;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Order { amount: u32 },
    Restock { quantity: u64 },
    PaymentFailing(bool),
    RestartProcessor,
    ReplayDlq,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..=3).prop_map(|amount| Op::Order { amount }),
        1 => (1u64..=4).prop_map(|quantity| Op::Restock { quantity }),
        2 => any::<bool>().prop_map(Op::PaymentFailing),
        1 => Just(Op::RestartProcessor),
        1 => Just(Op::ReplayDlq),
    ]
}

/// One case may take this long (a wedged case fails instead of hanging).
const CASE_LIMIT: Duration = Duration::from_secs(150);
/// Shrinking stops after this long: the whole test is bounded by about
/// `CASES × CASE_LIMIT + MAX_SHRINK` (~18 min) in the worst case, ~2 min when it passes.
const MAX_SHRINK: Duration = Duration::from_secs(240);
const CASES: u32 = 6;

/// Each case runs on a testbed of its own: a case that breaks the system (or meets a broker
/// bug) cannot make the next cases, or the shrinking, fail for a reason of its own.
/// `PROP_CASES` (6) sets the number of cases, `PROP_WATCHDOG=off` runs the processor without
/// its group watchdog, `PROP_DIR` keeps each case's testbed (logs, data) in `PROP_DIR/case-N`.
#[test]
fn stock_is_conserved_and_money_matches_stock_under_any_interleaving() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cases = std::env::var("PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let watchdog = std::env::var("PROP_WATCHDOG").unwrap_or_else(|_| "on".into());
    let keep = std::env::var_os("PROP_DIR").map(std::path::PathBuf::from);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_time: MAX_SHRINK.as_millis() as u32,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0);
    let strategy = (1u64..=6, prop::collection::vec(op(), 3..14));
    let result = runner.run(&strategy, |(initial, ops)| {
        case.set(case.get() + 1);
        let n = case.get();
        runtime.block_on(async {
            let env = [("PAYMENT_TIMEOUT", "500ms"), ("PROCESSOR_WATCHDOG", watchdog.as_str())];
            let dir = keep.as_ref().map(|d| d.join(format!("case-{n}")));
            let mut bed = full_testbed_in(1, &env, dir).await;
            let outcome = tokio::time::timeout(CASE_LIMIT, run_case(&mut bed, n, initial, &ops)).await;
            let outcome = match outcome {
                Err(_) => Err(format!("case {n} took more than {CASE_LIMIT:?}")),
                Ok(Err(why)) => Err(format!("case {n}: {why}")),
                Ok(Ok(())) => match admin(&bed, &["reconcile"]).await {
                    (0, _) => Ok(()),
                    (code, report) => Err(format!("case {n}: reconcile exited {code}: {report}")),
                },
            };
            if let Err(e) = bed.stop().await {
                eprintln!("case {n}: stopping the testbed: {e}");
            }
            outcome.map_err(|why| {
                eprintln!("FAILED {why}\n  initial stock {initial}, ops {ops:?}");
                TestCaseError::fail(format!("{why}; initial stock {initial}, ops {ops:?}"))
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Runs `ops` against `bed` and checks the books; `Err` says what broke.
async fn run_case(bed: &mut chaos::Testbed, case: u32, initial: u64, ops: &[Op]) -> Result<(), String> {
    let item = format!("prop-{case}");
    let ensure = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    ensure(admin(bed, &["stock", "set", &item, &initial.to_string()]).await.0 == 0, "stock set failed".into())?;
    let http = client();
    let mut restocked = 0;
    let mut accepted = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Order { amount } => {
                let id = format!("{item}-o{i}");
                let (status, _, body) = buy(&http, &bed.gateway_url(0), &order("prop-user", &item, *amount, &id)).await;
                ensure(status == 202, format!("order {id} answered {status}: {body}"))?;
                accepted.push(id);
            }
            Op::Restock { quantity } => {
                ensure(
                    admin(bed, &["stock", "add", &item, &quantity.to_string()]).await.0 == 0,
                    "stock add failed".into(),
                )?;
                restocked += quantity;
            }
            Op::PaymentFailing(on) => {
                payment_control(bed, json!({"failure_rate": if *on { 1.0 } else { 0.0 }})).await;
            }
            Op::RestartProcessor => bed.processor(0).restart().await.map_err(|e| format!("restart: {e}"))?,
            Op::ReplayDlq => ensure(admin(bed, &["dlq", "replay"]).await.0 == 0, "dlq replay failed".into())?,
        }
    }
    payment_control(bed, json!({"failure_rate": 0.0})).await;
    try_wait_decided(bed, &accepted, 1, Duration::from_secs(60)).await?;
    // Replays in flight (attempt > 1) are decided too before the books are checked.
    let replayed = |d: &std::collections::BTreeMap<(String, u32), flashsale::order::Outcome>| {
        d.keys().filter(|(id, attempt)| *attempt > 1 && id.starts_with(&format!("{item}-"))).count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let decided = loop {
        let (_, listing) = admin(bed, &["dlq", "list"]).await;
        let replays_sent =
            listing.lines().filter(|l| l.starts_with("replayed ") && l.contains(&format!("{item}-"))).count();
        let decided = decisions(bed);
        if replayed(&decided) >= replays_sent {
            break decided;
        }
        ensure(tokio::time::Instant::now() < deadline, format!("replays of {item} not decided within 30 s"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ours: Vec<_> = decided.values().filter(|o| o.item_id == item).collect();
    let completed: Vec<_> = ours.iter().filter(|o| o.outcome == Decision::Completed).collect();
    let units: u64 = completed.iter().map(|o| u64::from(o.amount)).sum();
    let left = stock(bed, &item).await;
    ensure(left >= 0, format!("stock of {item} negative: {left}"))?;
    ensure(
        initial + restocked == left as u64 + units,
        format!("stock conservation for {item}: {initial} + {restocked} ≠ {left} left + {units} completed"),
    )?;
    // Each order has at most one completed attempt.
    let ids: HashSet<&str> = completed.iter().map(|o| o.request_id.as_str()).collect();
    ensure(ids.len() == completed.len(), "an order completed twice".into())?;
    // Money: the captures of this item's orders are exactly the completed attempts.
    let captures = ledger(bed).await;
    let mut ours_captured: Vec<(String, u64)> = captures
        .iter()
        .filter(|c| c["request_id"].as_str().unwrap_or_default().starts_with(&format!("{item}-")))
        .map(|c| (c["request_id"].as_str().unwrap_or_default().to_string(), c["amount"].as_u64().unwrap_or(0)))
        .collect();
    let mut expected: Vec<(String, u64)> =
        completed.iter().map(|o| (format!("{}/{}", o.request_id, o.attempt), u64::from(o.amount))).collect();
    ours_captured.sort();
    expected.sort();
    ensure(
        ours_captured == expected,
        format!("money ↔ stock for {item}: captured {ours_captured:?}, completed {expected:?}"),
    )
}
