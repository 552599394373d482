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
use proptest::test_runner::{Config, TestRunner};
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

#[test]
fn stock_is_conserved_and_money_matches_stock_under_any_interleaving() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bed = std::cell::RefCell::new(runtime.block_on(full_testbed(1, &[("PAYMENT_TIMEOUT", "500ms")])));
    let mut runner = TestRunner::new(Config { cases: 6, failure_persistence: None, ..Config::default() });
    let case = std::cell::Cell::new(0);
    let strategy = (1u64..=6, prop::collection::vec(op(), 3..14));
    let result = runner.run(&strategy, |(initial, ops)| {
        case.set(case.get() + 1);
        let item = format!("prop-{}", case.get());
        let mut bed = bed.borrow_mut();
        runtime.block_on(async {
            assert_eq!(admin(&bed, &["stock", "set", &item, &initial.to_string()]).await.0, 0);
            let http = client();
            let mut restocked = 0;
            let mut accepted = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Order { amount } => {
                        let id = format!("{item}-o{i}");
                        let (status, _, _) =
                            buy(&http, &bed.gateway_url(0), &order("prop-user", &item, *amount, &id)).await;
                        assert_eq!(status, 202);
                        accepted.push(id);
                    }
                    Op::Restock { quantity } => {
                        assert_eq!(admin(&bed, &["stock", "add", &item, &quantity.to_string()]).await.0, 0);
                        restocked += quantity;
                    }
                    Op::PaymentFailing(on) => {
                        payment_control(&bed, json!({"failure_rate": if *on { 1.0 } else { 0.0 }})).await;
                    }
                    Op::RestartProcessor => bed.processor(0).restart().await.expect("processor restarts"),
                    Op::ReplayDlq => assert_eq!(admin(&bed, &["dlq", "replay"]).await.0, 0),
                }
            }
            payment_control(&bed, json!({"failure_rate": 0.0})).await;
            wait_decided(&bed, &accepted, 1, Duration::from_secs(60)).await;
            // Replays in flight (attempt > 1) are decided too before the books are checked.
            let replayed = |d: &std::collections::BTreeMap<(String, u32), flashsale::order::Outcome>| {
                d.keys().filter(|(id, attempt)| *attempt > 1 && id.starts_with(&format!("{item}-"))).count()
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let decided = loop {
                let (_, listing) = admin(&bed, &["dlq", "list"]).await;
                let replays_sent =
                    listing.lines().filter(|l| l.starts_with("replayed ") && l.contains(&format!("{item}-"))).count();
                let decided = decisions(&bed);
                assert!(tokio::time::Instant::now() < deadline, "replays of {item} not decided");
                if replayed(&decided) >= replays_sent {
                    break decided;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let ours: Vec<_> = decided.values().filter(|o| o.item_id == item).collect();
            let completed: Vec<_> = ours.iter().filter(|o| o.outcome == Decision::Completed).collect();
            let units: u64 = completed.iter().map(|o| u64::from(o.amount)).sum();
            let left = stock(&bed, &item).await;
            assert!(left >= 0, "stock never negative");
            assert_eq!(initial + restocked, left as u64 + units, "stock conservation for {item}: ops {ops:?}");
            // Each order has at most one completed attempt.
            let ids: HashSet<&str> = completed.iter().map(|o| o.request_id.as_str()).collect();
            assert_eq!(ids.len(), completed.len(), "an order completed twice");
            // Money: the captures of this item's orders are exactly the completed attempts.
            let captures = ledger(&bed).await;
            let mut ours_captured: Vec<(String, u64)> = captures
                .iter()
                .filter(|c| c["request_id"].as_str().unwrap().starts_with(&format!("{item}-")))
                .map(|c| (c["request_id"].as_str().unwrap().to_string(), c["amount"].as_u64().unwrap()))
                .collect();
            let mut expected: Vec<(String, u64)> =
                completed.iter().map(|o| (format!("{}/{}", o.request_id, o.attempt), u64::from(o.amount))).collect();
            ours_captured.sort();
            expected.sort();
            assert_eq!(ours_captured, expected, "money ↔ stock for {item}: ops {ops:?}");
        });
        Ok(())
    });
    let bed = bed.into_inner();
    let (code, report) = runtime.block_on(admin(&bed, &["reconcile"]));
    runtime.block_on(bed.stop()).unwrap();
    result.unwrap();
    assert_eq!(code, 0, "{report}");
}
