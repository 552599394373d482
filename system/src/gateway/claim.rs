//! Where an order is admitted in Redis: the per-user sliding-window rate limit and the
//! idempotency claim on its `request_id`, in one atomic script (one round trip per order).
//!
//! The script, on Redis's own clock:
//! 1. drops the user's requests older than the window from `ratelimit:<user_id>` (a sorted set
//!    scored by arrival time); if `max_requests` remain, answers *limited* with the time until
//!    the oldest leaves the window (every request counts, duplicates too);
//! 2. records this request in the window;
//! 3. if `order_status:<request_id>` exists (and is not `UNKNOWN`), answers *duplicate* with the
//!    status;
//! 4. else sets it to `PENDING` (with the status TTL) and answers *claimed*.
//!
//! A claimed order that then certainly was not queued (breaker open, the broker refused it) is
//! [released](Claims::release): its status key is deleted if it still says `PENDING`, so the
//! client's retry of the same `request_id` can succeed — a 503 never burns an id. One whose
//! fate is unknown (the produce timed out after the order may have been sent) is
//! [marked unknown](Claims::mark_unknown): the buyer sees `UNKNOWN`, and a retry may claim it
//! again. A claim whose own call went unanswered (a timeout: Redis may have run it late) is
//! marked unknown in the background ([`Claims::mark_unknown_later`]) and answered 504, not 503: the
//! order was not queued, but its `request_id` may be taken for a few seconds.

use std::time::Duration;

use redis::Script;

use crate::gateway::validate::OrderRequest;
use crate::keys;
use crate::redis_conn::{Redis, RedisError};

/// The script (also run by `ci/bench-gateway` under redis-benchmark).
pub const CLAIM_LUA: &str = include_str!("claim.lua");

const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// PENDING → UNKNOWN, keeping the TTL; any other status (the processor decided meanwhile)
/// stays.
const MARK_UNKNOWN_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
return 0
"#;

/// The waits before each [`Claims::mark_unknown_later`] call.
const SETTLE_WAITS: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(3)];

/// What Redis said about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The `request_id` is this order's now; its status is `PENDING`.
    Claimed,
    /// The user is over the limit; retry after this long.
    RateLimited { retry_after: Duration },
    /// The `request_id` was taken before; its order has this status.
    Duplicate { status: String },
}

#[derive(Debug, Clone)]
pub struct Claims {
    redis: Redis,
    claim: Script,
    release: Script,
    mark_unknown: Script,
    window: Duration,
    max_requests: u32,
    status_ttl: Duration,
}

impl Claims {
    pub fn new(redis: Redis, window: Duration, max_requests: u32, status_ttl: Duration) -> Claims {
        Claims {
            redis,
            claim: Script::new(CLAIM_LUA),
            release: Script::new(RELEASE_LUA),
            mark_unknown: Script::new(MARK_UNKNOWN_LUA),
            window,
            max_requests,
            status_ttl,
        }
    }

    /// Rate-limits the user and claims the order's `request_id`, atomically.
    /// `unique` tells this request apart in the user's window (the correlation id).
    pub async fn claim(&self, order: &OrderRequest, unique: &str) -> Result<Claim, RedisError> {
        let invocation = || {
            let mut invocation = self.claim.prepare_invoke();
            invocation
                .key(keys::rate_limit(&order.user_id))
                .key(keys::order_status(&order.request_id))
                .arg(self.window.as_millis() as u64)
                .arg(self.max_requests)
                .arg(unique)
                .arg(self.status_ttl.as_millis() as u64)
                .arg(keys::STATUS_PENDING);
            invocation
        };
        // Refused by a demoted primary: again on the new one.
        let (kind, detail): (String, String) = self
            .redis
            .call_following(|mut c| {
                let invocation = invocation();
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        match kind.as_str() {
            "claimed" => Ok(Claim::Claimed),
            "limited" => {
                let retry_ms: u64 = detail.parse().unwrap_or(self.window.as_millis() as u64);
                Ok(Claim::RateLimited { retry_after: Duration::from_millis(retry_ms) })
            }
            _ => Ok(Claim::Duplicate { status: detail }),
        }
    }

    /// Gives the `request_id` back if its order is still `PENDING` (it was never queued).
    pub async fn release(&self, request_id: &str) -> Result<(), RedisError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(keys::order_status(request_id)).arg(keys::STATUS_PENDING);
        self.redis.call(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await }).await.map(|_| ())
    }

    /// Marks the order `UNKNOWN` if it is still `PENDING`: it may have been queued.
    pub async fn mark_unknown(&self, request_id: &str) -> Result<(), RedisError> {
        let mut invocation = self.mark_unknown.prepare_invoke();
        invocation.key(keys::order_status(request_id)).arg(keys::STATUS_PENDING).arg(keys::STATUS_UNKNOWN);
        self.redis.call(|mut c| async move { invocation.invoke_async::<redis::Value>(&mut c).await }).await.map(|_| ())
    }

    /// [`Claims::mark_unknown`] in the background, until one call is answered — at once, then after 1 s and 3 s more (bounded: three calls): for a claim whose
    /// own call went unanswered while Redis struggles, so that the `request_id` does not stay
    /// `PENDING` — taken by an order never queued — until its status expires.
    pub fn mark_unknown_later(&self, request_id: String) {
        let claims = self.clone();
        tokio::spawn(async move {
            for wait in SETTLE_WAITS {
                tokio::time::sleep(wait).await;
                match claims.mark_unknown(&request_id).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(event = "mark_unknown_retry", request_id = %request_id, error = %e, "Redis did not answer; trying again")
                    }
                }
            }
            tracing::error!(event = "mark_unknown_failed", request_id = %request_id, "request_id stays PENDING until its status expires");
        });
    }

    /// The order's status, if the `request_id` is known.
    pub async fn status(&self, request_id: &str) -> Result<Option<String>, RedisError> {
        let key = keys::order_status(request_id);
        self.redis.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await }).await
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }
}
