//! The gateway when its dependencies fail, on a real Redis and broker: the circuit breaker,
//! Redis loss, and SIGTERM under load.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

/// `kill -TERM pid`.
fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn breaker_opens_when_the_broker_dies_answers_fast_and_closes_after_restart() {
    // A 5 s open period: long enough to watch the open state, short enough to wait out.
    let mut bed = testbed(&[
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "5"),
        ("CIRCUIT_BREAKER_BASE_TIMEOUT", "5s"),
        ("CIRCUIT_BREAKER_MAX_TIMEOUT", "10s"),
    ])
    .await;
    let base = bed.gateway_url(0);
    let http = client();
    assert_eq!(buy(&http, &base, &order("u0", "101", 1, "before")).await.0, 202);

    bed.broker().kill().await.expect("broker killed");

    // Failures while the broker is gone: each is a 503 (certainly not queued: the connection was
    // already down) — or, for an order handed over before librdkafka saw the connection drop, a
    // 504 UNKNOWN — and either way its request_id may be sent again.
    let mut failed_ids = Vec::new();
    for i in 0..5 {
        let id = format!("lost-{i}");
        let (status, headers, answer) = buy(&http, &base, &order("u1", "101", 1, &id)).await;
        assert!(status == 503 || (i == 0 && status == 504), "{status} {answer}");
        assert!(headers.contains_key("retry-after"));
        failed_ids.push(id);
    }
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 503);
    assert_eq!(health["circuit_breaker_state"], "open", "{health}");
    let page = get_text(&http, &format!("{base}/metrics")).await;
    assert_eq!(metric(&page, "gateway_circuit_breaker_state"), Some(1.0));

    // While open, 503s come at once, without waiting on Kafka: p99 under 50 ms.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let started = Instant::now();
        let (status, _, _) = buy(&http, &base, &order(&format!("f{i}"), "101", 1, &format!("fast-{i}"))).await;
        latencies.push(started.elapsed());
        assert_eq!(status, 503);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    assert!(p99 < Duration::from_millis(50), "p99 of 503s while open: {p99:?}");

    bed.broker().start_again().await.expect("broker restarts with its data");

    // Half-open after the 5 s base timeout (doubled if a trial failed while the broker came
    // back), then closed after two successful trials; the 503'd request_ids are usable again.
    let mut retried = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while retried.len() < failed_ids.len() {
        assert!(Instant::now() < deadline, "503'd request_ids not accepted after the broker returned: {retried:?}");
        for id in &failed_ids {
            if !retried.contains(id) && buy(&http, &base, &order("u1", "101", 1, id)).await.0 == 202 {
                retried.insert(id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!((status, health["circuit_breaker_state"].as_str()), (200, Some("closed")), "{health}");

    // The order from before the outage survived the broker's kill -9; each retried id is there once.
    let topic = read_topic(&bed.kafka_addr().to_string(), "orders");
    assert_eq!(topic["before"].len(), 1);
    for id in &failed_ids {
        assert_eq!(topic[id].len(), 1, "{id}");
    }
    assert!(!topic.contains_key("fast-0"), "nothing is queued while the breaker is open");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn a_produce_that_times_out_on_the_wire_is_unknown_not_failed() {
    // A frozen broker keeps its connections: the order is on the wire and may be written when
    // it thaws. The buyer must not be told "failed".
    let mut bed = testbed(&[("KAFKA_PRODUCE_TIMEOUT", "1s"), ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "100")]).await;
    let base = bed.gateway_url(0);
    let http = client();
    assert_eq!(buy(&http, &base, &order("u0", "101", 1, "warm")).await.0, 202);
    bed.broker().pause().expect("broker frozen");
    let (status, headers, answer) = buy(&http, &base, &order("u1", "101", 1, "maybe-1")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["status"], "UNKNOWN", "{answer}");
    assert!(headers.contains_key("retry-after"));
    let (code, state) = get_json(&http, &format!("{base}/orders/maybe-1")).await;
    assert_eq!((code, state["status"].as_str()), (200, Some("UNKNOWN")), "{state}");
    bed.broker().resume().expect("broker thawed");
    // The same request_id may be sent again; it is queued at least once, and the processor
    // gives it one effect (not tested here: no processor).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, answer) = buy(&http, &base, &order("u1", "101", 1, "maybe-1")).await;
        if status == 202 || (status == 409 && answer["status"] != "UNKNOWN") {
            break;
        }
        assert!(Instant::now() < deadline, "the retry of an unknown order was never taken: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let copies = read_topic(&bed.kafka_addr().to_string(), "orders").get("maybe-1").map_or(0, Vec::len);
    assert!((1..=2).contains(&copies), "{copies} copies of maybe-1");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn redis_down_means_fast_503_and_unhealthy() {
    let mut bed = testbed(&[("REDIS_TIMEOUT", "300ms")]).await;
    let base = bed.gateway_url(0);
    let http = client();
    bed.redis().kill().await.expect("redis killed");
    for i in 0..5 {
        let started = Instant::now();
        let (status, _, answer) = buy(&http, &base, &order("u1", "101", 1, &format!("r-{i}"))).await;
        // The first claim may go out on the connection Redis's death broke — it may have run,
        // as far as the gateway can tell: 504 UNKNOWN. Every later one is refused: 503.
        assert!(status == 503 || (i == 0 && status == 504), "{status} {answer}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 503);
    assert_eq!(health["redis"], false);
    assert_eq!(get_json(&http, &format!("{base}/readyz")).await.0, 503);
    // Redis failures are not the broker's: the breaker stays closed.
    assert_eq!(health["circuit_breaker_state"], "closed");

    bed.redis().start_again().await.expect("redis back");
    eventually(Duration::from_secs(15), "orders accepted again after Redis returns", || {
        let http = http.clone();
        let base = base.clone();
        async move { buy(&http, &base, &order("u1", "101", 1, "after-redis")).await.0 == 202 }
    })
    .await;
    bed.stop().await.unwrap();
}

/// A claim Redis runs only after the gateway stopped waiting (writes paused, as a starved Redis
/// would serve them late): the order was not queued, but its request_id is taken. The answer is
/// 504 UNKNOWN — not a 503, which promises the id is free — and once the claim is marked
/// `UNKNOWN` in the background, a retry with the same request_id is taken (no false 409).
#[tokio::test]
async fn a_claim_redis_runs_late_is_answered_unknown_and_its_retry_is_taken() {
    let bed = testbed(&[("REDIS_TIMEOUT", "300ms")]).await;
    let base = bed.gateway_url(0);
    let http = client();
    assert_eq!(buy(&http, &base, &order("u1", "101", 1, "warm")).await.0, 202);
    let redis = bed.redis_direct_addr();
    let paused = chaos::probe::redis_answer(redis, &["CLIENT", "PAUSE", "1500", "WRITE"], Duration::from_secs(1)).await;
    assert_eq!(paused.as_deref(), Ok("+OK\r\n"));
    let (status, _, answer) = buy(&http, &base, &order("u1", "101", 1, "late")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["status"], "UNKNOWN", "{answer}");
    eventually(Duration::from_secs(10), "the late claim marked UNKNOWN", || {
        let http = http.clone();
        let url = format!("{base}/orders/late");
        async move { get_json(&http, &url).await.1["status"] == "UNKNOWN" }
    })
    .await;
    let (status, _, answer) = buy(&http, &base, &order("u1", "101", 1, "late")).await;
    assert_eq!(status, 202, "the retry is taken: {answer}");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_under_load_loses_no_accepted_order() {
    let mut bed = testbed(&[]).await;
    let base = bed.gateway_url(0);
    let pid = bed.gateway(0).pid().expect("gateway runs");
    let http = client();

    // 16 clients send orders as fast as they can until the gateway stops answering.
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let http = http.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..100_000 {
                    let id = format!("c{c}-{i}");
                    let response =
                        http.post(format!("{base}/buy")).json(&order(&format!("u{c}"), "101", 1, &id)).send().await;
                    match response.map(|r| r.status().as_u16()) {
                        Ok(202) => accepted.push(id),
                        Ok(_) => {}
                        Err(_) => break, // the gateway closed
                    }
                }
                accepted
            })
        })
        .collect();
    // Let load build up: wait until the gateway has accepted a good number of orders.
    eventually(Duration::from_secs(20), "orders flowing", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let page = get_text(&http, &format!("{base}/metrics")).await;
            metric(&page, "gateway_orders_successful_total").unwrap_or(0.0) >= 300.0
        }
    })
    .await;
    sigterm(pid);
    let mut accepted = Vec::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    let status = bed.gateway(0).stop().await.expect("gateway exits");
    assert!(status.is_none_or(|s| s.success()), "gateway exit status {status:?}");
    assert!(accepted.len() >= 300, "only {} accepted", accepted.len());

    let topic = read_topic(&bed.kafka_addr().to_string(), "orders");
    let missing: Vec<&String> = accepted.iter().filter(|id| !topic.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted orders missing, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    bed.stop().await.unwrap();
}
