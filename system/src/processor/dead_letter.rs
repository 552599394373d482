//! Where a failed payment's dead letter is written once: a lease on dead-lettering one attempt.
//!
//! Two copies of one order attempt can reach its payment failure at the same moment, in two
//! processors: during a consumer-group rebalance the old owner still has the message in hand
//! while the new one is given its partition (`bad-release-canary` caught the candidate and a
//! release processor deciding `lg11-200/1` 3 ms apart, each writing its dead letter). The letter
//! goes out *before* the refund — a crash in between must not lose it — so the refund's
//! once-only script cannot stop the second letter. So a copy first asks for the attempt's lease
//! ([`DeadLetters::claim`], one script on the order's state hash, on Redis's clock):
//!
//! - **mine**: publish the letter, then mark it sent (`dlq_sent`) and pending (`dlq:pending`) in
//!   one script. A publish that fails gives the lease back, so the retry is not kept waiting;
//! - **held** by another copy: wait, polling every [`POLL`], until the letter is sent, the attempt
//!   is decided or the lease runs out — then take it: its holder died before publishing. The
//!   wait is bounded by the lease ([`lease_for`]: twice the produce timeout and 5 s, so 15 s by
//!   default) and a second longer; past that the step fails and the order is retried as after
//!   any Redis error;
//! - **sent**: no second letter; go on to the refund, which happens once (the holder may have
//!   died between its letter and its refund);
//! - **decided**: the attempt is no longer `RESERVED`; nothing to write.
//!
//! What this does not cover (Kafka has no conditional write): a holder frozen (SIGSTOP, a VM
//! pause) for longer than the lease between taking it and publishing, whose letter then follows
//! the next holder's; and a holder that dies in the milliseconds between the broker's
//! acknowledgement of its letter and marking it sent. A DLQ reader still keeps one letter per
//! `request_id/attempt` (as `flashsale dlq list` does).

use std::future::Future;
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use crate::keys;
use crate::order::OrderMessage;
use crate::redis_conn::{Redis, RedisError};

/// How often a copy that found the lease held looks again.
pub const POLL: Duration = Duration::from_millis(25);

/// `{'decided', status, current attempt}` when the attempt is not `RESERVED`; `{'sent'}` when its
/// letter went out; `{'held', owner}` when another owner's lease runs; else the lease is taken:
/// `{'mine'}`. KEYS[1] the order's state; ARGV attempt, owner, lease in ms.
const CLAIM_LUA: &str = r#"
local status = redis.call('HGET', KEYS[1], 'status')
local current = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
if status ~= 'RESERVED' or current ~= tonumber(ARGV[1]) then
  return {'decided', status or 'MISSING', tostring(current)}
end
local f = redis.call('HMGET', KEYS[1], 'dlq_sent', 'dlq_attempt', 'dlq_owner', 'dlq_until')
if f[1] == ARGV[1] then return {'sent'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if f[2] == ARGV[1] and f[3] and f[3] ~= ARGV[2] and tonumber(f[4] or '0') > now then
  return {'held', f[3]}
end
redis.call('HSET', KEYS[1], 'dlq_attempt', ARGV[1], 'dlq_owner', ARGV[2], 'dlq_until', now + tonumber(ARGV[3]))
return {'mine'}
"#;

/// The letter of attempt ARGV[1] is out: marked sent (if the attempt is still the order's) and
/// pending in `dlq:pending` (KEYS[2]) at its failure time ARGV[2] as member ARGV[3].
const SENT_LUA: &str = r#"
if tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0') == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'dlq_sent', ARGV[1])
  redis.call('HDEL', KEYS[1], 'dlq_owner', 'dlq_until')
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])
return 1
"#;

/// Gives the lease back if ARGV[2] still holds it for attempt ARGV[1].
const RELEASE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'dlq_attempt') == ARGV[1] and redis.call('HGET', KEYS[1], 'dlq_owner') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'dlq_owner', 'dlq_until')
end
return 1
"#;

/// The lease for a processor whose publishes are bounded by `produce_timeout`: long enough that
/// a live holder publishes within it.
pub fn lease_for(produce_timeout: Duration) -> Duration {
    produce_timeout * 2 + Duration::from_secs(5)
}

/// What [`DeadLetters::write_once`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Letter {
    /// This copy wrote the letter, failed at `failed_at_ms`.
    Written { failed_at_ms: u64 },
    /// Another copy wrote it (now or before).
    WrittenBefore,
    /// The attempt is no longer `RESERVED`: `status` and the order's `current` attempt.
    Decided { status: String, current: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum LetterError<E> {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("publishing the dead letter: {0}")]
    Publish(E),
    #[error("the dead letter of {0} is still being written by {1} after {2:?}; not writing a second")]
    Busy(String, String, Duration),
}

#[derive(Debug)]
enum Claim {
    Mine,
    Sent,
    Held(String),
    Decided { status: String, current: u32 },
}

/// The lease on dead-lettering each attempt.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    redis: Redis,
    lease: Duration,
    claim: Script,
    sent: Script,
    release: Script,
}

impl DeadLetters {
    pub fn new(redis: Redis, lease: Duration) -> DeadLetters {
        DeadLetters {
            redis,
            lease,
            claim: Script::new(CLAIM_LUA),
            sent: Script::new(SENT_LUA),
            release: Script::new(RELEASE_LUA),
        }
    }

    /// Writes `order`'s dead letter with `publish` (which returns the failure time, ms) unless
    /// another copy of the attempt did or does: see the module docs.
    pub async fn write_once<E, F, Fut>(&self, order: &OrderMessage, publish: F) -> Result<Letter, LetterError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, E>>,
    {
        let owner = uuid::Uuid::new_v4().to_string();
        let bound = self.lease + Duration::from_secs(1);
        let deadline = Instant::now() + bound;
        let mut waited = false;
        loop {
            match self.claim_once(order, &owner).await? {
                Claim::Mine => {
                    if waited {
                        tracing::warn!(service = "processor", event = "dead_letter_taken_over", request_id = %order.request_id, attempt = order.attempt, "The dead letter's lease ran out unwritten; writing it here");
                    }
                    break;
                }
                Claim::Sent => return Ok(Letter::WrittenBefore),
                Claim::Decided { status, current } => return Ok(Letter::Decided { status, current }),
                Claim::Held(other) if Instant::now() >= deadline => {
                    let member = keys::dlq_member(&order.request_id, order.attempt);
                    return Err(LetterError::Busy(member, other, bound));
                }
                Claim::Held(other) => {
                    if !waited {
                        tracing::info!(service = "processor", event = "dead_letter_held", request_id = %order.request_id, attempt = order.attempt, holder = %other, "Another copy is writing this attempt's dead letter; waiting");
                        waited = true;
                    }
                    tokio::time::sleep(POLL).await
                }
            }
        }
        let failed_at_ms = match publish().await {
            Ok(at) => at,
            Err(e) => {
                // Best effort: if this fails too, the lease runs out by itself.
                let _ = self.give_back(order, &owner).await;
                return Err(LetterError::Publish(e));
            }
        };
        let mut call = self.sent.prepare_invoke();
        call.key(keys::order_state(&order.request_id))
            .key(keys::DLQ_PENDING)
            .arg(order.attempt)
            .arg(failed_at_ms)
            .arg(keys::dlq_member(&order.request_id, order.attempt));
        self.redis.call_durable(|mut c| async move { call.invoke_async::<i64>(&mut c).await }).await?;
        Ok(Letter::Written { failed_at_ms })
    }

    async fn claim_once(&self, order: &OrderMessage, owner: &str) -> Result<Claim, RedisError> {
        let mut call = self.claim.prepare_invoke();
        call.key(keys::order_state(&order.request_id)).arg(order.attempt).arg(owner).arg(self.lease.as_millis() as u64);
        let answer: Vec<String> =
            self.redis.call_durable(|mut c| async move { call.invoke_async(&mut c).await }).await?;
        Ok(match answer.first().map(String::as_str) {
            Some("mine") => Claim::Mine,
            Some("sent") => Claim::Sent,
            Some("held") => Claim::Held(answer.get(1).cloned().unwrap_or_default()),
            _ => Claim::Decided {
                status: answer.get(1).cloned().unwrap_or_default(),
                current: answer.get(2).and_then(|a| a.parse().ok()).unwrap_or(0),
            },
        })
    }

    async fn give_back(&self, order: &OrderMessage, owner: &str) -> Result<(), RedisError> {
        let mut call = self.release.prepare_invoke();
        call.key(keys::order_state(&order.request_id)).arg(order.attempt).arg(owner);
        self.redis.call(|mut c| async move { call.invoke_async::<i64>(&mut c).await }).await.map(|_| ())
    }
}
