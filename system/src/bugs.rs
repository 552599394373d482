//! Known bugs, brought back on purpose to prove that the lab's drills catch them.
//!
//! Compiled in only with the `bugs` cargo feature — never in a default or release build, where
//! [`active`] is a constant `false` and the buggy paths are removed. With the feature, the
//! variable `FLASHSALE_BUG` (a comma-separated list of the names below) turns them on.
//!
//! | name | bug | caught by |
//! |---|---|---|
//! | `non_atomic_reserve` | stock checked, then decremented in a second step | oversell |
//! | `not_idempotent_consumer` | a redelivered order is reserved again | stock conservation |
//! | `commit_before_processing` | the offset is committed when an order arrives | lost orders |
//! | `no_refund_on_payment_failure` | a failed payment keeps the units | stock conservation |
//! | `gateway_burns_id_on_503` | a 503 keeps the `request_id` taken: the retry gets 409 | false duplicates |
//! | `payment_field_renamed` | the charge's `amount` is sent as `price`: the provider refuses every charge, each order is refunded and fails | the canary gate (`bad-release-canary`), the payment success SLO |

/// One of the bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    NonAtomicReserve,
    NotIdempotentConsumer,
    CommitBeforeProcessing,
    NoRefundOnPaymentFailure,
    GatewayBurnsIdOn503,
    PaymentFieldRenamed,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::NonAtomicReserve,
        Bug::NotIdempotentConsumer,
        Bug::CommitBeforeProcessing,
        Bug::NoRefundOnPaymentFailure,
        Bug::GatewayBurnsIdOn503,
        Bug::PaymentFieldRenamed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::NonAtomicReserve => "non_atomic_reserve",
            Bug::NotIdempotentConsumer => "not_idempotent_consumer",
            Bug::CommitBeforeProcessing => "commit_before_processing",
            Bug::NoRefundOnPaymentFailure => "no_refund_on_payment_failure",
            Bug::GatewayBurnsIdOn503 => "gateway_burns_id_on_503",
            Bug::PaymentFieldRenamed => "payment_field_renamed",
        }
    }
}

/// Whether `bug` is switched on (always `false` without the `bugs` feature).
#[cfg(not(feature = "bugs"))]
pub fn active(_bug: Bug) -> bool {
    false
}

/// Whether `bug` is switched on by `FLASHSALE_BUG`.
#[cfg(feature = "bugs")]
pub fn active(bug: Bug) -> bool {
    static ON: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let on = ON.get_or_init(|| {
        let list: Vec<String> = std::env::var("FLASHSALE_BUG")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for name in &list {
            if Bug::ALL.iter().all(|b| b.name() != name) {
                eprintln!("FLASHSALE_BUG: unknown bug {name:?}; known: {:?}", Bug::ALL.map(Bug::name));
            } else {
                eprintln!("FLASHSALE_BUG: {name} is ON — this build is broken on purpose");
            }
        }
        list
    });
    on.iter().any(|n| n == bug.name())
}
