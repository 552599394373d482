//! The one-click degradation switch for a big promotion (`flashsale degrade on|off|status`):
//! what every gateway stops doing so that `POST /buy` keeps its latency when the system is past
//! its capacity. The mode lives in Redis ([`keys::DEGRADE`]) so that one switch turns every
//! gateway; each reads it every `DEGRADE_POLL` (1 s), on a connection of its own (a backlog of
//! orders on the shared one must not hold the switch back), and keeps the last mode it read while
//! Redis does not answer.
//!
//! Non-core work, shed while the switch is on:
//! - **Order-status reads** (`GET /orders/{id}`): answered at once with 503, `Retry-After:
//!   DEGRADE_RETRY_AFTER` (10 s) and a body saying the order's outcome will be sent — without
//!   touching Redis. Buyers refreshing their order's status compete with new orders for Redis;
//!   the outcome still reaches them through `order-outcomes`.
//! - **Admissions past `--admit N`** (optional): each gateway admits at most N orders a second
//!   (on top of `GLOBAL_RATE_LIMIT`); the rest get the article's "queued, retry" answer (503,
//!   `Retry-After`) before they cost Redis or Kafka anything.
//!
//! What never changes: validation, the per-user limit, idempotency, the breaker, the order's way
//! through Kafka and the processors. `/health` and the `gateway_degraded` metric show the mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::admission::AdmissionLimit;
use crate::keys;
use crate::redis_conn::{Redis, RedisError};

/// The switch's state, as stored in Redis and shown on `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mode {
    pub on: bool,
    /// Orders a second each gateway admits while on; `None`: no cap.
    pub admit_per_s: Option<u32>,
    /// When it was turned on (Unix ms); 0 when off.
    pub since_ms: u64,
}

impl Mode {
    pub const OFF: Mode = Mode { on: false, admit_per_s: None, since_ms: 0 };

    pub fn describe(&self) -> String {
        match (self.on, self.admit_per_s) {
            (false, _) => "off".into(),
            (true, None) => "on: order-status reads paused".into(),
            (true, Some(n)) => format!("on: order-status reads paused, at most {n} orders/s admitted per gateway"),
        }
    }
}

/// Turns the switch on for every gateway (`admit_per_s`: the optional admission cap; 0 is
/// refused — it would refuse every order).
pub async fn turn_on(redis: &Redis, admit_per_s: Option<u32>) -> Result<Mode, RedisError> {
    let mode = Mode { on: true, admit_per_s: admit_per_s.filter(|n| *n > 0), since_ms: crate::order::now_ms() };
    let admit = mode.admit_per_s.unwrap_or(0);
    redis
        .call(move |mut c| async move {
            redis::cmd("HSET")
                .arg(keys::DEGRADE)
                .arg("admit_per_s")
                .arg(admit)
                .arg("since_ms")
                .arg(mode.since_ms)
                .query_async::<i64>(&mut c)
                .await
        })
        .await?;
    Ok(mode)
}

/// Turns the switch off for every gateway.
pub async fn turn_off(redis: &Redis) -> Result<(), RedisError> {
    redis.call(|mut c| async move { redis::cmd("DEL").arg(keys::DEGRADE).query_async::<i64>(&mut c).await }).await?;
    Ok(())
}

/// The switch as Redis has it.
pub async fn read(redis: &Redis) -> Result<Mode, RedisError> {
    let fields: std::collections::HashMap<String, u64> =
        redis.call(|mut c| async move { redis::cmd("HGETALL").arg(keys::DEGRADE).query_async(&mut c).await }).await?;
    if fields.is_empty() {
        return Ok(Mode::OFF);
    }
    let admit = fields.get("admit_per_s").copied().unwrap_or(0);
    Ok(Mode {
        on: true,
        admit_per_s: (admit > 0).then(|| u32::try_from(admit).unwrap_or(u32::MAX)),
        since_ms: fields.get("since_ms").copied().unwrap_or(0),
    })
}

/// A gateway's copy of the switch, with its own admission bucket for `--admit`.
#[derive(Debug)]
pub struct Switch {
    state: Mutex<(Mode, Option<AdmissionLimit>)>,
    /// `state.0.on`, read without the lock: while off (nearly always) a request takes no lock.
    on: AtomicBool,
    retry_after: Duration,
}

impl Switch {
    pub fn new(retry_after: Duration) -> Switch {
        Switch { state: Mutex::new((Mode::OFF, None)), on: AtomicBool::new(false), retry_after }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Mode, Option<AdmissionLimit>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `mode`; a new admission cap starts with a full bucket. Returns whether it changed.
    pub fn apply(&self, mode: Mode, now: Instant) -> bool {
        let mut state = self.lock();
        if state.0 == mode {
            return false;
        }
        let cap_changed = state.0.admit_per_s != mode.admit_per_s || state.0.on != mode.on;
        if cap_changed {
            state.1 = mode.admit_per_s.filter(|_| mode.on).and_then(|n| AdmissionLimit::new(n, now));
        }
        state.0 = mode;
        self.on.store(mode.on, Ordering::Relaxed);
        true
    }

    pub fn mode(&self) -> Mode {
        self.lock().0
    }

    /// `Some(Retry-After)` when order-status reads are shed.
    pub fn shed_status_read(&self) -> Option<Duration> {
        self.on.load(Ordering::Relaxed).then_some(self.retry_after)
    }

    /// The degraded admission cap: `Err(wait)` when this order is past it.
    pub fn try_admit(&self, now: Instant) -> Result<(), Duration> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        match &self.lock().1 {
            Some(limit) => limit.try_admit(now),
            None => Ok(()),
        }
    }
}

/// Reads the switch from Redis every `poll` and applies it, until the gateway drops its
/// [`Switch`]. A read that fails keeps the last mode (logged once per failure run).
pub async fn follow(switch: Weak<Switch>, redis: Redis, poll: Duration, on_change: impl Fn(Mode) + Send + 'static) {
    let mut failing = false;
    loop {
        let read = read(&redis).await;
        let Some(switch) = switch.upgrade() else { return };
        match read {
            Ok(mode) => {
                failing = false;
                if switch.apply(mode, Instant::now()) {
                    tracing::warn!(service = "gateway", event = "degrade_mode", on = mode.on, admit_per_s = ?mode.admit_per_s, "Degradation switch: {}", mode.describe());
                    on_change(mode);
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(service = "gateway", event = "degrade_read_failed", error = %e, "Cannot read the degradation switch; keeping the last mode");
            }
            Err(_) => {}
        }
        drop(switch);
        tokio::time::sleep(poll).await;
    }
}

/// Starts [`follow`] for `switch`.
pub fn spawn_follow(switch: &Arc<Switch>, redis: Redis, poll: Duration, on_change: impl Fn(Mode) + Send + 'static) {
    tokio::spawn(follow(Arc::downgrade(switch), redis, poll, on_change));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_sheds_reads_and_caps_admissions_only_while_on() {
        let t0 = Instant::now();
        let switch = Switch::new(Duration::from_secs(10));
        assert_eq!(switch.shed_status_read(), None);
        assert!((0..1000).all(|_| switch.try_admit(t0).is_ok()), "no cap while off");

        assert!(switch.apply(Mode { on: true, admit_per_s: None, since_ms: 1 }, t0));
        assert_eq!(switch.shed_status_read(), Some(Duration::from_secs(10)));
        assert!((0..1000).all(|_| switch.try_admit(t0).is_ok()), "reads only: no cap");

        assert!(switch.apply(Mode { on: true, admit_per_s: Some(50), since_ms: 1 }, t0));
        let admitted = (0..200).filter(|_| switch.try_admit(t0).is_ok()).count();
        assert_eq!(admitted, 50, "one second's worth at the cap");
        assert!(!switch.apply(Mode { on: true, admit_per_s: Some(50), since_ms: 1 }, t0), "same mode: no change");
        assert!(switch.try_admit(t0).is_err(), "the bucket is not refilled by re-reading the same mode");

        assert!(switch.apply(Mode::OFF, t0));
        assert_eq!(switch.shed_status_read(), None);
        assert!((0..1000).all(|_| switch.try_admit(t0).is_ok()), "off again: no cap");
    }
}
