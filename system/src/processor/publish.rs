//! What the processor writes to Kafka: dead letters on `orders-dlq` and decisions on
//! `order-outcomes`, each acknowledged by the broker (`acks=all`) before the order's offset may
//! be committed. Idempotence is off for the reason given in [`crate::gateway::queue`]; a
//! duplicate outcome or dead letter is harmless (readers keep one per `request_id/attempt`).

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::gateway::queue::QueueError;
use crate::order::{dlq_headers, now_ms, OrderMessage, Outcome, CORRELATION_HEADER, DLQ_TOPIC, OUTCOMES_TOPIC};

/// Where a consumed order came from, for its dead letter's headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
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
            .create()?;
        Ok(Publisher { producer, timeout })
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), QueueError> {
        let mut record = FutureRecord::to(topic).key(key.as_bytes()).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
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
        // No headers on this high-volume topic: the correlation id is in the payload (tansu
        // 0.6.0 reads headers from an unindexed table once per fetched record).
        self.send(OUTCOMES_TOPIC, &outcome.request_id, &payload, None).await
    }

    /// The order on `orders-dlq`, with why and where it came from.
    pub async fn dead_letter(&self, order: &OrderMessage, reason: &str, origin: Origin) -> Result<u64, QueueError> {
        let payload = serde_json::to_vec(order)?;
        let failed_at = now_ms();
        let attempt = order.attempt.to_string();
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let original = order.accepted_at_ms.to_string();
        let failed = failed_at.to_string();
        let headers = [
            (dlq_headers::REASON, reason),
            (CORRELATION_HEADER, order.correlation_id.as_str()),
            (dlq_headers::ATTEMPT, attempt.as_str()),
            (dlq_headers::ORIGINAL_PARTITION, partition.as_str()),
            (dlq_headers::ORIGINAL_OFFSET, offset.as_str()),
            (dlq_headers::ORIGINAL_TIME_MS, original.as_str()),
            (dlq_headers::FAILED_AT_MS, failed.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_bytes()) }));
        self.send(DLQ_TOPIC, &order.request_id, &payload, Some(headers)).await?;
        Ok(failed_at)
    }

    pub async fn flush(&self, limit: Duration) {
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(limit)).await;
    }
}
