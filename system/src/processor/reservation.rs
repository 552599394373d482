//! Where an order is reserved: the inventory scripts, each one atomic Redis step keyed by
//! `request_id` and attempt, so that a redelivered message never changes the result.
//!
//! - [`Reservations::reserve`]: an attempt that already has a decision is not touched again;
//!   stock ≥ amount → decrement and mark `RESERVED`; else `FAILED_SOLD_OUT` (with the stock it
//!   read, recorded on the outcome). Stock is never negative: the check and the decrement are
//!   one script. No inventory key at all (Redis lost its data, the item was never stocked) is
//!   *not* sold out: nothing is decided and the order is retried (bounded by
//!   `ORDER_RETRY_LIMIT`) until the stock exists — a restore brings it back.
//! - [`Reservations::complete`]: `RESERVED` → `COMPLETED` (this attempt only).
//! - [`Reservations::refund`]: `RESERVED` → `FAILED_PAYMENT` and the units go back (this attempt
//!   only, once).
//!
//! With `REDIS_WAIT_REPLICAS` set, each of the three is acknowledged only once that many
//! replicas have it (`WAIT` on the same connection): a failover cannot then take back a
//! reservation the processor went on to charge for.
//!
//! A status only moves forward: PENDING → RESERVED → one of COMPLETED, FAILED_SOLD_OUT,
//! FAILED_PAYMENT. The one way back into RESERVED is a DLQ replay, which is a new attempt of an
//! order whose last attempt ended in FAILED_PAYMENT.

use std::time::Duration;

use redis::Script;

use crate::bugs::{self, Bug};
use crate::keys;
use crate::order::OrderMessage;
use crate::redis_conn::{Redis, RedisError};

/// The reservation itself: the part of [`RESERVE_LUA`] after its check that the attempt has no
/// decision yet (a macro, so that both scripts are one literal each).
macro_rules! reserve_stock_lua {
    () => {
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing', 'MISSING', 0} end
local stock = tonumber(raw)
local next = 'FAILED_SOLD_OUT'
if stock >= tonumber(ARGV[1]) then
  stock = redis.call('DECRBY', KEYS[1], ARGV[1])
  next = 'RESERVED'
end
redis.call('HSET', KEYS[2], 'status', next, 'attempt', attempt)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], next, 'PX', ARGV[3])
return {next, next, stock}
"#
    };
}

const RESERVE_LUA: &str = concat!(
    r#"
local status = redis.call('HGET', KEYS[2], 'status')
local current = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
local attempt = tonumber(ARGV[2])
if status then
  if attempt == current and status == 'RESERVED' then return {'resume', status, current} end
  if attempt <= current or status ~= 'FAILED_PAYMENT' then return {'decided', status, current} end
end"#,
    reserve_stock_lua!()
);

const COMPLETE_LUA: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'RESERVED' and tonumber(redis.call('HGET', KEYS[1], 'attempt')) == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'status', 'COMPLETED')
  redis.call('SET', KEYS[2], 'COMPLETED', 'PX', ARGV[2])
  return 'COMPLETED'
end
return 'was:' .. (status or 'MISSING')
"#;

const REFUND_LUA: &str = r#"
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'RESERVED' and tonumber(redis.call('HGET', KEYS[2], 'attempt')) == tonumber(ARGV[2]) then
  local stock = redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[2], 'status', 'FAILED_PAYMENT')
  redis.call('SET', KEYS[3], 'FAILED_PAYMENT', 'PX', ARGV[3])
  return {'FAILED_PAYMENT', stock}
end
return {status or 'MISSING', -1}
"#;

/// `bugs::NotIdempotentConsumer`: RESERVE_LUA without its check — a redelivered order is
/// reserved again.
const RESERVE_AGAIN_LUA: &str = concat!("\nlocal attempt = tonumber(ARGV[2])", reserve_stock_lua!());

/// `bugs::NoRefundOnPaymentFailure`: the status moves, the units do not come back.
const NO_REFUND_LUA: &str = r#"
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'RESERVED' and tonumber(redis.call('HGET', KEYS[2], 'attempt')) == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], 'status', 'FAILED_PAYMENT')
  redis.call('SET', KEYS[3], 'FAILED_PAYMENT', 'PX', ARGV[3])
  return {'FAILED_PAYMENT', tonumber(redis.call('GET', KEYS[1]) or '0')}
end
return {status or 'MISSING', -1}
"#;

/// What [`Reservations::reserve`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Units taken now; `stock` left.
    Reserved { stock: i64 },
    /// Not enough stock: the attempt is `FAILED_SOLD_OUT`.
    SoldOut { stock: i64 },
    /// This attempt was reserved before (a redelivery after a crash): go on to payment.
    Resume,
    /// The order has a decision already: `status` of attempt `current`.
    Decided { status: String, current: u32 },
    /// The item has no inventory key: nothing can be decided now.
    Missing,
}

#[derive(Debug, Clone)]
pub struct Reservations {
    redis: Redis,
    reserve: Script,
    complete: Script,
    refund: Script,
    status_ttl: Duration,
    state_ttl: Duration,
}

impl Reservations {
    pub fn new(redis: Redis, status_ttl: Duration, state_ttl: Duration) -> Reservations {
        Reservations {
            redis,
            reserve: Script::new(RESERVE_LUA),
            complete: Script::new(COMPLETE_LUA),
            refund: Script::new(REFUND_LUA),
            status_ttl,
            state_ttl,
        }
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    pub async fn reserve(&self, order: &OrderMessage) -> Result<Reserve, RedisError> {
        if bugs::active(Bug::NonAtomicReserve) {
            return self.reserve_in_two_steps(order).await;
        }
        let script = if bugs::active(Bug::NotIdempotentConsumer) {
            Script::new(RESERVE_AGAIN_LUA)
        } else {
            self.reserve.clone()
        };
        let mut call = script.prepare_invoke();
        call.key(keys::inventory(&order.item_id))
            .key(keys::order_state(&order.request_id))
            .key(keys::order_status(&order.request_id))
            .arg(order.amount)
            .arg(order.attempt)
            .arg(self.status_ttl.as_millis() as u64)
            .arg(self.state_ttl.as_millis() as u64);
        let (kind, status, number): (String, String, i64) =
            self.redis.call_durable(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok(match kind.as_str() {
            "RESERVED" => Reserve::Reserved { stock: number },
            "FAILED_SOLD_OUT" => Reserve::SoldOut { stock: number },
            "resume" => Reserve::Resume,
            "missing" => Reserve::Missing,
            _ => Reserve::Decided { status, current: number.max(0) as u32 },
        })
    }

    /// `RESERVED` → `COMPLETED`. `Ok(true)` when this call made the move; `Ok(false)` when the
    /// attempt was no longer `RESERVED` (another copy of the order got there first).
    pub async fn complete(&self, order: &OrderMessage) -> Result<bool, RedisError> {
        let mut call = self.complete.prepare_invoke();
        call.key(keys::order_state(&order.request_id))
            .key(keys::order_status(&order.request_id))
            .arg(order.attempt)
            .arg(self.status_ttl.as_millis() as u64);
        let answer: String = self.redis.call_durable(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok(answer == "COMPLETED")
    }

    /// `RESERVED` → `FAILED_PAYMENT`, giving the units back; returns the status after the call
    /// and the stock if it was refunded now.
    pub async fn refund(&self, order: &OrderMessage) -> Result<(String, Option<i64>), RedisError> {
        let script =
            if bugs::active(Bug::NoRefundOnPaymentFailure) { Script::new(NO_REFUND_LUA) } else { self.refund.clone() };
        let mut call = script.prepare_invoke();
        call.key(keys::inventory(&order.item_id))
            .key(keys::order_state(&order.request_id))
            .key(keys::order_status(&order.request_id))
            .arg(order.amount)
            .arg(order.attempt)
            .arg(self.status_ttl.as_millis() as u64);
        let (status, stock): (String, i64) =
            self.redis.call_durable(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok((status, (stock >= 0).then_some(stock)))
    }

    /// `bugs::NonAtomicReserve`: the stock is read, then decremented in a second call — two
    /// copies of the processor (or two orders in flight) both see the last unit.
    async fn reserve_in_two_steps(&self, order: &OrderMessage) -> Result<Reserve, RedisError> {
        let state = keys::order_state(&order.request_id);
        let s = state.clone();
        let (status, current): (Option<String>, Option<u32>) =
            self.redis
                .call(|mut c| async move {
                    redis::cmd("HMGET").arg(s).arg("status").arg("attempt").query_async(&mut c).await
                })
                .await?;
        if let Some(status) = status {
            let current = current.unwrap_or(0);
            if order.attempt == current && status == "RESERVED" {
                return Ok(Reserve::Resume);
            }
            if order.attempt <= current || status != "FAILED_PAYMENT" {
                return Ok(Reserve::Decided { status, current });
            }
        }
        let inventory = keys::inventory(&order.item_id);
        let i = inventory.clone();
        let stock: Option<i64> =
            self.redis.call(|mut c| async move { redis::cmd("GET").arg(i).query_async(&mut c).await }).await?;
        if stock.is_none() {
            return Ok(Reserve::Missing);
        }
        // A network hop between the check and the act.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let (next, stock) = if stock.unwrap_or(0) >= i64::from(order.amount) {
            let amount = order.amount;
            let left: i64 = self
                .redis
                .call(|mut c| async move { redis::cmd("DECRBY").arg(inventory).arg(amount).query_async(&mut c).await })
                .await?;
            ("RESERVED", left)
        } else {
            ("FAILED_SOLD_OUT", stock.unwrap_or(0))
        };
        let (attempt, status_key) = (order.attempt, keys::order_status(&order.request_id));
        let (status_ttl, state_ttl) = (self.status_ttl.as_millis() as u64, self.state_ttl.as_millis() as u64);
        self.redis
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("HSET")
                    .arg(&state)
                    .arg("status")
                    .arg(next)
                    .arg("attempt")
                    .arg(attempt)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&state)
                    .arg(state_ttl)
                    .ignore()
                    .cmd("SET")
                    .arg(&status_key)
                    .arg(next)
                    .arg("PX")
                    .arg(status_ttl)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Ok(if next == "RESERVED" { Reserve::Reserved { stock } } else { Reserve::SoldOut { stock } })
    }
}
