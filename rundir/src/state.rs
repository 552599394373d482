//! `final_state.json`: what the system holds after the drain (and, in a drill with a repair
//! step, just before the repair: `before_repair`). Raw records: every outcome record and dead
//! letter as written, duplicates kept, so the checks count effects, not a de-duplicated list.

use std::collections::BTreeMap;
use std::path::Path;

use flashsale::order::Outcome;
use serde::{Deserialize, Serialize};

/// An order's state in Redis (`order:<request_id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderState {
    pub status: Option<String>,
    pub attempt: Option<u32>,
}

/// One capture in the provider's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capture {
    /// `request_id/attempt`.
    pub key: String,
    pub amount: u64,
}

/// One dead letter, as written to `orders-dlq` (a letter written twice is here twice).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub request_id: String,
    pub attempt: u32,
    pub reason: String,
    /// Still in `dlq:pending` (not replayed).
    pub pending: bool,
}

/// The system's books at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct FinalState {
    /// When it was read (ms since the epoch).
    #[serde(default)]
    pub read_at_ms: u64,
    /// `inventory:<item>` per item (`None`: missing).
    pub stock: BTreeMap<String, Option<i64>>,
    /// Order states of every `request_id` the load sent.
    pub orders: BTreeMap<String, OrderState>,
    /// Every record on `orders-dlq`.
    pub dlq: Vec<DeadLetter>,
    /// Every capture in the provider's ledger.
    pub captures: Vec<Capture>,
    /// Every record on `order-outcomes`, duplicates kept.
    pub outcomes: Vec<Outcome>,
    /// `(request_id, attempt)` of every record on `orders` (what the gateways queued, and
    /// replays).
    pub queued: Vec<(String, u32)>,
}

/// `final_state.json`: the state after the drain, and the state just before the first repair
/// step when the drill had one.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct States {
    #[serde(flatten)]
    pub after: FinalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_repair: Option<Box<FinalState>>,
}

pub fn read(path: &Path) -> Result<States, crate::RunDirError> {
    crate::io::read_json(path)
}

pub fn write(path: &Path, states: &States) -> Result<(), crate::RunDirError> {
    crate::io::write_json(path, states)
}

/// Each order's first decision: of its outcome records (a redelivered order can have several),
/// the one decided earliest, by `request_id`. What time to decision and payment success judge.
pub fn first_decisions<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> BTreeMap<&'a str, &'a Outcome> {
    let mut first: BTreeMap<&str, &Outcome> = BTreeMap::new();
    for o in outcomes {
        let e = first.entry(o.request_id.as_str()).or_insert(o);
        if o.decided_at_ms < e.decided_at_ms {
            *e = o;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale::order::Decision;

    fn outcome(id: &str, decided_at_ms: u64, outcome: Decision) -> Outcome {
        Outcome {
            request_id: id.into(),
            user_id: "u".into(),
            item_id: "i".into(),
            amount: 1,
            attempt: 1,
            outcome,
            correlation_id: String::new(),
            accepted_at_ms: 0,
            decided_at_ms,
            stock_seen: None,
            release: None,
        }
    }

    #[test]
    fn the_earliest_record_of_an_order_is_its_first_decision() {
        let records = [
            outcome("a", 30, Decision::Completed),
            outcome("a", 10, Decision::FailedPayment),
            outcome("b", 5, Decision::Completed),
            outcome("a", 20, Decision::Completed),
        ];
        let first = first_decisions(&records);
        assert_eq!(first.len(), 2);
        assert_eq!((first["a"].decided_at_ms, first["a"].outcome), (10, Decision::FailedPayment));
        assert_eq!(first["b"].decided_at_ms, 5);
    }
}
