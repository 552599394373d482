//! What the processor writes to Kafka: dead letters on `orders-dlq` and decisions on
//! `order-outcomes`, each acknowledged by the broker (`acks=all`) before the order's offset may
//! be committed. Idempotence is off for the reason given in [`crate::gateway::queue`]; a
//! duplicate outcome or dead letter is harmless (readers keep one per `request_id/attempt`).

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::gateway::queue::QueueError;
use crate::kafka_stats::Counted;
use crate::order::{now_ms, DeadLetterInfo, DeadLetterMessage, OrderMessage, Outcome, DLQ_TOPIC, OUTCOMES_TOPIC};

/// Where a consumed order came from, for its dead letter.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<Counted>,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("timeout", &self.timeout).finish()
    }
}

impl Publisher {
    pub fn new(bootstrap: &str, timeout: Duration) -> Result<Publisher, QueueError> {
        let timeout_ms = timeout.as_millis().max(1).to_string();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "flashsale-processor")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("linger.ms", "5")
            .set("statistics.interval.ms", crate::kafka_stats::INTERVAL_MS)
            .create_with_context(Counted("processor-producer"))?;
        Ok(Publisher { producer, timeout })
    }

    /// Without record headers: see [`crate::order`].
    async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), QueueError> {
        let record = FutureRecord::to(topic).key(key.as_bytes()).payload(payload);
        let guard = self.timeout + Duration::from_millis(500);
        match tokio::time::timeout(guard, self.producer.send(record, self.timeout)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(QueueError::Timeout(guard)),
        }
    }

    /// The decision, on `order-outcomes`.
    pub async fn outcome(&self, outcome: &Outcome) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(outcome)?;
        self.send(OUTCOMES_TOPIC, &outcome.request_id, &payload).await
    }

    /// The order on `orders-dlq`, with why and where it came from (in the payload: see
    /// [`crate::order`] for why not in headers).
    pub async fn dead_letter(&self, order: &OrderMessage, reason: &str, origin: Origin) -> Result<u64, QueueError> {
        let failed_at_ms = now_ms();
        let letter = DeadLetterMessage {
            order: order.clone(),
            dead_letter: DeadLetterInfo {
                reason: reason.to_string(),
                original_partition: origin.partition,
                original_offset: origin.offset,
                failed_at_ms,
            },
        };
        let payload = serde_json::to_vec(&letter)?;
        self.send(DLQ_TOPIC, &order.request_id, &payload).await?;
        Ok(failed_at_ms)
    }

    pub async fn flush(&self, limit: Duration) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(limit)).await;
    }
}
