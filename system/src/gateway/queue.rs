//! Where an accepted order is queued: the Kafka producer that puts it on `orders`.
//!
//! - **`acks=all`**: a broker acknowledgement means the order is durable; the gateway answers 202
//!   only after it.
//! - **Idempotent producer: off by default (`KAFKA_IDEMPOTENCE`)**. With it on, librdkafka
//!   bumps the producer epoch locally after messages time out (KIP-360) — which every broker
//!   outage causes — and tansu 0.6.0 panics on the first produce under the bumped epoch
//!   (`lite.rs`: "more or less than one row"), after which its storage refuses every produce
//!   until the broker restarts. A broker outage must not end in a dead broker, so the gateway
//!   runs without it: a retry inside librdkafka after a lost acknowledgement can then write an
//!   order twice, always under the same key, and the processor's per-`request_id` idempotency
//!   gives it one effect. Turn it on against a broker that handles epoch bumps.
//! - **Key = `request_id`**: every copy of one order (a client's retry after a timeout, a replay)
//!   lands on the same partition, behind the first, so one processor sees them in order and its
//!   idempotency check is never raced by another processor. Orders for one hot item spread over
//!   all partitions and processors; the inventory script keeps the stock exact whatever the
//!   interleaving, so nothing is lost by not keying on the item (first-come-first-served holds per
//!   partition, not across them).
//! - **Batched**: `linger.ms` (`KAFKA_LINGER`, 5 ms) lets concurrent orders share a produce
//!   request. tansu stores each produce request per partition in one sqlite transaction, so
//!   batching is what the gateway's throughput rests on (`ci/bench-gateway`: 1 ms → ~4k orders/s,
//!   5 ms → ~14k on two cores), for at most 5 ms more latency.
//! - **Bounded**: `message.timeout.ms` equals `KAFKA_PRODUCE_TIMEOUT`, so an order the broker does
//!   not acknowledge in time fails (and is not delivered later by a retry inside librdkafka), and
//!   the local queue is bounded by librdkafka's `queue.buffering.max.messages`.
//! - **Failed or unknown**: a produce that failed is either *certainly not queued* (the broker
//!   refused it, the local queue was full, or the connection was already down when the order was
//!   handed over — librdkafka reported every broker down or a transport failure before it, and
//!   nothing has been delivered since) or *unknown* (it timed out while it may have been on the
//!   wire: a frozen or slow broker can have written it). The gateway answers 503 to the first
//!   and releases the `request_id`, 504 `UNKNOWN` to the second ([`QueueError::outcome_unknown`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::order::{OrderMessage, ORDERS_TOPIC};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("could not create topic {topic} within {waited:?}: {last}")]
    TopicNotCreated { topic: &'static str, waited: Duration, last: String },
    #[error("encoding the order: {0}")]
    Encode(#[from] serde_json::Error),
    /// Timed out, but the broker connection was down since before the order was handed over:
    /// it never left this process.
    #[error("not sent: the broker was unreachable ({0})")]
    NotSent(String),
}

/// The producer's view of its broker connection: when librdkafka last reported it lost (every
/// broker down, a transport failure) without a delivery since.
#[derive(Debug, Default, Clone)]
pub struct Link {
    down_since: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::time::Instant, String)>> {
        self.down_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A delivery succeeded: the link is up.
    fn delivered(&self) {
        *self.lock() = None;
    }

    /// Why an order handed over at `sent` certainly never left, if it did not.
    fn down_before(&self, sent: std::time::Instant) -> Option<String> {
        self.lock().as_ref().filter(|(since, _)| *since <= sent).map(|(_, why)| why.clone())
    }
}

impl ClientContext for Link {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::kafka_stats::record("gateway", &statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            let mut down = self.lock();
            if down.is_none() {
                *down = Some((std::time::Instant::now(), format!("{error}: {reason}")));
            }
        }
        tracing::warn!(service = "gateway", event = "kafka_error", error = %error, reason, "librdkafka reported an error");
    }
}

impl QueueError {
    /// Whether the order may have reached the broker although the produce failed: it timed out
    /// (in flight, or still queued in the client — librdkafka does not tell which here), as
    /// opposed to an error that certainly kept it out (the broker refused it, the local queue
    /// was full).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            QueueError::Timeout(_) => true,
            QueueError::Kafka(KafkaError::MessageProduction(code)) => matches!(
                code,
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut
                    | rdkafka::types::RDKafkaErrorCode::RequestTimedOut
                    | rdkafka::types::RDKafkaErrorCode::OperationTimedOut
            ),
            _ => false,
        }
    }
}

pub struct OrderQueue {
    producer: FutureProducer<Link>,
    /// The producer context's view of the connection (shared with it).
    link: Link,
    produce_timeout: Duration,
}

impl std::fmt::Debug for OrderQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderQueue").field("produce_timeout", &self.produce_timeout).finish()
    }
}

/// Where a queued order was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub partition: i32,
    pub offset: i64,
}

impl OrderQueue {
    /// A producer for `bootstrap`. Nothing is sent until the first order.
    pub fn new(
        bootstrap: &str,
        produce_timeout: Duration,
        linger: Duration,
        idempotent: bool,
    ) -> Result<OrderQueue, QueueError> {
        let timeout_ms = produce_timeout.as_millis().max(1).to_string();
        let link = Link::default();
        let producer: FutureProducer<Link> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "flashsale-gateway")
            .set("enable.idempotence", if idempotent { "true" } else { "false" })
            .set("acks", "all")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("linger.ms", linger.as_millis().to_string())
            .set("socket.connection.setup.timeout.ms", "2000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("statistics.interval.ms", crate::kafka_stats::INTERVAL_MS)
            .create_with_context(link.clone())?;
        Ok(OrderQueue { producer, link, produce_timeout })
    }

    /// Creates the `orders` topic with `partitions` (an existing topic is fine), retrying until
    /// `limit` passes — the broker may still be starting.
    pub async fn ensure_topic(bootstrap: &str, partitions: i32, limit: Duration) -> Result<(), QueueError> {
        ensure_topics(bootstrap, &[(ORDERS_TOPIC, partitions)], limit).await
    }

    /// Queues `order`; returns once the broker acknowledged it (or fails within the produce
    /// timeout).
    pub async fn send(&self, order: &OrderMessage) -> Result<Queued, QueueError> {
        let payload = serde_json::to_vec(order)?;
        // No record headers: the correlation id is in the payload, and tansu 0.6.0 keeps headers
        // in an unindexed table read once per fetched record, so every header written makes
        // every later fetch slower (see docs/development.md, Performance).
        let record = FutureRecord::to(ORDERS_TOPIC).key(order.request_id.as_bytes()).payload(&payload);
        // The enqueue wait and the delivery are both bounded by the produce timeout; the outer
        // limit is a guard in case librdkafka's own timer is late.
        let sent = std::time::Instant::now();
        let delivery = self.producer.send(record, self.produce_timeout);
        let guard = self.produce_timeout + Duration::from_millis(500);
        let link = &self.link;
        let failed = match tokio::time::timeout(guard, delivery).await {
            Ok(Ok(delivered)) => {
                link.delivered();
                return Ok(Queued { partition: delivered.partition, offset: delivered.offset });
            }
            Ok(Err((e, _))) => QueueError::from(e),
            Err(_) => QueueError::Timeout(guard),
        };
        // A timeout while the connection was already down: it never left.
        match (failed.outcome_unknown(), link.down_before(sent)) {
            (true, Some(why)) => Err(QueueError::NotSent(why)),
            _ => Err(failed),
        }
    }

    /// Whether the broker answers a metadata request for `orders` within `limit`.
    pub async fn broker_reachable(&self, limit: Duration) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(ORDERS_TOPIC), limit)
                .is_ok_and(|m| m.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()))
        })
        .await
        .unwrap_or(false)
    }

    /// Waits (at most `limit`) until every order handed to the producer was delivered or failed.
    pub async fn flush(&self, limit: Duration) -> Result<(), QueueError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(limit)).await.map_err(|_| QueueError::Timeout(limit))??;
        Ok(())
    }
}

/// Creates each `(topic, partitions)` that does not exist yet, retrying until `limit` passes.
pub async fn ensure_topics(bootstrap: &str, topics: &[(&'static str, i32)], limit: Duration) -> Result<(), QueueError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()?;
    let started = tokio::time::Instant::now();
    let attempt_timeout = Duration::from_secs(5).min(limit);
    let options = AdminOptions::new().request_timeout(Some(attempt_timeout));
    for &(topic, partitions) in topics {
        let mut last;
        loop {
            let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
            match admin.create_topics([&new_topic], &options).await {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => break,
                    Some(Err((_, code))) => last = code.to_string(),
                    None => last = "no result".into(),
                },
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() >= limit {
                return Err(QueueError::TopicNotCreated { topic, waited: started.elapsed(), last });
            }
            tracing::info!(topic, %last, "topic not created yet; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
