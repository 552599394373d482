//! `flashsale gateway`: the HTTP front door. An order is [validated](validate), admitted by the
//! optional global limit ([admission]), checked against the [breaker], rate-limited and claimed
//! by its `request_id` in Redis ([claim]), and [queued](queue) on Kafka; the client hears 202
//! only once the broker has it. [routes] holds the handlers, [metrics] the runbook's metrics,
//! [degrade] the promotion's degradation switch (order-status reads shed, admissions capped).
//!
//! On SIGTERM the gateway reports not-ready, stops accepting connections, lets in-flight
//! requests finish (at most `SHUTDOWN_TIMEOUT`) and flushes the producer.

pub mod admission;
pub mod breaker;
pub mod claim;
pub mod degrade;
pub mod metrics;
pub mod queue;
mod routes;
pub mod validate;

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::time::Instant;

use crate::config::GatewayConfig;
use crate::redis_conn::Redis;
pub use routes::{CORRELATION_ID_HEADER, MAX_BODY_BYTES};

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct GatewayState {
    claims: claim::Claims,
    queue: queue::OrderQueue,
    breaker: breaker::CircuitBreaker,
    admission: Option<admission::AdmissionLimit>,
    degrade: Arc<degrade::Switch>,
    metrics: metrics::GatewayMetrics,
    draining: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on GATEWAY_ADDR={addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot reach Redis ({addr}) within STARTUP_TIMEOUT: {last}")]
    Redis { addr: String, last: String },
    #[error("Kafka at KAFKA_ADDR={addr}: {source}")]
    Kafka { addr: String, source: queue::QueueError },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Runs the gateway until `shutdown` resolves, then drains and returns.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let redis = Redis::connect_when_up(&config.redis, config.redis_timeout, config.startup_timeout)
        .await
        .map_err(|e| GatewayError::Redis { addr: config.redis.to_string(), last: e.to_string() })?;
    queue::OrderQueue::ensure_topic(&config.kafka_addr, config.orders_partitions, config.startup_timeout)
        .await
        .map_err(|source| GatewayError::Kafka { addr: config.kafka_addr.clone(), source })?;
    let queue = queue::OrderQueue::new(
        &config.kafka_addr,
        config.kafka_produce_timeout,
        config.kafka_linger,
        config.kafka_idempotence,
    )
    .map_err(|source| GatewayError::Kafka { addr: config.kafka_addr.clone(), source })?;
    let metrics = metrics::GatewayMetrics::new();
    let switch = Arc::new(degrade::Switch::new(config.degrade_retry_after));
    // The switch is read on a connection of its own: a backlog of orders on the shared one (the
    // overload the switch is for) must not hold it back.
    let switch_redis = Redis::connect_when_up(&config.redis, config.redis_timeout, config.startup_timeout)
        .await
        .map_err(|e| GatewayError::Redis { addr: config.redis.to_string(), last: e.to_string() })?;
    degrade::spawn_follow(&switch, switch_redis, config.degrade_poll, {
        let metrics = metrics.clone();
        move |mode| metrics.show_degrade(mode)
    });
    let state = Arc::new(GatewayState {
        claims: claim::Claims::new(
            redis,
            config.rate_limit_window,
            config.rate_limit_max_requests,
            config.order_status_ttl,
        ),
        queue,
        breaker: breaker::CircuitBreaker::new(config.breaker),
        admission: admission::AdmissionLimit::new(config.global_rate_limit, Instant::now()),
        degrade: switch,
        metrics,
        draining: AtomicBool::new(false),
    });

    let app = Router::new()
        .route("/buy", post(routes::buy).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .route("/orders/{request_id}", get(routes::order_status))
        .route("/health", get(routes::health))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .with_state(state.clone());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Bind { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(GatewayError::Serve)?;
    tracing::info!(service = "gateway", event = "listening", addr = %local, "Gateway listening");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .into_future(),
    );

    shutdown.await;
    state.draining.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(config.shutdown_timeout, server).await;
    match drained {
        Ok(Ok(Ok(()))) => tracing::info!(service = "gateway", event = "drained", "In-flight requests finished"),
        Ok(Ok(Err(e))) => return Err(GatewayError::Serve(e)),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(service = "gateway", event = "drain_timeout", timeout = ?config.shutdown_timeout, "Stopped with requests still in flight")
        }
    }
    if let Err(e) = state.queue.flush(config.shutdown_timeout).await {
        tracing::warn!(service = "gateway", event = "flush_failed", error = %e, "Producer flush incomplete");
    }
    tracing::info!(service = "gateway", event = "stopped", "Gateway stopped");
    Ok(())
}
