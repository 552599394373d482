//! Helpers for the system's integration tests: a real Redis, broker and gateway (through the
//! lab's `Testbed`), an HTTP client, and a reader of the `orders` topic.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::Duration;

use chaos::{Testbed, TestbedConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub const FLASHSALE: &str = env!("CARGO_BIN_EXE_flashsale");

/// `defaults` with `overrides` on top.
pub fn merged(defaults: &[(&str, &str)], overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = defaults
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.sort();
    env
}

/// A testbed of `config` running this crate's `flashsale`.
pub async fn start(config: TestbedConfig) -> Testbed {
    Testbed::start(TestbedConfig { flashsale_bin: Some(FLASHSALE.into()), ..config }).await.expect("testbed starts")
}

/// A testbed with one gateway configured by `env` (on top of fast test settings).
pub async fn testbed(env: &[(&str, &str)]) -> Testbed {
    let defaults = [
        ("LOG_LEVEL", "warn"),
        ("KAFKA_PRODUCE_TIMEOUT", "1s"),
        ("CIRCUIT_BREAKER_BASE_TIMEOUT", "1s"),
        ("CIRCUIT_BREAKER_MAX_TIMEOUT", "4s"),
        ("RATE_LIMIT_MAX_REQUESTS", "1000000"),
        ("ORDERS_PARTITIONS", "3"),
    ];
    start(TestbedConfig { gateways: 1, service_env: merged(&defaults, env), ..TestbedConfig::default() }).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(64).build().expect("client")
}

pub fn order(user: &str, item: &str, amount: u32, request_id: &str) -> Value {
    json!({ "user_id": user, "item_id": item, "amount": amount, "request_id": request_id })
}

/// `POST /buy` with a JSON body; returns status, headers and the JSON answer.
pub async fn buy(client: &reqwest::Client, base: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client.post(format!("{base}/buy")).json(body).send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.expect("JSON body");
    (status, headers, body)
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap_or(Value::Null))
}

pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.expect("gateway answers").text().await.expect("text")
}

/// The value of an unlabelled metric in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// One message of the `orders` topic.
#[derive(Debug, Clone)]
pub struct Queued {
    pub key: String,
    pub payload: Value,
    pub correlation_id: Option<String>,
}

/// Every message on `topic` now, read from the beginning of each partition up to its high
/// watermark (no consumer group involved), by key.
pub fn read_topic(kafka: &str, topic: &str) -> HashMap<String, Vec<Queued>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", "flashsale-tests-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let limit = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), limit).expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!partitions.is_empty(), "topic {topic} has partitions");
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut high = HashMap::new();
    for &p in &partitions {
        let (_, hw) = consumer.fetch_watermarks(topic, p, limit).expect("watermarks");
        high.insert(p, hw);
        remaining += hw;
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out: HashMap<String, Vec<Queued>> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while remaining > 0 {
        assert!(std::time::Instant::now() < deadline, "reading {topic}: {remaining} messages still unread");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("kafka message");
        if message.offset() >= high[&message.partition()] {
            continue;
        }
        remaining -= 1;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
        let payload = serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON payload");
        let correlation_id = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "correlation_id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
        });
        out.entry(key.clone()).or_default().push(Queued { key, payload, correlation_id });
    }
    out
}

/// Polls `check` every 50 ms until it holds or `limit` passes; panics with `what` then.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A testbed with the whole system: gateway, `processors` processors and the payment provider.
pub async fn full_testbed(processors: usize, env: &[(&str, &str)]) -> Testbed {
    full_testbed_in(processors, env, None).await
}

/// [`full_testbed`] keeping its data and logs in `dir` (`None`: a temporary directory).
pub async fn full_testbed_in(processors: usize, env: &[(&str, &str)], dir: Option<std::path::PathBuf>) -> Testbed {
    let defaults = [
        ("LOG_LEVEL", "info"),
        ("RATE_LIMIT_MAX_REQUESTS", "1000000"),
        ("ORDERS_PARTITIONS", "4"),
        ("PAYMENT_TIMEOUT", "1s"),
        ("PAYMENT_RESOLVE_TIMEOUT", "5s"),
    ];
    let service_env = merged(&defaults, env);
    start(TestbedConfig { gateways: 1, processors, payment: true, service_env, dir, ..TestbedConfig::default() }).await
}

/// Runs `flashsale ARGS` against the testbed; returns (exit code, stdout).
pub async fn admin(bed: &Testbed, args: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(FLASHSALE).args(args).envs(bed.admin_env()).kill_on_drop(true).output(),
    )
    .await
    .expect("admin command finishes")
    .expect("admin command runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.stderr.is_empty() {
        eprintln!("flashsale {args:?} stderr: {}", String::from_utf8_lossy(&output.stderr));
    }
    (output.status.code().unwrap_or(-1), stdout)
}

/// One decision per `request_id/attempt` on `order-outcomes`.
pub fn decisions(bed: &Testbed) -> std::collections::BTreeMap<(String, u32), flashsale::order::Outcome> {
    let records =
        flashsale::topic_reader::read_all(&bed.kafka_addr().to_string(), "order-outcomes", Duration::from_secs(60))
            .expect("outcomes readable");
    flashsale::reconcile::decisions(records.iter().map(|r| serde_json::from_slice(&r.payload).expect("an outcome")))
}

/// Raw outcome records of `request_id` (duplicates included).
pub fn outcome_records(bed: &Testbed, request_id: &str) -> Vec<flashsale::order::Outcome> {
    outcome_records_all(bed).into_iter().filter(|o| o.request_id == request_id).collect()
}

/// Waits until every id in `ids` has a decision for attempt `attempt`.
pub async fn wait_decided(
    bed: &Testbed,
    ids: &[String],
    attempt: u32,
    limit: Duration,
) -> std::collections::BTreeMap<(String, u32), flashsale::order::Outcome> {
    try_wait_decided(bed, ids, attempt, limit).await.unwrap_or_else(|why| panic!("{why}"))
}

/// [`wait_decided`] that says why instead of panicking.
pub async fn try_wait_decided(
    bed: &Testbed,
    ids: &[String],
    attempt: u32,
    limit: Duration,
) -> Result<std::collections::BTreeMap<(String, u32), flashsale::order::Outcome>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let decided = decisions(bed);
        let missing: Vec<&String> = ids.iter().filter(|id| !decided.contains_key(&((*id).clone(), attempt))).collect();
        if missing.is_empty() {
            return Ok(decided);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} orders undecided after {limit:?}, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The payment provider's captures.
pub async fn ledger(bed: &Testbed) -> Vec<Value> {
    let url = format!("{}/ledger", bed.payment_url().expect("payment runs"));
    let (_, body) = get_json(&client(), &url).await;
    body["captures"].as_array().cloned().unwrap_or_default()
}

/// `PUT /control` on the payment provider.
pub async fn payment_control(bed: &Testbed, body: Value) {
    let url = format!("{}/control", bed.payment_url().expect("payment runs"));
    let response = client().put(url).json(&body).send().await.expect("control answers");
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text().await);
}

/// Stock of `item` in Redis.
pub async fn stock(bed: &Testbed, item: &str) -> i64 {
    let (code, out) = admin(bed, &["stock", "get", item]).await;
    assert_eq!(code, 0, "stock get {item}");
    out.trim().parse().expect("a number")
}

/// Every record on `order-outcomes`, duplicates included.
pub fn outcome_records_all(bed: &Testbed) -> Vec<flashsale::order::Outcome> {
    flashsale::topic_reader::read_all(&bed.kafka_addr().to_string(), "order-outcomes", Duration::from_secs(60))
        .expect("outcomes readable")
        .iter()
        .map(|r| serde_json::from_slice::<flashsale::order::Outcome>(&r.payload).unwrap())
        .collect()
}

/// The consumer group as the broker and the processors see it, for a failure message: per
/// partition of `orders` the group's committed offset and the end; per processor its
/// assignment (the partitions it reports lag for), lag and orders in flight.
pub async fn group_diagnosis(bed: &Testbed) -> String {
    let kafka = bed.kafka_addr().to_string();
    let broker = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = match ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .set("group.id", flashsale::processor::GROUP)
            .set("enable.auto.commit", "false")
            .create()
        {
            Ok(c) => c,
            Err(e) => return format!("no consumer: {e}"),
        };
        let limit = Duration::from_secs(5);
        let Ok(metadata) = consumer.fetch_metadata(Some("orders"), limit) else { return "no metadata".into() };
        let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            list.add_partition("orders", p);
        }
        let committed = consumer.committed_offsets(list, limit).ok();
        partitions
            .iter()
            .map(|&p| {
                let c = committed
                    .as_ref()
                    .and_then(|l| l.find_partition("orders", p))
                    .map(|e| format!("{:?}", e.offset()))
                    .unwrap_or_else(|| "?".into());
                let high =
                    consumer.fetch_watermarks("orders", p, limit).map(|(_, h)| h.to_string()).unwrap_or("?".into());
                format!("orders[{p}]: committed {c}, end {high}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
    .await
    .unwrap_or_default();
    let mut out = format!("broker: {broker}");
    for i in 0..bed.processor_count() {
        let url = format!("http://{}/metrics", bed.processor_addr(i));
        let page = match client().get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("no answer: {e}"),
        };
        let lines: Vec<&str> = page
            .lines()
            .filter(|l| {
                l.starts_with("processor_consumer_lag{")
                    || l.starts_with("processor_orders_in_flight")
                    || l.starts_with("processor_group_repairs_total{")
            })
            .collect();
        out.push_str(&format!("\nprocessor[{i}]: {}", lines.join(", ")));
    }
    out
}
