//! Payments deferred through a provider outage (`PAYMENT_OUTAGE_MODE=defer`), as the four-layer
//! article says: "record orders locally and notify users once restored".
//!
//! When a charge gets no clear answer (the provider down, timing out, failing), the order is not
//! refunded at once: it keeps its reserved units, the buyer's status says `PAYMENT_PENDING`
//! ("payment system busy"), and the attempt is kept in Redis ([`keys::PAYMENTS_DEFERRED`], a
//! sorted set by when it is next due, and [`keys::deferred_payment`], the order). The Kafka
//! offset is then committed: Redis holds the order from here.
//!
//! Every processor runs [`retry_due`]: it leases the due entries (so that two processors do not
//! work one at a time), and charges each again **with the same payment key** — the provider
//! takes a key at most once, so a charge that did go through during the outage is found, never
//! taken twice. Captured → `COMPLETED`; no answer → again after a back-off (1 s doubling to 30 s);
//! past `PAYMENT_DEFER_LIMIT` (10 min) from the first failure → the key is cancelled at the
//! provider (which says whether it had captured after all) and the order is refunded,
//! dead-lettered and `FAILED_PAYMENT`, as in `refund` mode. Each decision goes out on
//! `order-outcomes`: that is the buyer's notification. A processor that dies holding a lease
//! leaves the entry to another once the lease ([`LEASE`]) runs out.
//!
//! `processor_payments_deferred` is the number of entries waiting; the lab's drain waits for it
//! to reach 0 (a deferred order is in flight, not decided).

use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::handle::{OrderWorker, StepError};
use super::publish::Origin;
use crate::keys;
use crate::order::{now_ms, OrderMessage};
use crate::payment::client::ChargeAnswer;
use crate::redis_conn::{Redis, RedisError};

/// How long a processor holds a due entry while it works on it: longer than one try (a charge,
/// at the deadline a resolve of up to `PAYMENT_RESOLVE_TIMEOUT`, the decision published).
pub const LEASE: Duration = Duration::from_secs(30);
/// How often each processor looks for due entries.
const POLL: Duration = Duration::from_millis(500);
/// Entries taken per look, tried side by side. A full batch is followed by the next look at
/// once: after an outage the whole backlog is due within seconds (1,613 orders at scale 1 took
/// 26 s to settle at 32 per half second).
const BATCH: usize = 256;
/// The first wait after a failed try; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the operator chose for a charge without a clear answer (`PAYMENT_OUTAGE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageMode {
    /// Resolve the charge at once; not captured → refund, dead letter, `FAILED_PAYMENT` (the
    /// runbook's DLQ replay takes it from there).
    Refund,
    /// Keep the order and its units, retry the same charge until `PAYMENT_DEFER_LIMIT`.
    Defer,
}

/// Defers an attempt that is `RESERVED`: its entry (kept if it exists: a redelivery does not
/// restart the clock) and the buyer's `PAYMENT_PENDING`. 0 if the attempt is not `RESERVED`.
const DEFER_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'RESERVED' or tonumber(redis.call('HGET', KEYS[1], 'attempt')) ~= tonumber(ARGV[1]) then
  return 0
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'order', ARGV[5], 'deadline_ms', ARGV[4], 'tries', 1, 'partition', ARGV[7], 'offset', ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
end
redis.call('SET', KEYS[2], 'PAYMENT_PENDING', 'PX', ARGV[6])
return 1
"#;

/// Leases up to ARGV[3] entries due by ARGV[1] until ARGV[2]; returns member, order, deadline,
/// tries, partition, offset for each. An entry whose order is gone is dropped. ARGV[4] is
/// [`keys::DEFERRED_PAYMENT_PREFIX`].
const CLAIM_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(due) do
  local entry = redis.call('HMGET', ARGV[4] .. member, 'order', 'deadline_ms', 'tries', 'partition', 'offset')
  if entry[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
    table.insert(out, {member, entry[1], entry[2], entry[3], entry[4] or '0', entry[5] or '0'})
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"#;

/// One deferred attempt, leased.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub member: String,
    pub order: OrderMessage,
    pub deadline_ms: u64,
    pub tries: u32,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Deferrals {
    redis: Redis,
    defer: Script,
    claim: Script,
    limit: Duration,
    status_ttl: Duration,
}

impl Deferrals {
    pub fn new(redis: Redis, limit: Duration, status_ttl: Duration) -> Deferrals {
        Deferrals { redis, defer: Script::new(DEFER_LUA), claim: Script::new(CLAIM_LUA), limit, status_ttl }
    }

    /// Keeps `order` for later: `Ok(false)` if its attempt is no longer `RESERVED` (decided by
    /// another copy meanwhile).
    pub async fn defer(&self, order: &OrderMessage, origin: Origin) -> Result<bool, RedisError> {
        let member = keys::dlq_member(&order.request_id, order.attempt);
        let now = now_ms();
        let json = serde_json::to_string(order).unwrap_or_default();
        let mut call = self.defer.prepare_invoke();
        call.key(keys::order_state(&order.request_id))
            .key(keys::order_status(&order.request_id))
            .key(keys::PAYMENTS_DEFERRED)
            .key(keys::deferred_payment(&member))
            .arg(order.attempt)
            .arg(&member)
            .arg(now + FIRST_BACKOFF.as_millis() as u64)
            .arg(now + self.limit.as_millis() as u64)
            .arg(json)
            .arg(self.status_ttl.as_millis() as u64)
            .arg(origin.partition)
            .arg(origin.offset);
        let done: i64 = self.redis.call_durable(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok(done == 1)
    }

    /// Leases the entries due now.
    pub async fn claim_due(&self) -> Result<Vec<Deferred>, RedisError> {
        let now = now_ms();
        let mut call = self.claim.prepare_invoke();
        call.key(keys::PAYMENTS_DEFERRED)
            .arg(now)
            .arg(now + LEASE.as_millis() as u64)
            .arg(BATCH)
            .arg(keys::DEFERRED_PAYMENT_PREFIX);
        let rows: Vec<(String, String, u64, u32, i32, i64)> =
            self.redis.call(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(member, json, deadline_ms, tries, partition, offset)| {
                let order = serde_json::from_str(&json).ok()?;
                Some(Deferred { member, order, deadline_ms, tries, origin: Origin { partition, offset } })
            })
            .collect())
    }

    /// Due again after the back-off of `tries` failed tries.
    pub async fn reschedule(&self, entry: &Deferred) -> Result<(), RedisError> {
        let next = now_ms() + backoff(entry.tries).as_millis() as u64;
        let (member, key, tries) = (entry.member.clone(), keys::deferred_payment(&entry.member), entry.tries + 1);
        self.redis
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("ZADD")
                    .arg(keys::PAYMENTS_DEFERRED)
                    .arg("XX")
                    .arg(next)
                    .arg(&member)
                    .ignore()
                    .cmd("HSET")
                    .arg(&key)
                    .arg("tries")
                    .arg(tries)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// The entry is done with (its order decided).
    pub async fn forget(&self, member: &str) -> Result<(), RedisError> {
        let (member, key) = (member.to_string(), keys::deferred_payment(member));
        self.redis
            .call_durable(|mut c| async move {
                redis::pipe()
                    .cmd("ZREM")
                    .arg(keys::PAYMENTS_DEFERRED)
                    .arg(&member)
                    .ignore()
                    .cmd("DEL")
                    .arg(&key)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// How many wait.
    pub async fn waiting(redis: &Redis) -> Result<i64, RedisError> {
        redis
            .call(|mut c| async move { redis::cmd("ZCARD").arg(keys::PAYMENTS_DEFERRED).query_async(&mut c).await })
            .await
    }
}

/// The wait after `tries` failed tries: 1 s, 2 s, 4 s … at most 30 s.
pub fn backoff(tries: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(tries.saturating_sub(1).min(16))).min(MAX_BACKOFF)
}

/// Works on the due deferred payments every [`POLL`] (at once again after a full batch), until
/// the processor stops it.
pub async fn retry_due(worker: OrderWorker, deferrals: Deferrals) {
    loop {
        let mut full = false;
        match deferrals.claim_due().await {
            Ok(due) => {
                full = due.len() == BATCH;
                // Side by side, so that a batch of slow tries ends within its lease.
                let tries: Vec<_> = due
                    .into_iter()
                    .map(|entry| {
                        let (worker, deferrals) = (worker.clone(), deferrals.clone());
                        tokio::spawn(async move {
                            if let Err(e) = retry_one(&worker, &deferrals, &entry).await {
                                // The lease runs out and the entry is tried again.
                                tracing::warn!(service = "processor", event = "deferred_retry_failed", request_id = %entry.order.request_id, error = %e, "Deferred payment not settled; tried again after the lease");
                            }
                        })
                    })
                    .collect();
                for t in tries {
                    let _ = t.await;
                }
            }
            Err(e) => {
                tracing::warn!(service = "processor", event = "deferred_claim_failed", error = %e, "Cannot read the deferred payments")
            }
        }
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One try of one entry: captured → completed; no answer → later, or past the deadline →
/// resolved at the provider and refunded if not captured.
async fn retry_one(worker: &OrderWorker, deferrals: &Deferrals, entry: &Deferred) -> Result<(), StepError> {
    let started = Instant::now();
    let order = &entry.order;
    let key = order.payment_key();
    let settled = match worker.payment.charge(&key, &order.user_id, order.amount).await {
        ChargeAnswer::Captured => Ok(()),
        ChargeAnswer::KeyCancelled => Err("payment_cancelled"),
        ChargeAnswer::Unknown { reason, detail } => {
            worker.metrics.payments.with_label_values(&["deferred"]).inc();
            if now_ms() < entry.deadline_ms {
                tracing::info!(service = "processor", event = "payment_still_deferred", request_id = %order.request_id, tries = entry.tries, reason, %detail, "Provider still without a clear answer; trying again later");
                deferrals.reschedule(entry).await?;
                return Ok(());
            }
            tracing::warn!(service = "processor", event = "payment_defer_expired", request_id = %order.request_id, tries = entry.tries, "Deferred past PAYMENT_DEFER_LIMIT; resolving and refunding");
            worker.resolve(&key, reason).await
        }
    };
    worker.metrics.deferred_settled.with_label_values(&[if settled.is_ok() { "captured" } else { "refunded" }]).inc();
    worker.settle(order, entry.origin, settled, started).await?;
    deferrals.forget(&entry.member).await?;
    // At once, not at the next refresh: the lab's drain reads it.
    let waiting = &worker.metrics.payments_deferred;
    waiting.set((waiting.get() - 1).max(0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_from_one_second_to_thirty() {
        let waits: Vec<u64> = (1..=8).map(|t| backoff(t).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(0), FIRST_BACKOFF);
    }
}
