//! Redis key names, shared by the gateway, the processor and the admin commands. The runbook's
//! diagnosis steps (`GET inventory:101`, `KEYS order_status:*`, `KEYS ratelimit:*`) use them.

/// Units of an item left to sell.
pub fn inventory(item_id: &str) -> String {
    format!("inventory:{item_id}")
}

/// An order's status: `PENDING`, then one terminal status.
pub fn order_status(request_id: &str) -> String {
    format!("order_status:{request_id}")
}

/// A user's recent requests, for the sliding-window rate limit.
pub fn rate_limit(user_id: &str) -> String {
    format!("ratelimit:{user_id}")
}

/// The status an order has from the moment the gateway takes it until the processor decides.
pub const STATUS_PENDING: &str = "PENDING";
/// The gateway could not tell whether the broker took the order (its produce timed out after
/// the order may have been sent): it may be queued. A retry with the same `request_id` may
/// claim it again; the processor gives one `request_id` at most one effect.
pub const STATUS_UNKNOWN: &str = "UNKNOWN";

/// The processor's durable state of an order: a hash with `status` and `attempt`. Unlike
/// `order_status:*` (the gateway's 30-minute idempotency window) it lives `ORDER_STATE_TTL`
/// (7 days), so a redelivered message days later still finds its order decided.
pub fn order_state(request_id: &str) -> String {
    format!("order:{request_id}")
}

/// Dead-lettered order attempts not replayed yet: a sorted set of `request_id/attempt` scored by
/// the time they failed (ms). `processor_dlq_size` and the oldest age come from here.
pub const DLQ_PENDING: &str = "dlq:pending";

/// A DLQ entry's member in [`DLQ_PENDING`].
pub fn dlq_member(request_id: &str, attempt: u32) -> String {
    format!("{request_id}/{attempt}")
}

/// The degradation switch (`flashsale degrade`): a hash with `admit_per_s` and `since_ms` while
/// on, absent while off. Every gateway follows it.
pub const DEGRADE: &str = "degrade";

/// The buyer's status of an order whose payment is deferred through a provider outage
/// ("payment system busy"; `PAYMENT_OUTAGE_MODE=defer`).
pub const STATUS_PAYMENT_PENDING: &str = "PAYMENT_PENDING";

/// Deferred payments: a sorted set of `request_id/attempt` scored by when each is due again (ms).
pub const PAYMENTS_DEFERRED: &str = "payments:deferred";

/// A deferred payment's order (`order`, JSON), `deadline_ms`, `tries`, and the `partition` and
/// `offset` it came from. `member` is `request_id/attempt`.
pub fn deferred_payment(member: &str) -> String {
    format!("{DEFERRED_PAYMENT_PREFIX}{member}")
}

/// What [`deferred_payment`] puts before the member (a script builds the key from it).
pub const DEFERRED_PAYMENT_PREFIX: &str = "deferred:";
