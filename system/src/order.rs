//! The order as it travels on the `orders` topic, from the gateway to the processor.

use serde::{Deserialize, Serialize};

/// The topic the gateway queues orders on.
pub const ORDERS_TOPIC: &str = "orders";
/// The Kafka header carrying the correlation id from the gateway to the processor's logs.
pub const CORRELATION_HEADER: &str = "correlation_id";

/// One queued order. The message key is `request_id` (see [`crate::gateway::queue`] for why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    pub request_id: String,
    pub user_id: String,
    pub item_id: String,
    pub amount: u32,
    pub correlation_id: String,
    /// When the gateway accepted it, milliseconds since the Unix epoch.
    pub accepted_at_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
