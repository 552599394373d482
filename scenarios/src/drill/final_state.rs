//! Reads the system's books for `final_state.json` ([`rundir::state`]): stock per item, each
//! order's status, the raw dead letters, the payment ledger, and the raw records of
//! `order-outcomes` and `orders`.

use std::time::Duration;

use anyhow::Context;
use flashsale::order::OrderMessage;
use rundir::state::{Capture, DeadLetter, FinalState, OrderState};

/// How long reading a topic to its end may take.
const READ_LIMIT: Duration = Duration::from_secs(120);
/// Redis commands per pipeline.
const PIPELINE: usize = 1000;

/// Where to read from (the components directly, not through the proxies).
#[derive(Debug, Clone)]
pub struct Sources {
    /// Redis; with replicated Redis, the first primary (see [`Sources::redis_now`]).
    pub redis: std::net::SocketAddr,
    /// With replicated Redis: the sentinels, which name the primary now.
    pub sentinels: Vec<std::net::SocketAddr>,
    /// With replicated Redis: each node's announced and own address (`Testbed::redis_nodes`).
    pub redis_nodes: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
    pub kafka: std::net::SocketAddr,
    pub payment_url: String,
    pub flashsale: std::path::PathBuf,
    pub admin_env: Vec<(String, String)>,
    /// Each gateway's own address (not the front).
    pub gateways: Vec<std::net::SocketAddr>,
}

impl Sources {
    /// Where Redis answers now: with replicated Redis the primary the sentinels name (after a
    /// failover, another node than at the start), else the one Redis.
    pub async fn redis_now(&self) -> std::net::SocketAddr {
        if self.sentinels.is_empty() {
            return self.redis;
        }
        chaos::testbed::replication::ask_primary(&self.sentinels).await.unwrap_or(self.redis)
    }
}

/// Collects the final state for `items` and `request_ids`.
pub async fn collect(sources: &Sources, items: &[String], request_ids: &[String]) -> anyhow::Result<FinalState> {
    let client = redis::Client::open(format!("redis://{}", sources.redis_now().await)).context("redis address")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
        .await
        .context("redis: no connection within 10 s")??;
    let mut state = FinalState { read_at_ms: chaos::events::unix_ms(), ..FinalState::default() };
    for item in items {
        let value: Option<i64> = tokio::time::timeout(
            Duration::from_secs(10),
            redis::cmd("GET").arg(flashsale::keys::inventory(item)).query_async(&mut conn),
        )
        .await
        .context("redis GET: no answer")??;
        state.stock.insert(item.clone(), value);
    }
    read_order_states(&mut conn, request_ids, &mut state).await?;

    let pending: Vec<String> = tokio::time::timeout(
        Duration::from_secs(10),
        redis::cmd("ZRANGE").arg(flashsale::keys::DLQ_PENDING).arg(0).arg(-1).query_async(&mut conn),
    )
    .await
    .context("redis ZRANGE: no answer")??;
    let pending: std::collections::HashSet<String> = pending.into_iter().collect();

    let kafka = sources.kafka.to_string();
    let (outcomes, queued, letters) = tokio::task::spawn_blocking(move || {
        use flashsale::order::{DLQ_TOPIC, ORDERS_TOPIC, OUTCOMES_TOPIC};
        use flashsale::topic_reader::read_all;
        Ok::<_, flashsale::topic_reader::ReadError>((
            read_all(&kafka, OUTCOMES_TOPIC, READ_LIMIT)?,
            read_all(&kafka, ORDERS_TOPIC, READ_LIMIT)?,
            read_all(&kafka, DLQ_TOPIC, READ_LIMIT)?,
        ))
    })
    .await??;
    // Every dead letter as written (a letter written twice counts twice).
    state.dlq = letters
        .iter()
        .filter_map(|r| {
            let flashsale::order::DeadLetterMessage { order, dead_letter } = flashsale::dlq::letter_of(r)?;
            Some(DeadLetter {
                pending: pending.contains(&flashsale::keys::dlq_member(&order.request_id, order.attempt)),
                reason: dead_letter.reason,
                request_id: order.request_id,
                attempt: order.attempt,
            })
        })
        .collect();
    state.outcomes = outcomes.iter().filter_map(|r| serde_json::from_slice(&r.payload).ok()).collect();
    state.queued = queued
        .iter()
        .filter_map(|r| serde_json::from_slice::<OrderMessage>(&r.payload).ok())
        .map(|m| (m.request_id, m.attempt))
        .collect();
    // Every queued order's state too: `request_ids` come from the history, which mid-drill (the
    // books read before a repair) may not be written out yet.
    let mut more: Vec<String> =
        state.queued.iter().map(|(id, _)| id.clone()).filter(|id| !state.orders.contains_key(id)).collect();
    more.sort();
    more.dedup();
    read_order_states(&mut conn, &more, &mut state).await?;

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let ledger: serde_json::Value =
        http.get(format!("{}/ledger", sources.payment_url)).send().await?.error_for_status()?.json().await?;
    state.captures = ledger["captures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some(Capture { key: c["request_id"].as_str()?.to_string(), amount: c["amount"].as_u64()? }))
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

/// `order:<id>` (status, attempt) of each of `request_ids` into `state.orders`.
async fn read_order_states(
    conn: &mut redis::aio::MultiplexedConnection,
    request_ids: &[String],
    state: &mut FinalState,
) -> anyhow::Result<()> {
    for chunk in request_ids.chunks(PIPELINE) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HMGET").arg(flashsale::keys::order_state(id)).arg("status").arg("attempt");
        }
        let answers: Vec<(Option<String>, Option<String>)> =
            tokio::time::timeout(Duration::from_secs(30), pipe.query_async(conn))
                .await
                .context("redis HMGET: no answer")??;
        for (id, (status, attempt)) in chunk.iter().zip(answers) {
            state.orders.insert(id.clone(), OrderState { status, attempt: attempt.and_then(|a| a.parse().ok()) });
        }
    }

    Ok(())
}
