//! The dead-letter queue, made safe to operate: `flashsale dlq list` and
//! `flashsale dlq replay [--max N]` (the runbook's "process DLQ manually").
//!
//! An entry is *pending* while its `request_id/attempt` is in `dlq:pending`. Replaying it sends
//! the order back through the normal path as the next attempt (a new payment key) and then
//! removes it from `dlq:pending`. Replaying the same entry again has no effect: it is no longer
//! pending, and even if it were (a crash between the two steps) the processor sees that attempt
//! decided already.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::keys;
use crate::order::{dlq_headers, now_ms, DeadLetterInfo, DeadLetterMessage, OrderMessage, DLQ_TOPIC, ORDERS_TOPIC};
use crate::payment::client::PaymentClient;
use crate::payment::ledger::ChargeStatus;
use crate::redis_conn::{Redis, RedisError};
use crate::topic_reader::{read_all, ReadError, Record};

/// How long reading the DLQ topic may take.
const READ_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading the DLQ: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One dead-lettered order attempt.
#[derive(Debug, Clone, Serialize)]
pub struct DlqEntry {
    pub order: OrderMessage,
    pub reason: String,
    pub failed_at_ms: u64,
    pub pending: bool,
}

/// What `dlq list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DlqReport {
    pub pending: usize,
    pub replayed: usize,
    pub oldest_pending_age_s: Option<u64>,
    pub reasons: BTreeMap<String, usize>,
    pub entries: Vec<DlqEntry>,
}

/// The dead letter a DLQ record holds: from its payload, or — a letter written before the
/// payload carried it — from its headers (reason `unknown` and time 0 when those lack it too).
/// `None` when the payload is not an order.
pub fn letter_of(record: &Record) -> Option<DeadLetterMessage> {
    if let Ok(letter) = serde_json::from_slice::<DeadLetterMessage>(&record.payload) {
        return Some(letter);
    }
    let order = serde_json::from_slice::<OrderMessage>(&record.payload).ok()?;
    let header = |name: &str| record.headers.get(name);
    fn number<T: std::str::FromStr>(value: Option<&String>) -> Option<T> {
        value.and_then(|v| v.parse().ok())
    }
    Some(DeadLetterMessage {
        order,
        dead_letter: DeadLetterInfo {
            reason: header(dlq_headers::REASON).cloned().unwrap_or_else(|| "unknown".into()),
            original_partition: number(header(dlq_headers::ORIGINAL_PARTITION)).unwrap_or(-1),
            original_offset: number(header(dlq_headers::ORIGINAL_OFFSET)).unwrap_or(-1),
            failed_at_ms: number(header(dlq_headers::FAILED_AT_MS)).unwrap_or(0),
        },
    })
}

/// Every dead letter, one per `request_id/attempt`, oldest first, with whether it is pending.
pub async fn list(bootstrap: &str, redis: &Redis) -> Result<DlqReport, DlqError> {
    let bootstrap = bootstrap.to_string();
    let records = tokio::task::spawn_blocking(move || read_all(&bootstrap, DLQ_TOPIC, READ_LIMIT)).await??;
    let pending: Vec<String> = redis
        .call(
            |mut c| async move { redis::cmd("ZRANGE").arg(keys::DLQ_PENDING).arg(0).arg(-1).query_async(&mut c).await },
        )
        .await?;
    let pending: HashSet<String> = pending.into_iter().collect();
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for record in records {
        let Some(DeadLetterMessage { order, dead_letter }) = letter_of(&record) else { continue };
        let member = keys::dlq_member(&order.request_id, order.attempt);
        if !seen.insert(member.clone()) {
            continue; // a duplicate dead letter of the same attempt
        }
        entries.push(DlqEntry {
            reason: dead_letter.reason,
            failed_at_ms: dead_letter.failed_at_ms,
            pending: pending.contains(&member),
            order,
        });
    }
    entries.sort_by_key(|e| e.failed_at_ms);
    let mut reasons = BTreeMap::new();
    for e in entries.iter().filter(|e| e.pending) {
        *reasons.entry(e.reason.clone()).or_default() += 1;
    }
    let pending_count = entries.iter().filter(|e| e.pending).count();
    let oldest = entries.iter().find(|e| e.pending).map(|e| now_ms().saturating_sub(e.failed_at_ms) / 1000);
    Ok(DlqReport {
        pending: pending_count,
        replayed: entries.len() - pending_count,
        oldest_pending_age_s: oldest,
        reasons,
        entries,
    })
}

/// What `dlq replay` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// `request_id/attempt` sent back as the next attempt.
    pub replayed: Vec<String>,
    /// Left alone, with why.
    pub skipped: Vec<(String, String)>,
}

/// Replays up to `max` pending entries, oldest first.
pub async fn replay(
    bootstrap: &str,
    redis: &Redis,
    payment: &PaymentClient,
    max: usize,
) -> Result<ReplayReport, DlqError> {
    let report = list(bootstrap, redis).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()?;
    let mut out = ReplayReport::default();
    for entry in report.entries.into_iter().filter(|e| e.pending).take(max) {
        let order = &entry.order;
        let member = keys::dlq_member(&order.request_id, order.attempt);
        let state_key = keys::order_state(&order.request_id);
        let state: HashMap<String, String> =
            redis.call(|mut c| async move { redis::cmd("HGETALL").arg(state_key).query_async(&mut c).await }).await?;
        let status = state.get("status").map(String::as_str).unwrap_or("MISSING");
        let current: u32 = state.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
        if current > order.attempt {
            // Replayed before (the removal from pending was lost): nothing to do but tidy up.
            remove_pending(redis, &member).await?;
            out.skipped.push((member, format!("already replayed as attempt {current}")));
            continue;
        }
        if status != "FAILED_PAYMENT" {
            out.skipped.push((
                member,
                format!("order is {status}, not FAILED_PAYMENT yet; try again after the processor caught up"),
            ));
            continue;
        }
        // Make sure the failed attempt's charge can never land, and learn whether it did.
        match payment.cancel(&order.payment_key()).await {
            Ok(ChargeStatus::Cancelled) => {}
            Ok(ChargeStatus::Captured) => {
                out.skipped.push((member, "the failed attempt's charge was captured: money taken for a refunded order — refund it at the provider, then remove the entry".into()));
                continue;
            }
            Err(e) => {
                out.skipped.push((member, format!("payment provider unreachable ({e}); try again later")));
                continue;
            }
        }
        let next = OrderMessage { attempt: order.attempt + 1, ..order.clone() };
        let payload = serde_json::to_vec(&next).expect("an order serializes");
        // Like the gateway's orders, no headers (the payload has the correlation id, and its
        // attempt tells which dead letter it replays: `request_id/attempt − 1`).
        let record = FutureRecord::to(ORDERS_TOPIC).key(next.request_id.as_bytes()).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        remove_pending(redis, &member).await?;
        out.replayed.push(member);
    }
    Ok(out)
}

async fn remove_pending(redis: &Redis, member: &str) -> Result<(), RedisError> {
    let member = member.to_string();
    redis
        .call(|mut c| async move { redis::cmd("ZREM").arg(keys::DLQ_PENDING).arg(member).query_async::<i64>(&mut c).await })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8], headers: &[(&str, &str)]) -> Record {
        Record {
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: "k".into(),
            payload: payload.to_vec(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn order() -> OrderMessage {
        OrderMessage {
            request_id: "r1".into(),
            user_id: "u1".into(),
            item_id: "101".into(),
            amount: 2,
            correlation_id: "c1".into(),
            accepted_at_ms: 5,
            attempt: 3,
        }
    }

    #[test]
    fn a_letter_reads_back_from_its_payload_and_is_still_an_order() {
        let letter = DeadLetterMessage {
            order: order(),
            dead_letter: DeadLetterInfo {
                reason: "payment_timeout".into(),
                original_partition: 4,
                original_offset: 77,
                failed_at_ms: 1234,
            },
        };
        let payload = serde_json::to_vec(&letter).unwrap();
        assert_eq!(letter_of(&record(&payload, &[])), Some(letter));
        // A reader that only knows orders (an older `dlq` or drill) still reads the order.
        assert_eq!(serde_json::from_slice::<OrderMessage>(&payload).unwrap(), order());
    }

    #[test]
    fn a_letter_written_with_headers_reads_from_them() {
        let payload = serde_json::to_vec(&order()).unwrap();
        let headers = [
            ("reason", "payment_error"),
            ("failed_at_ms", "99"),
            ("original_offset", "8"),
            ("original_partition", "1"),
        ];
        let letter = letter_of(&record(&payload, &headers)).unwrap();
        assert_eq!(letter.order, order());
        assert_eq!(
            letter.dead_letter,
            DeadLetterInfo {
                reason: "payment_error".into(),
                original_partition: 1,
                original_offset: 8,
                failed_at_ms: 99
            }
        );
        let bare = letter_of(&record(&payload, &[])).unwrap();
        assert_eq!((bare.dead_letter.reason.as_str(), bare.dead_letter.failed_at_ms), ("unknown", 0));
        assert_eq!(letter_of(&record(b"not json", &headers)), None);
    }
}
