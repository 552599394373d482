//! `flashsale reconcile [--fix]`: the runbook's inventory and money checks, from the durable
//! records.
//!
//! - **Stock**: the true stock of each item is its last `set` on `inventory-events`, plus the
//!   `add`s after it, minus the units of the orders `COMPLETED` on `order-outcomes` after that
//!   set. It is compared with `inventory:<item>` in Redis.
//! - **Order states**: each decided attempt's status in Redis (`order:<request_id>`) against its
//!   outcome.
//! - **Money**: the provider's ledger against the completed orders, both ways, same amounts:
//!   every capture belongs to a completed attempt, every completed attempt has its capture.
//!
//! Run it once the system is drained (orders in flight hold reserved units that no record
//! shows yet). `--fix` rewrites Redis from the records — stock and order states — for after a
//! restore; money mismatches cannot be fixed from here and stay reported.
//!
//! `--fix` writes only when nothing can be in flight, one of two ways ([`Fix`]): drained (every
//! queued order decided), or **processors stopped** — the runbook's data-corruption procedure
//! (stop services, restore, verify inventory, restart): the consumer group must have no member
//! (asked of the broker where it can answer, waiting out a killed member's session; tansu 0.6.0
//! cannot, and the flag is then the operator's word), orders may wait queued, and an
//! undecided attempt that Redis already shows `RESERVED` keeps its units held (a restarted
//! processor resumes it without reserving again). Sales stopped while the restored state is
//! rolled forward is what keeps a restore from selling the same units twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::keys;
use crate::order::{
    Decision, InventoryChange, InventoryEvent, OrderMessage, Outcome, INVENTORY_TOPIC, ORDERS_TOPIC, OUTCOMES_TOPIC,
};
use crate::payment::client::PaymentClient;
use crate::redis_conn::{Redis, RedisError};
use crate::topic_reader::{read_all, read_existing, ReadError};

const READ_LIMIT: Duration = Duration::from_secs(120);
/// How long `--processors-stopped` waits for the group to empty: a member killed without
/// leaving is listed until its session times out (10 s in the processor), plus the broker's
/// noticing it.
const STOPPED_WAIT: Duration = Duration::from_secs(30);

/// What [`reconcile`] may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// Only compare.
    No,
    /// Rewrite Redis; every queued order must be decided (the system drained).
    Drained,
    /// Rewrite Redis with every processor stopped: the group must have no member; queued orders
    /// may wait undecided and the units of their `RESERVED` attempts stay held.
    ProcessorsStopped,
}

/// Redis commands per pipeline when checking or fixing order states.
const PIPELINE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("payment ledger: {0}")]
    Ledger(String),
    #[error("reading the records: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// `--fix` with orders still undecided: their reservations would be "fixed" back into the
    /// stock (the runbook: reconcile once nothing is in flight).
    #[error("refusing to fix: {count} queued order(s) have no decision yet (e.g. {examples}); drain first (wait until the processors are idle), then run reconcile --fix again")]
    NotDrained { count: usize, examples: String },
    /// `--fix --processors-stopped` while the group still has members.
    #[error("refusing to fix: the processors' consumer group still has {} member(s) after {STOPPED_WAIT:?} (e.g. {}); stop every processor first", members.len(), members.iter().take(3).cloned().collect::<Vec<_>>().join(", "))]
    ProcessorsRunning { members: Vec<String> },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemRow {
    pub item_id: String,
    pub initial: u64,
    pub added: u64,
    pub completed: u64,
    /// Units reserved by attempts not decided yet (with the processors stopped).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held: u64,
    pub expected: i64,
    /// `None`: no `inventory:<item>` in Redis.
    pub redis: Option<i64>,
    /// With `--fix`, what Redis held before it was rewritten (the drift is `expected − was`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<i64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ItemRow {
    pub fn ok(&self) -> bool {
        self.redis == Some(self.expected)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub items: Vec<ItemRow>,
    /// `request_id/attempt` completed without a capture.
    pub completed_without_capture: Vec<String>,
    /// Capture keys with no completed attempt.
    pub captures_without_order: Vec<String>,
    /// `(key, captured amount, ordered amount)`.
    pub amount_mismatches: Vec<(String, u64, u32)>,
    /// `(request_id, redis status, recorded outcome)` for the latest attempt of each order.
    pub state_mismatches: Vec<(String, String, String)>,
    pub outcomes: usize,
    pub captures: usize,
    /// Queued attempts with no decision yet (only read with `--fix`).
    pub undecided: usize,
    /// What `--fix` rewrote.
    pub fixed_items: usize,
    pub fixed_states: usize,
}

impl Report {
    pub fn stock_ok(&self) -> bool {
        self.items.iter().all(ItemRow::ok) && self.state_mismatches.is_empty()
    }

    pub fn money_ok(&self) -> bool {
        self.completed_without_capture.is_empty()
            && self.captures_without_order.is_empty()
            && self.amount_mismatches.is_empty()
    }
}

/// The latest decision of each order attempt, one per `request_id/attempt`.
pub fn decisions(outcomes: impl IntoIterator<Item = Outcome>) -> BTreeMap<(String, u32), Outcome> {
    let mut by_attempt = BTreeMap::new();
    for outcome in outcomes {
        by_attempt.entry((outcome.request_id.clone(), outcome.attempt)).or_insert(outcome);
    }
    by_attempt
}

/// The true stock per item: `(initial, added, completed)` from the records.
pub fn true_stock(
    events: &[InventoryEvent],
    decided: &BTreeMap<(String, u32), Outcome>,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut last_set: HashMap<&str, (u64, u64)> = HashMap::new(); // item → (value, at)
    for e in events.iter().filter(|e| e.kind == InventoryChange::Set) {
        last_set.insert(&e.item_id, (e.quantity, e.at_ms));
    }
    let mut stock: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in events {
        let (initial, set_at) = last_set.get(e.item_id.as_str()).copied().unwrap_or((0, 0));
        let row = stock.entry(e.item_id.clone()).or_insert((initial, 0, 0));
        if e.kind == InventoryChange::Add && e.at_ms >= set_at {
            row.1 += e.quantity;
        }
    }
    for outcome in decided.values().filter(|o| o.outcome == Decision::Completed) {
        let set_at = last_set.get(outcome.item_id.as_str()).map(|(_, at)| *at).unwrap_or(0);
        if outcome.decided_at_ms >= set_at {
            let row = stock.entry(outcome.item_id.clone()).or_insert((0, 0, 0));
            row.2 += u64::from(outcome.amount);
        }
    }
    stock
}

/// Compares the records with Redis and the ledger; with `fix`, rewrites Redis first.
pub async fn reconcile(
    bootstrap: &str,
    redis: &Redis,
    payment: &PaymentClient,
    fix: Fix,
) -> Result<Report, ReconcileError> {
    if fix == Fix::ProcessorsStopped {
        wait_for_empty_group(bootstrap).await?;
    }
    let b = bootstrap.to_string();
    let writes = fix != Fix::No;
    // With --fix, a topic that cannot be read is an error, never an empty list (the stock would
    // be rewritten as −completed), and every queued order is looked at.
    let (outcome_records, event_records, queued) = tokio::task::spawn_blocking(move || {
        let read = if writes { read_existing } else { read_all };
        let queued = if writes { Some(read_existing(&b, ORDERS_TOPIC, READ_LIMIT)?) } else { None };
        Ok::<_, ReadError>((read(&b, OUTCOMES_TOPIC, READ_LIMIT)?, read(&b, INVENTORY_TOPIC, READ_LIMIT)?, queued))
    })
    .await??;
    let outcomes = outcome_records.iter().filter_map(|r| serde_json::from_slice::<Outcome>(&r.payload).ok());
    let decided = decisions(outcomes);
    let mut undecided: BTreeMap<(String, u32), OrderMessage> = BTreeMap::new();
    for m in queued.iter().flatten().filter_map(|r| serde_json::from_slice::<OrderMessage>(&r.payload).ok()) {
        let key = (m.request_id.clone(), m.attempt);
        if !decided.contains_key(&key) {
            undecided.entry(key).or_insert(m);
        }
    }
    if fix == Fix::Drained && !undecided.is_empty() {
        let examples =
            undecided.keys().take(3).map(|(id, attempt)| format!("{id}/{attempt}")).collect::<Vec<_>>().join(", ");
        return Err(ReconcileError::NotDrained { count: undecided.len(), examples });
    }
    let captures = payment.ledger().await.map_err(ReconcileError::Ledger)?;
    let paid: std::collections::HashSet<&str> = captures.iter().map(|c| c.request_id.as_str()).collect();
    let (held, reserved_again) = held_units(redis, &undecided, &paid, writes).await?;
    let events: Vec<InventoryEvent> =
        event_records.iter().filter_map(|r| serde_json::from_slice(&r.payload).ok()).collect();
    let stock = true_stock(&events, &decided);

    let mut report = Report {
        outcomes: decided.len(),
        captures: captures.len(),
        undecided: undecided.len(),
        fixed_states: reserved_again,
        ..Report::default()
    };

    // Money, both ways.
    let completed: HashMap<String, &Outcome> = decided
        .values()
        .filter(|o| o.outcome == Decision::Completed)
        .map(|o| (keys::dlq_member(&o.request_id, o.attempt), o))
        .collect();
    let captured: HashMap<&str, u64> = captures.iter().map(|c| (c.request_id.as_str(), c.amount)).collect();
    for (key, outcome) in &completed {
        match captured.get(key.as_str()) {
            None => report.completed_without_capture.push(key.clone()),
            Some(&amount) if amount != u64::from(outcome.amount) => {
                report.amount_mismatches.push((key.clone(), amount, outcome.amount))
            }
            Some(_) => {}
        }
    }
    // An attempt captured but not decided yet (queued behind stopped processors) is resumed and
    // completed by the processor with the same payment key: not a capture without an order.
    let in_hand: std::collections::HashSet<String> =
        undecided.keys().map(|(id, attempt)| keys::dlq_member(id, *attempt)).collect();
    for capture in &captures {
        if !completed.contains_key(&capture.request_id) && !in_hand.contains(&capture.request_id) {
            report.captures_without_order.push(capture.request_id.clone());
        }
    }

    // Order states: the latest attempt of each order.
    let mut latest: BTreeMap<&str, &Outcome> = BTreeMap::new();
    for ((request_id, _), outcome) in &decided {
        latest.insert(request_id.as_str(), outcome); // BTreeMap order: the last attempt wins
    }
    let latest: Vec<&Outcome> = latest.into_values().collect();
    for chunk in latest.chunks(PIPELINE) {
        let states = order_states(redis, chunk.iter().map(|o| o.request_id.as_str())).await?;
        let mut repair = redis::pipe();
        let mut repairs = 0;
        for (o, (status, attempt)) in chunk.iter().zip(states) {
            let attempt: Option<u32> = attempt.and_then(|a| a.parse().ok());
            if status.as_deref() != Some(o.outcome.as_str()) || attempt != Some(o.attempt) {
                report.state_mismatches.push((
                    o.request_id.clone(),
                    status.unwrap_or_else(|| "MISSING".into()),
                    o.outcome.as_str().into(),
                ));
                repair
                    .cmd("HSET")
                    .arg(keys::order_state(&o.request_id))
                    .arg("status")
                    .arg(o.outcome.as_str())
                    .arg("attempt")
                    .arg(o.attempt)
                    .ignore();
                repair.cmd("SET").arg(keys::order_status(&o.request_id)).arg(o.outcome.as_str()).ignore();
                repairs += 1;
            }
        }
        if writes && repairs > 0 {
            redis.call(|mut c| async move { repair.query_async::<()>(&mut c).await }).await?;
            report.fixed_states += repairs;
        }
    }

    // Stock.
    for (item_id, (initial, added, done)) in stock {
        let key = keys::inventory(&item_id);
        let value: Option<i64> =
            redis.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await?;
        let held = held.get(&item_id).copied().unwrap_or(0);
        let expected = initial as i64 + added as i64 - done as i64 - held as i64;
        let mut row = ItemRow { item_id, initial, added, completed: done, held, expected, redis: value, was: None };
        if writes && !row.ok() {
            let key = keys::inventory(&row.item_id);
            redis
                .call(|mut c| async move { redis::cmd("SET").arg(key).arg(expected).query_async::<()>(&mut c).await })
                .await?;
            report.fixed_items += 1;
            row.was = Some(row.redis.unwrap_or(0));
            row.redis = Some(expected);
        }
        report.items.push(row);
    }
    if writes {
        report.state_mismatches.clear(); // rewritten above
    }
    Ok(report)
}

/// Waits (bounded) until the processors' consumer group has no member. A broker that cannot
/// list a group's members (tansu 0.6.0 drops the connection on DescribeGroups) cannot vouch for
/// it: then the flag is the operator's word, and this says so on stderr.
async fn wait_for_empty_group(bootstrap: &str) -> Result<(), ReconcileError> {
    let deadline = tokio::time::Instant::now() + STOPPED_WAIT;
    loop {
        let b = bootstrap.to_string();
        let members = tokio::task::spawn_blocking(move || {
            crate::topic_reader::group_members(&b, crate::processor::GROUP, Duration::from_secs(5))
        })
        .await?;
        let members = match members {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "reconcile: the broker cannot list the consumer group's members ({e}); \
                     taking --processors-stopped on the operator's word"
                );
                return Ok(());
            }
        };
        if members.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ReconcileError::ProcessorsRunning { members });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `order:<id>` (status, attempt) of each request id, in one pipeline.
async fn order_states<'a>(
    redis: &Redis,
    request_ids: impl Iterator<Item = &'a str>,
) -> Result<Vec<(Option<String>, Option<String>)>, ReconcileError> {
    let mut pipe = redis::pipe();
    for id in request_ids {
        pipe.cmd("HMGET").arg(keys::order_state(id)).arg("status").arg("attempt");
    }
    Ok(redis.call(|mut c| async move { pipe.query_async(&mut c).await }).await?)
}

/// Per item, the units held by queued, undecided attempts — not in stock, since a restarted
/// processor resumes them without reserving again: those `RESERVED` in Redis, and those the
/// provider captured (`paid`, by payment key) whose reservation Redis no longer has — a restore
/// from a backup older than the reservation. Those were sold: with `writes`, each gets its
/// reservation back (`RESERVED`, its attempt), so that the processor resumes and completes it
/// with the same payment key instead of deciding it again (sold out, with the money taken).
/// Returns the units held per item and how many reservations were written back.
async fn held_units(
    redis: &Redis,
    undecided: &BTreeMap<(String, u32), OrderMessage>,
    paid: &std::collections::HashSet<&str>,
    writes: bool,
) -> Result<(BTreeMap<String, u64>, usize), ReconcileError> {
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut written = 0;
    let attempts: Vec<&OrderMessage> = undecided.values().collect();
    for chunk in attempts.chunks(PIPELINE) {
        let states = order_states(redis, chunk.iter().map(|m| m.request_id.as_str())).await?;
        let mut repair = redis::pipe();
        let mut repairs = 0;
        for (m, (status, attempt)) in chunk.iter().zip(states) {
            let attempt: Option<u32> = attempt.and_then(|a| a.parse().ok());
            let reserved = status.as_deref() == Some("RESERVED") && attempt == Some(m.attempt);
            let lost = !reserved && paid.contains(keys::dlq_member(&m.request_id, m.attempt).as_str());
            if reserved || (lost && writes) {
                *held.entry(m.item_id.clone()).or_default() += u64::from(m.amount);
            }
            if lost && writes {
                repair
                    .cmd("HSET")
                    .arg(keys::order_state(&m.request_id))
                    .arg("status")
                    .arg("RESERVED")
                    .arg("attempt")
                    .arg(m.attempt)
                    .ignore();
                repairs += 1;
            }
        }
        if repairs > 0 {
            redis.call(|mut c| async move { repair.query_async::<()>(&mut c).await }).await?;
            written += repairs;
        }
    }
    Ok((held, written))
}

/// The report as the table `flashsale reconcile` prints.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:>9} {:>7} {:>9} {:>6} {:>9} {:>9}  {}\n",
        "item", "initial", "added", "completed", "held", "expected", "redis", "ok"
    ));
    for r in &report.items {
        let redis = r.redis.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<20} {:>9} {:>7} {:>9} {:>6} {:>9} {:>9}  {}\n",
            r.item_id,
            r.initial,
            r.added,
            r.completed,
            r.held,
            r.expected,
            redis,
            if r.ok() { "yes" } else { "MISMATCH" }
        ));
    }
    out.push_str(&format!(
        "order attempts decided: {}; queued, not decided yet: {}; captures in the ledger: {}\n",
        report.outcomes, report.undecided, report.captures
    ));
    let list = |name: &str, items: &[String]| {
        if items.is_empty() {
            format!("{name}: none\n")
        } else {
            format!("{name}: {} (e.g. {})\n", items.len(), items.iter().take(5).cloned().collect::<Vec<_>>().join(", "))
        }
    };
    out.push_str(&list("completed without a capture", &report.completed_without_capture));
    out.push_str(&list("captures without a completed order", &report.captures_without_order));
    out.push_str(&format!("capture amounts differing from the order: {}\n", report.amount_mismatches.len()));
    let states: Vec<String> = report
        .state_mismatches
        .iter()
        .map(|(id, redis, outcome)| format!("{id} redis={redis} recorded={outcome}"))
        .collect();
    out.push_str(&list("order states differing from the records", &states));
    if report.fixed_items + report.fixed_states > 0 {
        out.push_str(&format!("fixed: {} item stocks, {} order states\n", report.fixed_items, report.fixed_states));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, attempt: u32, item: &str, amount: u32, decision: Decision, at: u64) -> Outcome {
        Outcome {
            request_id: id.into(),
            user_id: "u".into(),
            item_id: item.into(),
            amount,
            attempt,
            outcome: decision,
            correlation_id: "c".into(),
            accepted_at_ms: at,
            decided_at_ms: at,
            stock_seen: None,
            release: None,
        }
    }

    fn event(item: &str, kind: InventoryChange, quantity: u64, at_ms: u64) -> InventoryEvent {
        InventoryEvent { item_id: item.into(), kind, quantity, at_ms }
    }

    #[test]
    fn true_stock_counts_from_the_last_set_and_each_attempt_once() {
        let events = vec![
            event("a", InventoryChange::Set, 100, 10),
            event("a", InventoryChange::Add, 7, 5), // before the set: replaced by it
            event("a", InventoryChange::Set, 50, 20),
            event("a", InventoryChange::Add, 5, 30),
            event("b", InventoryChange::Set, 3, 1),
        ];
        let decided = decisions(vec![
            outcome("o1", 1, "a", 2, Decision::Completed, 15), // before the last set
            outcome("o2", 1, "a", 3, Decision::Completed, 25),
            outcome("o2", 1, "a", 3, Decision::Completed, 26), // duplicate outcome
            outcome("o3", 1, "a", 4, Decision::FailedPayment, 27),
            outcome("o3", 2, "a", 4, Decision::Completed, 40), // replay
            outcome("o4", 1, "b", 1, Decision::FailedSoldOut, 2),
        ]);
        let stock = true_stock(&events, &decided);
        assert_eq!(stock["a"], (50, 5, 7));
        assert_eq!(stock["b"], (3, 0, 0));
    }
}
