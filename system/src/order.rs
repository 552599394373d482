//! The order as it travels between the services, and the topics it travels on.
//!
//! - `orders`: [`OrderMessage`] from the gateway (and from `flashsale dlq replay`) to the
//!   processor, key `request_id`, no headers (the correlation id is in the payload).
//! - `orders-dlq`: a [`DeadLetterMessage`] — the order whose payment failed and, beside it, why
//!   and where it came from. All in the payload: tansu 0.6.0 reads record headers from an
//!   unindexed table, one query per record, so a DLQ of 1,600 letters took 2 s to read with
//!   headers. Letters written before carried that in headers ([`dlq_headers`]); readers take
//!   either ([`crate::dlq::letter_of`]).
//! - `order-outcomes`: one [`Outcome`] per decided order attempt — the durable record that
//!   reconciliation trusts. At least once: a processor that crashed after publishing may publish
//!   the same outcome again, so readers keep one per `(request_id, attempt)`.
//! - `inventory-events`: every stock change made by `flashsale stock` ([`InventoryEvent`]).

use serde::{Deserialize, Serialize};

/// The topic the gateway queues orders on.
pub const ORDERS_TOPIC: &str = "orders";
/// Orders whose payment failed, waiting for `flashsale dlq replay`.
pub const DLQ_TOPIC: &str = "orders-dlq";
/// Decided orders.
pub const OUTCOMES_TOPIC: &str = "order-outcomes";
/// Stock set or added by the admin commands.
pub const INVENTORY_TOPIC: &str = "inventory-events";

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
    /// 1 for the gateway's order; each DLQ replay is the next attempt.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl OrderMessage {
    /// The payment provider's idempotency key of this attempt: `request_id/attempt`. A replay
    /// charges under a new key because the failed attempt's key was cancelled at the provider.
    pub fn payment_key(&self) -> String {
        format!("{}/{}", self.request_id, self.attempt)
    }
}

/// How an order attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Completed,
    FailedSoldOut,
    FailedPayment,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Completed => "COMPLETED",
            Decision::FailedSoldOut => "FAILED_SOLD_OUT",
            Decision::FailedPayment => "FAILED_PAYMENT",
        }
    }

    pub fn parse(status: &str) -> Option<Decision> {
        match status {
            "COMPLETED" => Some(Decision::Completed),
            "FAILED_SOLD_OUT" => Some(Decision::FailedSoldOut),
            "FAILED_PAYMENT" => Some(Decision::FailedPayment),
            _ => None,
        }
    }
}

/// A message on `order-outcomes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub request_id: String,
    pub user_id: String,
    pub item_id: String,
    pub amount: u32,
    pub attempt: u32,
    pub outcome: Decision,
    pub correlation_id: String,
    pub accepted_at_ms: u64,
    pub decided_at_ms: u64,
    /// For a reservation decision: the stock the reservation script read (`None` in records
    /// written before it was recorded, and for decisions that read no stock). A sold-out
    /// decision with `stock_seen ≥ amount` is a lie the checks catch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_seen: Option<i64>,
    /// The release of the processor that decided it (`FLASHSALE_RELEASE`; `None` when unset):
    /// after a bad release, the orders it touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// A message on `inventory-events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEvent {
    pub item_id: String,
    /// `set` replaces the stock, `add` restocks.
    pub kind: InventoryChange,
    pub quantity: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InventoryChange {
    Set,
    Add,
}

/// One message on `orders-dlq`: the order's own fields, and `dead_letter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterMessage {
    #[serde(flatten)]
    pub order: OrderMessage,
    pub dead_letter: DeadLetterInfo,
}

/// Why and where an order attempt was dead-lettered. Its attempt, correlation id and the time
/// the gateway accepted it are the order's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// `payment_timeout`, `payment_error`, `payment_unresolved`.
    pub reason: String,
    pub original_partition: i32,
    pub original_offset: i64,
    /// Milliseconds since the epoch.
    pub failed_at_ms: u64,
}

/// Header names of a DLQ message written before the payload carried [`DeadLetterInfo`]; read,
/// never written.
pub mod dlq_headers {
    /// `payment_timeout`, `payment_error`, `payment_unresolved`.
    pub const REASON: &str = "reason";
    pub const ATTEMPT: &str = "attempt";
    pub const ORIGINAL_PARTITION: &str = "original_partition";
    pub const ORIGINAL_OFFSET: &str = "original_offset";
    /// When the gateway accepted the order (ms since the epoch).
    pub const ORIGINAL_TIME_MS: &str = "original_time_ms";
    pub const FAILED_AT_MS: &str = "failed_at_ms";
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
