//! Processors dying, leaving and joining while orders flow: every order ends with exactly one
//! decision, stock is conserved and money matches stock.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use flashsale::order::{Decision, Outcome};

/// Sends `n` orders of one unit for `item`, `rate` per second, in a background task; returns
/// the ids the gateway accepted.
fn send_orders(
    bed: &chaos::Testbed,
    prefix: &str,
    item: &str,
    n: usize,
    rate: u64,
) -> tokio::task::JoinHandle<Vec<String>> {
    let http = client();
    let base = bed.gateway_url(0);
    let prefix = prefix.to_string();
    let item = item.to_string();
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        for i in 0..n {
            tick.tick().await;
            let id = format!("{prefix}-{i}");
            if buy(&http, &base, &order(&format!("u{i}"), &item, 1, &id)).await.0 == 202 {
                accepted.push(id);
            }
        }
        accepted
    })
}

/// Conservation and money for `item`: initial = left + completed; captures = completed.
async fn assert_books_balance(
    bed: &chaos::Testbed,
    item: &str,
    initial: i64,
    decided: &BTreeMap<(String, u32), Outcome>,
) {
    let completed: Vec<&Outcome> =
        decided.values().filter(|o| o.item_id == item && o.outcome == Decision::Completed).collect();
    let units: i64 = completed.iter().map(|o| i64::from(o.amount)).sum();
    assert_eq!(stock(bed, item).await, initial - units, "stock conserved");
    let captures = ledger(bed).await;
    let keys: std::collections::HashSet<String> =
        captures.iter().map(|c| c["request_id"].as_str().unwrap().to_string()).collect();
    for o in &completed {
        assert!(
            keys.contains(&format!("{}/{}", o.request_id, o.attempt)),
            "completed without capture: {}",
            o.request_id
        );
    }
    assert_eq!(keys.len(), completed.len(), "one capture per completed order");
    let (code, report) = admin(bed, &["reconcile"]).await;
    assert_eq!(code, 0, "{report}");
}

fn processed(page: &str) -> f64 {
    metric(page, "processor_orders_processed_total").unwrap_or(0.0)
}

#[tokio::test]
async fn kill_9_of_a_processor_mid_stream_loses_and_doubles_nothing() {
    let mut bed = full_testbed(2, &[("PAYMENT_LATENCY", "20ms")]).await;
    admin(&bed, &["stock", "set", "101", "1000"]).await;
    let sender = send_orders(&bed, "k", "101", 400, 100);
    let victim = format!("http://{}/metrics", bed.processor_addr(0));
    eventually(Duration::from_secs(30), "the victim is busy", || {
        let url = victim.clone();
        async move { processed(&get_text(&client(), &url).await) >= 30.0 }
    })
    .await;
    bed.processor(0).kill().await.expect("kill -9");
    let accepted = sender.await.unwrap();
    assert_eq!(accepted.len(), 400);
    // The survivor takes the victim's partitions after the session timeout (10 s) and
    // re-processes from the last commit: redeliveries end as duplicates, not second effects.
    let decided = wait_decided(&bed, &accepted, 1, Duration::from_secs(90)).await;
    for id in &accepted {
        let attempts: Vec<_> = decided.range((id.clone(), 0)..=(id.clone(), u32::MAX)).collect();
        assert_eq!(attempts.len(), 1, "{id}: {attempts:?}");
    }
    assert_books_balance(&bed, "101", 1000, &decided).await;
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn processors_share_the_load_and_survive_one_leaving_and_one_joining() {
    let mut bed = full_testbed(2, &[]).await;
    admin(&bed, &["stock", "set", "101", "10000"]).await;
    let first = send_orders(&bed, "a", "101", 200, 200).await.unwrap();
    wait_decided(&bed, &first, 1, Duration::from_secs(60)).await;
    let pages: Vec<String> = (0..2).map(|i| format!("http://{}/metrics", bed.processor_addr(i))).collect();
    for page in &pages {
        assert!(processed(&get_text(&client(), page).await) > 0.0, "both processors took orders");
    }
    // One leaves gracefully (SIGTERM: finishes, commits, leaves the group).
    let status = bed.processor(1).stop().await.unwrap().expect("was running");
    assert!(status.success(), "{status:?}");
    let second = send_orders(&bed, "b", "101", 100, 200).await.unwrap();
    wait_decided(&bed, &second, 1, Duration::from_secs(60)).await;
    // A new one joins and gets a share.
    let joined = bed.start_processor().await.unwrap();
    let joined_page = format!("http://{}/metrics", bed.processor_addr(joined));
    let third = send_orders(&bed, "c", "101", 300, 100).await.unwrap();
    let decided = wait_decided(&bed, &third, 1, Duration::from_secs(60)).await;
    assert!(processed(&get_text(&client(), &joined_page).await) > 0.0, "the new processor took orders");
    assert_books_balance(&bed, "101", 10000, &decided).await;
    bed.stop().await.unwrap();
}
