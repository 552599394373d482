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
