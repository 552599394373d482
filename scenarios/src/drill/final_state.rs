//! `final_state.json`: what the system holds after the drain — stock per item, each order's
//! status, the DLQ, the payment ledger, and the raw records of `order-outcomes` and `orders`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use flashsale::order::{OrderMessage, Outcome};
use serde::{Deserialize, Serialize};

/// How long reading a topic to its end may take.
const READ_LIMIT: Duration = Duration::from_secs(120);
/// Redis commands per pipeline.
const PIPELINE: usize = 1000;

/// An order's state in Redis (`order:<request_id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderState {
    pub status: Option<String>,
    pub attempt: Option<u32>,
}

/// One capture in the provider's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capture {
    /// `request_id/attempt`.
    pub key: String,
    pub amount: u64,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub request_id: String,
    pub attempt: u32,
    pub reason: String,
    pub pending: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FinalState {
    /// `inventory:<item>` per item (`None`: missing).
    pub stock: BTreeMap<String, Option<i64>>,
    /// Order states of every `request_id` the load sent.
    pub orders: BTreeMap<String, OrderState>,
    pub dlq: Vec<DeadLetter>,
    pub captures: Vec<Capture>,
    /// Every record on `order-outcomes`, duplicates kept.
    pub outcomes: Vec<Outcome>,
    /// `(request_id, attempt)` of every record on `orders` (what the gateways queued, and
    /// replays).
    pub queued: Vec<(String, u32)>,
}

/// Where to read from (the components directly, not through the proxies).
#[derive(Debug, Clone)]
pub struct Sources {
    pub redis: std::net::SocketAddr,
    pub kafka: std::net::SocketAddr,
    pub payment_url: String,
    pub flashsale: std::path::PathBuf,
    pub admin_env: Vec<(String, String)>,
}

/// Collects the final state for `items` and `request_ids`.
pub async fn collect(sources: &Sources, items: &[String], request_ids: &[String]) -> anyhow::Result<FinalState> {
    let client = redis::Client::open(format!("redis://{}", sources.redis)).context("redis address")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
        .await
        .context("redis: no connection within 10 s")??;
    let mut state = FinalState::default();
    for item in items {
        let value: Option<i64> = tokio::time::timeout(
            Duration::from_secs(10),
            redis::cmd("GET").arg(flashsale::keys::inventory(item)).query_async(&mut conn),
        )
        .await
        .context("redis GET: no answer")??;
        state.stock.insert(item.clone(), value);
    }
    for chunk in request_ids.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HMGET").arg(flashsale::keys::order_state(id)).arg("status").arg("attempt");
        }
        let answers: Vec<(Option<String>, Option<String>)> =
            tokio::time::timeout(Duration::from_secs(30), pipe.query_async(&mut conn))
                .await
                .context("redis HMGET: no answer")??;
        for (id, (status, attempt)) in chunk.iter().zip(answers) {
            state.orders.insert(id.clone(), OrderState { status, attempt: attempt.and_then(|a| a.parse().ok()) });
        }
    }

    let kafka = sources.kafka.to_string();
    let (outcomes, queued) = tokio::task::spawn_blocking(move || {
        let outcomes = flashsale::topic_reader::read_all(&kafka, flashsale::order::OUTCOMES_TOPIC, READ_LIMIT)?;
        let queued = flashsale::topic_reader::read_all(&kafka, flashsale::order::ORDERS_TOPIC, READ_LIMIT)?;
        Ok::<_, flashsale::topic_reader::ReadError>((outcomes, queued))
    })
    .await??;
    state.outcomes = outcomes.iter().filter_map(|r| serde_json::from_slice(&r.payload).ok()).collect();
    state.queued = queued
        .iter()
        .filter_map(|r| serde_json::from_slice::<OrderMessage>(&r.payload).ok())
        .map(|m| (m.request_id, m.attempt))
        .collect();

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let ledger: serde_json::Value =
        http.get(format!("{}/ledger", sources.payment_url)).send().await?.error_for_status()?.json().await?;
    state.captures = ledger["captures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some(Capture { key: c["request_id"].as_str()?.to_string(), amount: c["amount"].as_u64()? }))
        .collect();

    let dlq = admin(sources, &["dlq", "list", "--json"]).await?;
    let dlq: serde_json::Value = serde_json::from_str(&dlq).context("dlq list --json")?;
    state.dlq = dlq["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(DeadLetter {
                request_id: e["order"]["request_id"].as_str()?.to_string(),
                attempt: e["order"]["attempt"].as_u64()? as u32,
                reason: e["reason"].as_str().unwrap_or_default().to_string(),
                pending: e["pending"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    Ok(state)
}

/// Runs `flashsale ARGS` against the system; its stdout, or an error with its exit status, its
/// stderr and the start of its stdout (`reconcile` exits 1 with a report of what stays wrong).
pub async fn admin(sources: &Sources, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&sources.flashsale)
            .args(args)
            .envs(sources.admin_env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("flashsale {}: no end within 180 s", args.join(" ")))??;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        anyhow::bail!(
            "flashsale {} exited {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.chars().take(1500).collect::<String>()
        );
    }
    Ok(stdout)
}
