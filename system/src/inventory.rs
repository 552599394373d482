//! Stock per item: `inventory:<item_id>` in Redis, changed by the admin commands
//! `flashsale stock set|add|get`. Every change is also recorded on `inventory-events`, which is
//! what `flashsale reconcile` counts from after Redis is lost. (The processor's atomic
//! reservation lives in [`crate::processor::reservation`].)

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::gateway::queue::{ensure_topics, QueueError};
use crate::gateway::validate::is_valid_id;
use crate::keys;
use crate::order::{now_ms, InventoryChange, InventoryEvent, INVENTORY_TOPIC};
use crate::redis_conn::{Redis, RedisError};

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("item id {0:?} is not valid: 1 to 100 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadItem(String),
    #[error("stock of {item} holds {value:?}, not a whole number")]
    Corrupt { item: String, value: String },
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("recording the change on {INVENTORY_TOPIC}: {0}")]
    Record(#[from] QueueError),
}

/// Sets (`Set`) or raises (`Add`) the units left of `item`, and records the change durably
/// first: a change Redis has but the record lacks would be undone by `reconcile --fix`.
pub async fn change(
    redis: &Redis,
    bootstrap: &str,
    item: &str,
    kind: InventoryChange,
    quantity: u64,
) -> Result<i64, StockError> {
    check_item(item)?;
    record(bootstrap, &InventoryEvent { item_id: item.to_string(), kind, quantity, at_ms: now_ms() }).await?;
    let key = keys::inventory(item);
    let value = redis
        .call(|mut c| async move {
            match kind {
                InventoryChange::Set => {
                    redis::cmd("SET").arg(&key).arg(quantity).query_async::<()>(&mut c).await.map(|_| quantity as i64)
                }
                InventoryChange::Add => redis::cmd("INCRBY").arg(&key).arg(quantity).query_async::<i64>(&mut c).await,
            }
        })
        .await?;
    Ok(value)
}

async fn record(bootstrap: &str, event: &InventoryEvent) -> Result<(), QueueError> {
    ensure_topics(bootstrap, &[(INVENTORY_TOPIC, 1)], Duration::from_secs(10)).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()?;
    let payload = serde_json::to_vec(event)?;
    let record = FutureRecord::to(INVENTORY_TOPIC).key(event.item_id.as_bytes()).payload(&payload);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| QueueError::Kafka(e))?;
    Ok(())
}

/// The units left of `item`; `None` when it was never stocked.
pub async fn get(redis: &Redis, item: &str) -> Result<Option<i64>, StockError> {
    check_item(item)?;
    let key = keys::inventory(item);
    let value: Option<String> =
        redis.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await?;
    value.map(|v| v.parse::<i64>().map_err(|_| StockError::Corrupt { item: item.to_string(), value: v })).transpose()
}

fn check_item(item: &str) -> Result<(), StockError> {
    if is_valid_id(item) {
        Ok(())
    } else {
        Err(StockError::BadItem(item.to_string()))
    }
}
