//! Reads a whole topic as it is now: every partition from its beginning up to the high
//! watermark seen at the start, without a consumer group. The admin commands and the tests use
//! it to look at `orders-dlq`, `order-outcomes` and `inventory-events`.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One message.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic} cannot be read: {problem}")]
    Unreadable { topic: String, problem: String },
    #[error("topic {topic}: {missing} messages still unread after {limit:?}")]
    Incomplete { topic: String, missing: i64, limit: Duration },
}

/// Every message of `topic`, bounded by `limit` in all. A topic that does not exist reads as
/// empty.
pub fn read_all(bootstrap: &str, topic: &str, limit: Duration) -> Result<Vec<Record>, ReadError> {
    read(bootstrap, topic, limit, false)
}

/// [`read_all`], but a topic that does not exist or whose metadata has an error is an error:
/// for readers that would do harm with an empty list (`reconcile --fix`).
pub fn read_existing(bootstrap: &str, topic: &str, limit: Duration) -> Result<Vec<Record>, ReadError> {
    read(bootstrap, topic, limit, true)
}

fn read(bootstrap: &str, topic: &str, limit: Duration, must_exist: bool) -> Result<Vec<Record>, ReadError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "flashsale-reader")
        .set("enable.auto.commit", "false")
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()?;
    let started = std::time::Instant::now();
    let metadata = consumer.fetch_metadata(Some(topic), limit)?;
    if must_exist {
        let problem = match metadata.topics().iter().find(|t| t.name() == topic) {
            None => Some("not in the broker's metadata".to_string()),
            Some(t) => t
                .error()
                .map(|e| rdkafka::types::RDKafkaErrorCode::from(e).to_string())
                .or_else(|| t.partitions().is_empty().then(|| "no partitions".to_string())),
        };
        if let Some(problem) = problem {
            return Err(ReadError::Unreadable { topic: topic.to_string(), problem });
        }
    }
    let partitions = partitions_of(&metadata);
    let mut high = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for &p in &partitions {
        let (low, hw) = consumer.fetch_watermarks(topic, p, limit)?;
        if hw > low {
            high.insert(p, hw);
            remaining += hw - low;
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    let mut records = Vec::with_capacity(remaining.max(0) as usize);
    if remaining == 0 {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    while remaining > 0 {
        if started.elapsed() >= limit {
            return Err(ReadError::Incomplete { topic: topic.to_string(), missing: remaining, limit });
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message?;
        if message.offset() >= high.get(&message.partition()).copied().unwrap_or(0) {
            continue;
        }
        remaining -= 1;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).to_string(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    Ok(records)
}

/// The partitions of the topics without an error in `metadata`.
fn partitions_of(metadata: &rdkafka::metadata::Metadata) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// How far consumer `group` is behind on `topic`, from the broker's side: per partition, the
/// group's committed offset (the low watermark if it never committed) and the end. Unlike a
/// consumer's own lag gauge, this also counts partitions nobody is assigned.
pub fn group_backlog(
    bootstrap: &str,
    group: &str,
    topic: &str,
    limit: Duration,
) -> Result<Vec<(i32, i64, i64)>, ReadError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()?;
    let partitions = partitions_of(&consumer.fetch_metadata(Some(topic), limit)?);
    if partitions.is_empty() {
        return Err(ReadError::Unreadable { topic: topic.to_string(), problem: "no partitions".into() });
    }
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, limit)?;
    let mut out = Vec::with_capacity(partitions.len());
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, limit)?;
        let done =
            committed.find_partition(topic, p).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0).unwrap_or(low);
        out.push((p, done, high));
    }
    Ok(out)
}

/// The members consumer `group` has now, as the broker's group coordinator tells it
/// (DescribeGroups). A member killed without leaving stays listed until the broker notices its
/// missed heartbeats (the session timeout).
pub fn group_members(bootstrap: &str, group: &str, limit: Duration) -> Result<Vec<String>, ReadError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "flashsale-reader")
        .set("socket.connection.setup.timeout.ms", "2000")
        .create()?;
    let list = consumer.fetch_group_list(Some(group), limit)?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members().iter().map(|m| format!("{} ({})", m.id(), m.client_host())))
        .collect())
}
