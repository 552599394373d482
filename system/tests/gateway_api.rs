//! The gateway's API on a real Redis and broker: validation, idempotency, rate limits, the
//! degradation switch, health and metrics.

mod common;

use std::time::Duration;

use chaos::TestbedConfig;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn validation_matrix_answers_400_413_415_with_json_errors() {
    let bed = testbed(&[]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let url = format!("{base}/buy");

    // Field errors: 400 with every bad field listed.
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["user_id", "item_id", "amount", "request_id"]),
        (order("bad id", "101", 1, "r"), vec!["user_id"]),
        (order("u1", "", 1, "r"), vec!["item_id"]),
        (order("u1", "101", 0, "r"), vec!["amount"]),
        (order("u1", "101", 1001, "r"), vec!["amount"]),
        (order("u1", "101", 1, ""), vec!["request_id"]),
        // Blank once trimmed: as invalid as empty.
        (order("u1", "101", 1, "   "), vec!["request_id"]),
        (order("   ", "   ", 1, "r"), vec!["user_id", "item_id"]),
        (order("u1", "101", 1, &"r".repeat(201)), vec!["request_id"]),
        (json!({"user_id": 1, "item_id": "101", "amount": "1", "request_id": "r"}), vec!["user_id", "amount"]),
        (json!([1, 2]), vec!["body"]),
    ];
    for (body, fields) in cases {
        let (status, _, answer) = buy(&http, &base, &body).await;
        assert_eq!(status, 400, "{body}");
        let got: Vec<&str> =
            answer["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(got, fields, "{body}");
        assert!(answer["error"].is_string() && answer["correlation_id"].is_string(), "{answer}");
        for e in answer["errors"].as_array().unwrap() {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    // Transport-level problems.
    let send = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut request = http.post(&url).body(body);
        if let Some(ct) = ct {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let good = serde_json::to_vec(&order("u1", "101", 1, "r-ok")).unwrap();
    for (ct, body, expected) in [
        (Some("application/json"), b"{not json".to_vec(), 400),
        (Some("application/json"), Vec::new(), 400),
        (Some("text/plain"), good.clone(), 415),
        (None, good.clone(), 415),
        (Some("application/json"), vec![b' '; 16 * 1024 + 1], 413),
    ] {
        let response = send(ct, body).await.expect("answer");
        assert_eq!(response.status().as_u16(), expected, "content-type {ct:?}");
        let answer: Value = response.json().await.expect("JSON error body");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // A charset parameter is fine.
    let response = send(Some("application/json; charset=utf-8"), good).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let page = get_text(&http, &format!("{base}/metrics")).await;
    assert_eq!(metric(&page, "gateway_orders_validation_failed_total"), Some(16.0), "{page}");
    assert_eq!(metric(&page, "gateway_orders_received_total"), Some(17.0));
    assert_eq!(metric(&page, "gateway_orders_successful_total"), Some(1.0));
    // Every answer counted by its status, none of them a 5xx (the HighErrorRate alert's input).
    assert_eq!(metric(&page, "gateway_buy_responses_total{code=\"202\"}"), Some(1.0), "{page}");
    let by_code: Vec<(String, f64)> = page
        .lines()
        .filter_map(|l| l.strip_prefix("gateway_buy_responses_total{code=\""))
        .filter_map(|rest| rest.split_once("\"} ").map(|(code, v)| (code.to_owned(), v.trim().parse().unwrap())))
        .collect();
    assert_eq!(by_code.iter().map(|(_, v)| v).sum::<f64>(), 17.0, "{by_code:?}");
    assert!(by_code.iter().all(|(code, _)| !code.starts_with('5')), "{by_code:?}");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn accepted_order_is_on_the_topic_with_its_correlation_id_and_pending() {
    let bed = testbed(&[]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let (status, headers, answer) = buy(&http, &base, &order("u1", "101", 2, "order-1")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "Order Queued");
    assert_eq!(answer["request_id"], "order-1");
    let correlation_id = answer["correlation_id"].as_str().unwrap().to_string();
    assert_eq!(headers["x-correlation-id"], correlation_id.as_str());

    let (status, body) = get_json(&http, &format!("{base}/orders/order-1")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("PENDING")));
    let (status, _) = get_json(&http, &format!("{base}/orders/never-seen")).await;
    assert_eq!(status, 404);

    let topic = read_topic(&bed.kafka_addr().to_string(), "orders");
    let copies = &topic["order-1"];
    assert_eq!(copies.len(), 1);
    // The correlation id travels in the payload (no record headers on the hot topics).
    assert_eq!(copies[0].payload["correlation_id"], correlation_id.as_str());
    assert_eq!(copies[0].correlation_id, None, "no header");
    assert_eq!(copies[0].payload["item_id"], "101");
    assert_eq!(copies[0].payload["amount"], 2);
    assert_eq!(copies[0].payload["user_id"], "u1");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_id_is_taken_once_even_under_concurrency() {
    let bed = testbed(&[]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let (status, _, _) = buy(&http, &base, &order("u1", "101", 1, "dup-1")).await;
    assert_eq!(status, 202);
    let (status, _, answer) = buy(&http, &base, &order("u1", "101", 1, "dup-1")).await;
    assert_eq!(status, 409);
    assert_eq!(answer["status"], "PENDING", "{answer}");

    // 32 clients race for one fresh request_id: exactly one wins.
    let racers = (0..32).map(|i| {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move { buy(&http, &base, &order(&format!("u{i}"), "101", 1, "race-1")).await.0 })
    });
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 31, "{statuses:?}");
    let topic = read_topic(&bed.kafka_addr().to_string(), "orders");
    assert_eq!(topic["race-1"].len(), 1);
    assert_eq!(topic["dup-1"].len(), 1);
    let page = get_text(&http, &format!("{base}/metrics")).await;
    assert_eq!(metric(&page, "gateway_orders_idempotency_rejected_total"), Some(32.0));
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn per_user_rate_limit_answers_429_and_leaves_other_users_alone() {
    let bed = testbed(&[("RATE_LIMIT_MAX_REQUESTS", "5"), ("RATE_LIMIT_WINDOW", "2s")]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for i in 0..8 {
        let (status, headers, _) = buy(&http, &base, &order("greedy", "101", 1, &format!("g-{i}"))).await;
        statuses.push(status);
        if status == 429 {
            retry_after.push(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429, 429, 429]);
    assert!(retry_after.iter().all(|s| (1..=2).contains(s)), "{retry_after:?}");
    // Another user is not affected.
    let (status, _, _) = buy(&http, &base, &order("polite", "101", 1, "p-1")).await;
    assert_eq!(status, 202);
    // A rate-limited request did not take its request_id: once the window passes, it succeeds.
    eventually(std::time::Duration::from_secs(5), "the window slides", || {
        let http = http.clone();
        let base = base.clone();
        async move { buy(&http, &base, &order("greedy", "101", 1, "g-5")).await.0 == 202 }
    })
    .await;
    let page = get_text(&http, &format!("{base}/metrics")).await;
    assert!(metric(&page, "gateway_orders_rate_limited_total").unwrap() >= 3.0);
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn global_admission_limit_answers_503_queued_retry() {
    let bed = testbed(&[("GLOBAL_RATE_LIMIT", "5")]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..20 {
        let (status, headers, answer) = buy(&http, &base, &order(&format!("u{i}"), "101", 1, &format!("a-{i}"))).await;
        match status {
            202 => accepted += 1,
            503 => {
                refused += 1;
                assert!(headers.contains_key("retry-after"));
                assert!(answer["error"].as_str().unwrap().contains("retry"), "{answer}");
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    // One second's burst (5) plus what refills while the 20 requests run.
    assert!((5..=8).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + refused, 20);
    // A refused order did not take its request_id.
    let topic = read_topic(&bed.kafka_addr().to_string(), "orders");
    assert_eq!(topic.len(), accepted);
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn one_degradation_switch_sheds_status_reads_and_caps_admissions_on_every_gateway() {
    let bed = start(TestbedConfig {
        gateways: 2,
        service_env: merged(
            &[("LOG_LEVEL", "warn"), ("RATE_LIMIT_MAX_REQUESTS", "1000000"), ("DEGRADE_RETRY_AFTER", "7s")],
            &[],
        ),
        ..TestbedConfig::default()
    })
    .await;
    let bases = [bed.gateway_url(0), bed.gateway_url(1)];
    let http = client();
    let (status, _, _) = buy(&http, &bases[0], &order("u0", "101", 1, "before")).await;
    assert_eq!(status, 202);
    for base in &bases {
        assert_eq!(get_json(&http, &format!("{base}/orders/before")).await.0, 200, "reads served while off");
    }

    let (code, out) = admin(&bed, &["degrade", "on", "--admit", "5"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("at most 5 orders/s"), "{out}");
    for base in &bases {
        eventually(Duration::from_secs(5), "the gateway shows the switch", || async {
            let (_, health) = get_json(&http, &format!("{base}/health")).await;
            health["degraded"]["on"] == true && health["degraded"]["admit_per_s"] == 5
        })
        .await;
        let response = http.get(format!("{base}/orders/before")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 503, "status reads shed");
        assert_eq!(response.headers()["retry-after"], "7");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("outcome will be sent"), "{body}");
        // At most one second's worth (5) plus the refill while 20 orders go in.
        let mut accepted = 0;
        for i in 0..20 {
            let (status, headers, answer) = buy(&http, base, &order("u1", "101", 1, &format!("{base}-{i}"))).await;
            match status {
                202 => accepted += 1,
                503 => assert!(
                    headers.contains_key("retry-after") && answer["error"].as_str().unwrap().contains("queued, retry")
                ),
                other => panic!("{other}: {answer}"),
            }
        }
        assert!((5..=8).contains(&accepted), "{base}: accepted {accepted}");
        let page = get_text(&http, &format!("{base}/metrics")).await;
        assert_eq!(metric(&page, "gateway_degraded"), Some(1.0));
        assert_eq!(metric(&page, "gateway_degrade_admit_per_second"), Some(5.0));
        assert_eq!(metric(&page, "gateway_status_reads_shed_total"), Some(1.0));
        assert!(metric(&page, "gateway_orders_admission_rejected_total").unwrap() >= 12.0, "{page}");
    }
    let (code, out) = admin(&bed, &["degrade", "status", "--json"]).await;
    assert_eq!(code, 0);
    let mode: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((mode["on"].clone(), mode["admit_per_s"].clone()), (json!(true), json!(5)));

    let (code, out) = admin(&bed, &["degrade", "off"]).await;
    assert_eq!((code, out.trim()), (0, "degrade off"));
    for base in &bases {
        eventually(Duration::from_secs(5), "the gateway serves reads again", || async {
            get_json(&http, &format!("{base}/orders/before")).await.0 == 200
        })
        .await;
        let accepted = {
            let mut n = 0;
            for i in 0..20 {
                n += u32::from(buy(&http, base, &order("u2", "101", 1, &format!("{base}-off-{i}"))).await.0 == 202);
            }
            n
        };
        assert_eq!(accepted, 20, "no cap once off");
        assert_eq!(metric(&get_text(&http, &format!("{base}/metrics")).await, "gateway_degraded"), Some(0.0));
    }
    let (code, _) = admin(&bed, &["degrade", "on", "--admit", "0"]).await;
    assert_eq!(code, 2, "a cap of 0 would refuse every order: refused");
    bed.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_metrics_report_the_runbook_fields() {
    let bed = testbed(&[]).await;
    let base = bed.gateway_url(0);
    let http = client();
    let (status, health) = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        health,
        json!({"status": "healthy", "redis": true, "kafka": true, "circuit_breaker_state": "closed",
               "degraded": {"on": false, "admit_per_s": null, "since_ms": 0}})
    );
    assert_eq!(get_json(&http, &format!("{base}/healthz")).await.0, 200);
    assert_eq!(get_json(&http, &format!("{base}/readyz")).await.0, 200);
    let page = get_text(&http, &format!("{base}/metrics")).await;
    for name in [
        "gateway_orders_received_total",
        "gateway_orders_successful_total",
        "gateway_orders_failed_total",
        "gateway_orders_validation_failed_total",
        "gateway_orders_idempotency_rejected_total",
        "gateway_orders_rate_limited_total",
        "gateway_circuit_breaker_state",
        "gateway_request_duration_seconds_count",
    ] {
        assert_eq!(metric(&page, name), Some(0.0), "{name} in\n{page}");
    }
    assert!(page.contains("gateway_request_duration_seconds_bucket{le=\"0.005\"}"));
    // The process's own CPU and memory, and the limit the MemoryHigh alert divides by.
    assert!(metric(&page, "process_cpu_seconds_total").is_some(), "{page}");
    assert!(metric(&page, "process_resident_memory_bytes").is_some_and(|b| b > 1e6), "{page}");
    let limit = metric(&page, "flashsale_process_memory_limit_bytes").expect("memory limit");
    assert!(limit >= metric(&page, "process_resident_memory_bytes").unwrap(), "{page}");
    bed.stop().await.unwrap();
}
