//! Payments deferred through a provider outage (`PAYMENT_OUTAGE_MODE=defer`) on the real Redis,
//! broker and provider: the order keeps its units and says `PAYMENT_PENDING`, the payment is
//! taken once when the provider is back, and past `PAYMENT_DEFER_LIMIT` the order is refunded.

mod common;

use std::time::Duration;

use common::*;
use flashsale::order::Decision;
use serde_json::json;

async fn buy_each(bed: &chaos::Testbed, ids: &[String]) {
    let http = client();
    for (i, id) in ids.iter().enumerate() {
        let (status, _, answer) = buy(&http, &bed.gateway_url(0), &order(&format!("u{i}"), "101", 1, id)).await;
        assert_eq!(status, 202, "{answer}");
    }
}

async fn processor_metric(bed: &chaos::Testbed, name: &str) -> Option<f64> {
    metric(&get_text(&client(), &format!("http://{}/metrics", bed.processor_addr(0))).await, name)
}

async fn statuses(bed: &chaos::Testbed, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let (_, body) = get_json(&client(), &format!("{}/orders/{id}", bed.gateway_url(0))).await;
        out.push(body["status"].as_str().unwrap_or_default().to_string());
    }
    out
}

#[tokio::test]
async fn an_outage_keeps_the_orders_and_each_payment_is_taken_once_when_the_provider_is_back() {
    let bed = full_testbed(1, &[("PAYMENT_OUTAGE_MODE", "defer"), ("PAYMENT_TIMEOUT", "500ms")]).await;
    assert_eq!(admin(&bed, &["stock", "set", "101", "10"]).await.0, 0);
    payment_control(&bed, json!({"outage": true})).await;
    let ids: Vec<String> = (0..5).map(|i| format!("defer-{i}")).collect();
    buy_each(&bed, &ids).await;
    eventually(Duration::from_secs(30), "every order PAYMENT_PENDING and counted as deferred", || async {
        statuses(&bed, &ids).await.iter().all(|s| s == "PAYMENT_PENDING")
            && processor_metric(&bed, "processor_payments_deferred").await == Some(5.0)
    })
    .await;
    assert_eq!(stock(&bed, "101").await, 5, "the units stay reserved");
    assert!(decisions(&bed).is_empty(), "nothing decided during the outage");
    // The provider is back: no replay, no operator.
    payment_control(&bed, json!({"outage": false})).await;
    let decided = wait_decided(&bed, &ids, 1, Duration::from_secs(60)).await;
    assert!(decided.values().all(|o| o.outcome == Decision::Completed), "{decided:?}");
    let captures = ledger(&bed).await;
    let mut keys: Vec<&str> = captures.iter().filter_map(|c| c["request_id"].as_str()).collect();
    keys.sort();
    assert_eq!(keys, ids.iter().map(|id| format!("{id}/1")).collect::<Vec<_>>(), "one capture per order");
    assert_eq!(stock(&bed, "101").await, 5);
    assert!(statuses(&bed, &ids).await.iter().all(|s| s == "COMPLETED"));
    for id in &ids {
        assert!(outcome_records(&bed, id).iter().all(|o| o.outcome == Decision::Completed), "{id}: never failed");
    }
    eventually(Duration::from_secs(10), "nothing deferred any more", || async {
        processor_metric(&bed, "processor_payments_deferred").await == Some(0.0)
    })
    .await;
    let page = get_text(&client(), &format!("http://{}/metrics", bed.processor_addr(0))).await;
    assert!(page.contains("processor_deferred_payments_settled_total{result=\"captured\"} 5"), "{page}");
    assert!(metric(&page, "processor_orders_moved_to_dlq_total") == Some(0.0), "{page}");
    let (code, report) = admin(&bed, &["reconcile"]).await;
    assert_eq!(code, 0, "{report}");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn a_charge_that_went_through_unanswered_is_found_and_not_taken_twice() {
    let bed = full_testbed(1, &[("PAYMENT_OUTAGE_MODE", "defer"), ("PAYMENT_TIMEOUT", "500ms")]).await;
    admin(&bed, &["stock", "set", "101", "5"]).await;
    // The provider takes the money and answers too late.
    payment_control(&bed, json!({"latency_ms": 1500, "capture_then_timeout": true})).await;
    let ids = vec!["late-1".to_string()];
    buy_each(&bed, &ids).await;
    eventually(Duration::from_secs(30), "deferred", || async { statuses(&bed, &ids).await == ["PAYMENT_PENDING"] })
        .await;
    payment_control(&bed, json!({"latency_ms": 0, "capture_then_timeout": false})).await;
    let decided = wait_decided(&bed, &ids, 1, Duration::from_secs(60)).await;
    assert_eq!(decided[&("late-1".to_string(), 1)].outcome, Decision::Completed);
    assert_eq!(ledger(&bed).await.len(), 1, "the capture made during the timeout, not a second");
    assert_eq!(stock(&bed, "101").await, 4);
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn past_the_defer_limit_the_order_is_refunded_and_dead_lettered() {
    let env = [
        ("PAYMENT_OUTAGE_MODE", "defer"),
        ("PAYMENT_TIMEOUT", "300ms"),
        ("PAYMENT_DEFER_LIMIT", "3s"),
        ("PAYMENT_RESOLVE_TIMEOUT", "1s"),
    ];
    let bed = full_testbed(1, &env).await;
    admin(&bed, &["stock", "set", "101", "5"]).await;
    payment_control(&bed, json!({"outage": true})).await;
    let ids: Vec<String> = (0..2).map(|i| format!("expired-{i}")).collect();
    buy_each(&bed, &ids).await;
    let decided = wait_decided(&bed, &ids, 1, Duration::from_secs(60)).await;
    assert!(decided.values().all(|o| o.outcome == Decision::FailedPayment), "{decided:?}");
    for o in decided.values() {
        let waited = o.decided_at_ms - o.accepted_at_ms;
        assert!(waited >= 3000, "{}: refunded after {waited} ms, before the limit", o.request_id);
    }
    assert_eq!(stock(&bed, "101").await, 5, "units given back");
    assert!(ledger(&bed).await.is_empty());
    let (_, listing) = admin(&bed, &["dlq", "list"]).await;
    assert!(listing.starts_with("pending 2"), "{listing}");
    let page = get_text(&client(), &format!("http://{}/metrics", bed.processor_addr(0))).await;
    assert!(page.contains("processor_deferred_payments_settled_total{result=\"refunded\"} 2"), "{page}");
    bed.stop().await.unwrap();
}
