//! What `flashsale processor` reads from the environment (docs/system.md lists each variable
//! with its default).

use std::time::Duration;

use super::deferred;
use crate::config::{ConfigError, Env};

/// Everything `flashsale processor` reads from the environment.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub redis: crate::redis_conn::RedisEndpoint,
    pub kafka_addr: String,
    pub log_level: String,
    /// `PAYMENT_URL` (default `http://127.0.0.1:8090`).
    pub payment_url: String,
    /// `PAYMENT_TIMEOUT` (2s): limit of each payment call.
    pub payment_timeout: Duration,
    /// `PAYMENT_RESOLVE_TIMEOUT` (10s): how long to keep asking the provider whether an unclear
    /// charge went through.
    pub payment_resolve_timeout: Duration,
    /// `PROCESSOR_METRICS_ADDR` (`0.0.0.0:9090`).
    pub metrics_addr: std::net::SocketAddr,
    /// `PROCESSOR_MAX_IN_FLIGHT` (256).
    pub max_in_flight: usize,
    pub redis_timeout: Duration,
    /// `REDIS_WAIT_REPLICAS`, `REDIS_WAIT_TIMEOUT`: the reservation scripts wait for replicas.
    pub redis_durability: Option<crate::redis_conn::Durability>,
    pub kafka_produce_timeout: Duration,
    pub orders_partitions: i32,
    pub order_status_ttl: Duration,
    /// `ORDER_STATE_TTL` (7 days): how long the processor remembers a decided order.
    pub order_state_ttl: Duration,
    pub startup_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `ORDER_RETRY_LIMIT` (10m): how long one order is retried while Redis or Kafka fail before
    /// the processor reports itself unhealthy and leaves the order uncommitted.
    pub order_retry_limit: Duration,
    /// `PAYMENT_OUTAGE_MODE` (`refund`): a charge without a clear answer is resolved and refunded
    /// at once (`refund`), or [deferred](deferred) and tried again (`defer`).
    pub payment_outage: deferred::OutageMode,
    /// `PAYMENT_DEFER_LIMIT` (10m): how long a deferred payment is tried before it is refunded.
    pub payment_defer_limit: Duration,
    /// `PROCESSOR_WATCHDOG` (`on`): the [group watchdog](watchdog) repairs partitions the
    /// broker left without a working consumer. `off` only to show what it prevents.
    pub watchdog: bool,
    /// `KAFKA_DEBUG`: librdkafka debug contexts for the consumer (e.g. `cgrp`), logged as JSON.
    pub kafka_debug: Option<String>,
}

impl ProcessorConfig {
    pub fn from_env(env: &Env<'_>) -> Result<ProcessorConfig, ConfigError> {
        Ok(ProcessorConfig {
            redis: crate::redis_conn::RedisEndpoint::from_env(env)?,
            kafka_addr: env.host_ports("KAFKA_ADDR", "127.0.0.1:9092")?,
            log_level: env.log_level()?,
            payment_url: env.string("PAYMENT_URL", "http://127.0.0.1:8090"),
            payment_timeout: env.duration("PAYMENT_TIMEOUT", Duration::from_secs(2))?,
            payment_resolve_timeout: env.duration("PAYMENT_RESOLVE_TIMEOUT", Duration::from_secs(10))?,
            metrics_addr: env.socket_addr("PROCESSOR_METRICS_ADDR", "0.0.0.0:9090")?,
            max_in_flight: env.number("PROCESSOR_MAX_IN_FLIGHT", 256, 1, 100_000)?,
            redis_timeout: env.duration("REDIS_TIMEOUT", Duration::from_millis(500))?,
            redis_durability: crate::redis_conn::Durability::from_env(
                env,
                env.duration("REDIS_TIMEOUT", Duration::from_millis(500))?,
            )?,
            kafka_produce_timeout: env.duration("KAFKA_PRODUCE_TIMEOUT", Duration::from_secs(5))?,
            orders_partitions: env.number("ORDERS_PARTITIONS", 6, 1, 1_000)?,
            order_status_ttl: env.duration("ORDER_STATUS_TTL", Duration::from_secs(30 * 60))?,
            order_state_ttl: env.duration("ORDER_STATE_TTL", Duration::from_secs(7 * 24 * 3600))?,
            startup_timeout: env.duration("STARTUP_TIMEOUT", Duration::from_secs(30))?,
            shutdown_timeout: env.duration("SHUTDOWN_TIMEOUT", Duration::from_secs(30))?,
            order_retry_limit: env.duration("ORDER_RETRY_LIMIT", Duration::from_secs(600))?,
            payment_outage: match env.string("PAYMENT_OUTAGE_MODE", "refund").as_str() {
                "refund" => deferred::OutageMode::Refund,
                "defer" => deferred::OutageMode::Defer,
                other => {
                    return Err(ConfigError {
                        var: "PAYMENT_OUTAGE_MODE",
                        value: other.to_string(),
                        why: "must be refund or defer".into(),
                    })
                }
            },
            payment_defer_limit: env.duration("PAYMENT_DEFER_LIMIT", Duration::from_secs(600))?,
            watchdog: env.boolean("PROCESSOR_WATCHDOG", true)?,
            kafka_debug: Some(env.string("KAFKA_DEBUG", "")).filter(|v| !v.is_empty()),
        })
    }
}
