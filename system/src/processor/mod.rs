//! `flashsale processor`: consumes `orders` in the consumer group `processor`, and for each
//! order [reserves](reservation) stock, [pays and decides](handle) (through a provider outage,
//! optionally [deferring the payment](deferred)), and commits the offset only once that is
//! durable ([commits]). Its configuration: [`ProcessorConfig`]. Orders are worked on
//! concurrently (at most `PROCESSOR_MAX_IN_FLIGHT`); two copies of one `request_id` never at the
//! same time.
//!
//! Several processors share the partitions and rebalance when one dies or joins; the broker's
//! coordinator can leave a partition without a consumer, which [`group_repair`] and the
//! [`watchdog`] notice and repair (every accepted order is decided within a bound). On SIGTERM the
//! processor stops taking orders, finishes those in hand (at most `SHUTDOWN_TIMEOUT`), commits
//! and leaves the group. `/metrics` and `/health` listen on `PROCESSOR_METRICS_ADDR`.

pub mod commits;
pub mod dead_letter;
pub mod deferred;
pub mod group_repair;
pub mod handle;
pub mod metrics;
pub mod publish;
pub mod reservation;
mod settings;
pub mod watchdog;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::gateway::queue::{ensure_topics, QueueError};
use crate::keys;
use crate::order::{OrderMessage, DLQ_TOPIC, INVENTORY_TOPIC, ORDERS_TOPIC, OUTCOMES_TOPIC};
use crate::payment::client::PaymentClient;
use crate::redis_conn::Redis;
use commits::CommitTracker;
use handle::OrderWorker;
pub use metrics::ProcessorMetrics;
use publish::{Origin, Publisher};
use reservation::Reservations;
pub use settings::ProcessorConfig;

const SERVICE: &str = "processor";
/// The consumer group every processor joins.
pub const GROUP: &str = "processor";

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("cannot reach Redis ({addr}): {source}")]
    Redis { addr: String, source: crate::redis_conn::RedisError },
    #[error("Kafka at KAFKA_ADDR={addr}: {source}")]
    Kafka { addr: String, source: QueueError },
    #[error("PAYMENT_URL={url}: {source}")]
    Payment { url: String, source: reqwest::Error },
    #[error("cannot listen on PROCESSOR_METRICS_ADDR={addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

type GroupConsumer = StreamConsumer<group_repair::GroupRepair>;

/// Shared between the consumer loop, the order tasks and the HTTP endpoints.
#[derive(Debug, Default)]
struct Shared {
    tracker: Mutex<CommitTracker>,
    /// request_ids being worked on here, to keep two copies of one order apart.
    busy: Mutex<HashMap<String, Arc<Notify>>>,
    /// Set when an order could not be finished within `ORDER_RETRY_LIMIT`.
    stuck: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the processor until `shutdown` resolves.
pub async fn run(
    config: ProcessorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessorError> {
    let kafka_err = |source| ProcessorError::Kafka { addr: config.kafka_addr.clone(), source };
    let redis = Redis::connect_when_up(&config.redis, config.redis_timeout, config.startup_timeout)
        .await
        .map_err(|source| ProcessorError::Redis { addr: config.redis.to_string(), source })?;
    ensure_topics(
        &config.kafka_addr,
        &[(ORDERS_TOPIC, config.orders_partitions), (DLQ_TOPIC, 1), (OUTCOMES_TOPIC, 1), (INVENTORY_TOPIC, 1)],
        config.startup_timeout,
    )
    .await
    .map_err(kafka_err)?;
    let repair = group_repair::GroupRepair::default();
    let probe_requests = repair.probe_requests();
    let mut consumer_config = ClientConfig::new();
    if let Some(contexts) = &config.kafka_debug {
        consumer_config.set("debug", contexts);
    }
    let consumer: GroupConsumer = consumer_config
        .set("bootstrap.servers", &config.kafka_addr)
        .set("group.id", GROUP)
        .set("client.id", "flashsale-processor")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Also the rebalance timeout a JoinGroup announces: how long tansu waits for members to
        // rejoin before it completes a rebalance without them (default 300 s). The consumer loop
        // polls at least this often unless all PROCESSOR_MAX_IN_FLIGHT orders are stuck retrying.
        .set("max.poll.interval.ms", "15000")
        // tansu answers an empty fetch only after the full wait; 100 ms keeps an idle
        // processor quick to notice a new order (~130 ms end to end against ~0.5 s at the default).
        .set("fetch.wait.max.ms", "100")
        // Small fetch responses: tansu writes a response while holding up other requests, so a
        // response larger than the socket buffers of a frozen (SIGSTOP) processor stalls the
        // whole broker. 256 KiB fits; librdkafka's 50 MiB default does not.
        .set("fetch.max.bytes", "262144")
        .set("max.partition.fetch.bytes", "65536")
        .set("message.max.bytes", "262144")
        .set("queued.max.messages.kbytes", "16384")
        .set("socket.connection.setup.timeout.ms", "2000")
        .set("statistics.interval.ms", crate::kafka_stats::INTERVAL_MS)
        .create_with_context(repair)
        .map_err(|e| kafka_err(e.into()))?;
    consumer.subscribe(&[ORDERS_TOPIC]).map_err(|e| kafka_err(e.into()))?;
    let consumer = Arc::new(consumer);

    let metrics = ProcessorMetrics::new();
    let worker = OrderWorker {
        reservations: Reservations::new(
            redis.clone().with_durability(config.redis_durability),
            config.order_status_ttl,
            config.order_state_ttl,
        ),
        payment: PaymentClient::new(&config.payment_url, config.payment_timeout)
            .map_err(|source| ProcessorError::Payment { url: config.payment_url.clone(), source })?,
        publisher: Publisher::new(&config.kafka_addr, config.kafka_produce_timeout).map_err(kafka_err)?,
        metrics: metrics.clone(),
        resolve_timeout: config.payment_resolve_timeout,
        deferrals: (config.payment_outage == deferred::OutageMode::Defer).then(|| {
            deferred::Deferrals::new(
                redis.clone().with_durability(config.redis_durability),
                config.payment_defer_limit,
                config.order_status_ttl,
            )
        }),
        dead_letters: dead_letter::DeadLetters::new(
            redis.clone().with_durability(config.redis_durability),
            dead_letter::lease_for(config.kafka_produce_timeout),
        ),
    };
    let retries = worker.deferrals.clone().map(|d| tokio::spawn(deferred::retry_due(worker.clone(), d)));
    let shared = Arc::new(Shared::default());

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| ProcessorError::Bind { addr: config.metrics_addr, source })?;
    let http = tokio::spawn(serve_http(listener, metrics.clone(), redis.clone(), shared.clone()));
    let gauges = tokio::spawn(refresh_gauges(metrics.clone(), redis.clone(), consumer.clone()));
    let probes = tokio::spawn(group_repair::run_probes(probe_requests.clone(), config.kafka_addr.clone(), GROUP));
    let watchdog = config.watchdog.then(|| {
        tokio::spawn(watchdog::watch_group(
            consumer.clone(),
            shared.clone(),
            probe_requests,
            metrics.clone(),
            config.orders_partitions,
        ))
    });
    tracing::info!(service = SERVICE, event = "started", metrics = %config.metrics_addr, "Processor consuming orders");

    consume(&config, &consumer, &worker, &shared, shutdown).await;
    // A deferred payment being tried now is tried again by another processor once its lease
    // runs out.
    if let Some(r) = retries {
        r.abort();
    }

    // Drain: the orders in hand finish (bounded), their offsets are stored, then one last
    // synchronous commit and we leave the group.
    let drained = tokio::time::timeout(config.shutdown_timeout, async {
        while lock(&shared.tracker).in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            service = SERVICE,
            event = "drain_timeout",
            "Stopping with orders in flight; they will be redelivered"
        );
    }
    worker.publisher.flush(Duration::from_secs(5)).await;
    let committer = consumer.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = committer.commit_consumer_state(CommitMode::Sync);
        committer.unsubscribe();
    })
    .await;
    gauges.abort();
    probes.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    http.abort();
    tracing::info!(service = SERVICE, event = "stopped", "Processor stopped");
    Ok(())
}

async fn consume(
    config: &ProcessorConfig,
    consumer: &Arc<GroupConsumer>,
    worker: &OrderWorker,
    shared: &Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    worker.metrics.max_in_flight.set(config.max_in_flight as i64);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let message = tokio::select! {
            _ = &mut shutdown => return,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(service = SERVICE, event = "consume_error", error = %e, "Consumer error");
                // A broker that keeps failing must not turn this loop into a spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let origin = Origin { partition: message.partition(), offset: message.offset() };
        let order: Option<OrderMessage> = message.payload().and_then(|p| serde_json::from_slice(p).ok());
        let slot = lock(&shared.tracker).begin(origin.partition, origin.offset);
        worker.metrics.in_flight.set(lock(&shared.tracker).in_flight() as i64);
        let Some(order) = order else {
            // Not an order (the gateway never writes one): nothing can be done with it.
            tracing::error!(
                service = SERVICE,
                event = "bad_message",
                partition = origin.partition,
                offset = origin.offset,
                "Unreadable message skipped"
            );
            finish(consumer, shared, slot);
            continue;
        };
        let worker = worker.clone();
        let shared = shared.clone();
        let consumer = consumer.clone();
        let retry_limit = config.order_retry_limit;
        // `bugs::CommitBeforeProcessing`: the offset is stored as the order arrives, so a crash
        // loses the orders in hand.
        let committed_early = crate::bugs::active(crate::bugs::Bug::CommitBeforeProcessing);
        if committed_early {
            finish(&consumer, &shared, slot);
        }
        tokio::spawn(async move {
            let _permit = permit;
            let done = process_exclusively(&worker, &shared, &order, origin, retry_limit).await;
            if done && !committed_early {
                finish(&consumer, &shared, slot);
            }
            worker.metrics.in_flight.set(lock(&shared.tracker).in_flight() as i64);
        });
    }
}

/// Handles `order`, waiting first for any other copy of it in flight here, and retrying while
/// Redis or Kafka fail (bounded). `false` when it could not be finished.
async fn process_exclusively(
    worker: &OrderWorker,
    shared: &Shared,
    order: &OrderMessage,
    origin: Origin,
    retry_limit: Duration,
) -> bool {
    loop {
        let wait = {
            let mut busy = lock(&shared.busy);
            match busy.get(&order.request_id) {
                Some(notify) => Some(notify.clone()),
                None => {
                    busy.insert(order.request_id.clone(), Arc::new(Notify::new()));
                    None
                }
            }
        };
        match wait {
            Some(notify) => {
                // Wake-ups are broadcast when the other copy ends; re-check at least every 100 ms.
                let _ = tokio::time::timeout(Duration::from_millis(100), notify.notified()).await;
            }
            None => break,
        }
    }
    let deadline = Instant::now() + retry_limit;
    let mut backoff = Duration::from_millis(100);
    let done = loop {
        match worker.handle(order, origin).await {
            Ok(_) => break true,
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(service = SERVICE, event = "order_retry", correlation_id = %order.correlation_id, request_id = %order.request_id, error = %e, "Step failed; retrying the order");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(service = SERVICE, event = "order_stuck", correlation_id = %order.correlation_id, request_id = %order.request_id, error = %e, "Order not finished; its offset stays uncommitted");
                shared.stuck.store(true, std::sync::atomic::Ordering::Relaxed);
                break false;
            }
        }
    };
    if let Some(notify) = lock(&shared.busy).remove(&order.request_id) {
        notify.notify_waiters();
    }
    done
}

fn finish(consumer: &GroupConsumer, shared: &Shared, slot: commits::Slot) {
    if let Some(next) = lock(&shared.tracker).finish(slot) {
        let mut list = TopicPartitionList::new();
        if list.add_partition_offset(ORDERS_TOPIC, slot.partition, Offset::Offset(next)).is_ok() {
            // Fails only for a partition no longer ours (rebalanced away): its new owner
            // re-processes from the last commit, which is safe.
            let _ = consumer.store_offsets(&list);
        }
    }
}

/// DLQ depth and age from `dlq:pending`, deferred payments waiting, consumer lag from the
/// broker; every second.
async fn refresh_gauges(metrics: ProcessorMetrics, redis: Redis, consumer: Arc<GroupConsumer>) {
    loop {
        let dlq = redis
            .call(|mut c| async move {
                let size: i64 = redis::cmd("ZCARD").arg(keys::DLQ_PENDING).query_async(&mut c).await?;
                let oldest: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(keys::DLQ_PENDING)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await?;
                Ok((size, oldest.first().map(|(_, score)| *score as u64)))
            })
            .await;
        if let Ok(waiting) = deferred::Deferrals::waiting(&redis).await {
            metrics.payments_deferred.set(waiting);
        }
        if let Ok((size, oldest)) = dlq {
            metrics.dlq_size.set(size);
            let age = oldest.map(|ms| crate::order::now_ms().saturating_sub(ms) / 1000).unwrap_or(0);
            metrics.dlq_oldest_age_seconds.set(age as i64);
        }
        let c = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let limit = Duration::from_millis(500);
            let Ok(assignment) = c.assignment() else { return Vec::new() };
            let positions = c.position().unwrap_or_default();
            assignment
                .elements()
                .iter()
                .filter_map(|tp| {
                    let (_, high) = c.fetch_watermarks(tp.topic(), tp.partition(), limit).ok()?;
                    let position = positions
                        .find_partition(tp.topic(), tp.partition())
                        .and_then(|p| p.offset().to_raw())
                        .filter(|o| *o >= 0);
                    let committed_or_low = position.unwrap_or(high);
                    Some((tp.partition(), (high - committed_or_low).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        metrics.lag.reset();
        for (partition, lag) in lags {
            metrics.lag.with_label_values(&[&partition.to_string()]).set(lag);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `/health` and `/readyz`: Redis answers and the consume loop is not stuck.
async fn health(redis: Redis, shared: Arc<Shared>) -> axum::response::Response {
    let redis_ok = redis.ping().await.is_ok();
    let stuck = shared.stuck.load(std::sync::atomic::Ordering::Relaxed);
    let healthy = redis_ok && !stuck;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if healthy {"healthy"} else {"unhealthy"}, "ready": healthy, "redis": redis_ok, "stuck": stuck});
    (status, Json(body)).into_response()
}

async fn serve_http(listener: tokio::net::TcpListener, metrics: ProcessorMetrics, redis: Redis, shared: Arc<Shared>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route(
            "/health",
            get({
                let (redis, shared) = (redis.clone(), shared.clone());
                move || health(redis.clone(), shared.clone())
            }),
        )
        // Liveness: the process serves and its consume loop is not stuck (a dependency being
        // down is no reason to restart it).
        .route(
            "/healthz",
            get({
                let shared = shared.clone();
                move || {
                    let stuck = shared.stuck.load(std::sync::atomic::Ordering::Relaxed);
                    let status = if stuck { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                    async move { (status, Json(json!({"alive": !stuck, "stuck": stuck}))).into_response() }
                }
            }),
        )
        // Readiness: it can decide orders now (Redis answers, not stuck).
        .route("/readyz", get(move || health(redis.clone(), shared.clone())));
    let _ = axum::serve(listener, app).into_future().await;
}
