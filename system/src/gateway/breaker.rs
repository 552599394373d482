//! The circuit breaker around the Kafka producer.
//!
//! - **Closed**: every order goes to the broker; `failure_threshold` consecutive failures open it.
//! - **Open**: orders are refused at once with 503, without touching Kafka, for the open period:
//!   `base_timeout` the first time, doubled on each reopening, at most `max_timeout`.
//! - **Half-open**: after the open period, up to `success_threshold` trial orders go through at
//!   a time; `success_threshold` successes close it (and reset the open period to the base), one
//!   failure opens it again.
//!
//! Results are tagged with the epoch (one per state change) in which their [`Ticket`] was
//! issued, so the failures of requests that were already in flight when the breaker opened do not
//! open it again or lengthen its open period.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The runbook's `gateway_circuit_breaker_state` value: 0 closed, 1 open, 2 half-open.
    pub fn metric_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Permission to send one order to the broker; report its result with
/// [`CircuitBreaker::record`].
#[derive(Debug)]
#[must_use = "report the result with CircuitBreaker::record"]
pub struct Ticket {
    epoch: u64,
    trial: bool,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    epoch: u64,
    consecutive_failures: u32,
    trial_successes: u32,
    trials_in_flight: u32,
    opened_at: Instant,
    open_for: Duration,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// How long a refused client should wait when the breaker is half-open and its trial slots are
/// taken.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                epoch: 0,
                consecutive_failures: 0,
                trial_successes: 0,
                trials_in_flight: 0,
                opened_at: Instant::now(),
                open_for: config.base_timeout,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections cannot panic; a poisoned lock still holds a consistent state.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state now (an open breaker whose period has passed reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        inner.state
    }

    fn advance(inner: &mut Inner, now: Instant) {
        if inner.state == BreakerState::Open && now >= inner.opened_at + inner.open_for {
            inner.state = BreakerState::HalfOpen;
            inner.epoch += 1;
            inner.trial_successes = 0;
            inner.trials_in_flight = 0;
        }
    }

    /// A ticket to try the broker, or how long the client should wait.
    pub fn try_acquire(&self, now: Instant) -> Result<Ticket, Duration> {
        let mut inner = self.lock();
        Self::advance(&mut inner, now);
        match inner.state {
            BreakerState::Closed => Ok(Ticket { epoch: inner.epoch, trial: false }),
            BreakerState::Open => Err((inner.opened_at + inner.open_for).saturating_duration_since(now)),
            BreakerState::HalfOpen if inner.trials_in_flight < self.config.success_threshold => {
                inner.trials_in_flight += 1;
                Ok(Ticket { epoch: inner.epoch, trial: true })
            }
            BreakerState::HalfOpen => Err(HALF_OPEN_RETRY_AFTER),
        }
    }

    /// Reports whether the broker accepted the order sent under `ticket`.
    pub fn record(&self, ticket: Ticket, success: bool, now: Instant) {
        let mut inner = self.lock();
        if ticket.epoch != inner.epoch {
            return; // issued before the last state change: says nothing about the broker now
        }
        match (inner.state, success) {
            (BreakerState::Closed, true) => inner.consecutive_failures = 0,
            (BreakerState::Closed, false) => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.config.failure_threshold {
                    let base = self.config.base_timeout;
                    Self::open(&mut inner, base, now);
                }
            }
            (BreakerState::HalfOpen, true) if ticket.trial => {
                inner.trials_in_flight -= 1;
                inner.trial_successes += 1;
                if inner.trial_successes >= self.config.success_threshold {
                    inner.state = BreakerState::Closed;
                    inner.epoch += 1;
                    inner.consecutive_failures = 0;
                    inner.open_for = self.config.base_timeout;
                }
            }
            (BreakerState::HalfOpen, false) if ticket.trial => {
                let doubled = (inner.open_for * 2).min(self.config.max_timeout);
                Self::open(&mut inner, doubled, now);
            }
            _ => {}
        }
    }

    /// Gives back a ticket that was not used to reach the broker (the order was a duplicate,
    /// rate-limited, or Redis failed), freeing its half-open trial slot.
    pub fn forget(&self, ticket: Ticket) {
        let mut inner = self.lock();
        if ticket.trial && ticket.epoch == inner.epoch && inner.state == BreakerState::HalfOpen {
            inner.trials_in_flight -= 1;
        }
    }

    fn open(inner: &mut Inner, open_for: Duration, now: Instant) {
        inner.state = BreakerState::Open;
        inner.epoch += 1;
        inner.opened_at = now;
        inner.open_for = open_for;
        inner.consecutive_failures = 0;
        inner.trials_in_flight = 0;
        inner.trial_successes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            success_threshold: 2,
            base_timeout: 10 * S,
            max_timeout: 35 * S,
        })
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        let t = b.try_acquire(now).expect("admitted");
        b.record(t, false, now);
    }

    fn succeed(b: &CircuitBreaker, now: Instant) {
        let t = b.try_acquire(now).expect("admitted");
        b.record(t, true, now);
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0);
        succeed(&b, t0); // resets the count
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        fail(&b, t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + 4 * S).unwrap_err(), 6 * S);
    }

    #[test]
    fn half_open_closes_after_successes_and_reopens_doubling_up_to_max() {
        let b = breaker();
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&b, now);
        }
        // Open periods: 10 s, then 20, then capped at 35, 35.
        for open_for in [10, 20, 35, 35] {
            assert!(b.try_acquire(now + (open_for - 1) * S).is_err(), "still open");
            now += open_for * S;
            assert_eq!(b.state(now), BreakerState::HalfOpen);
            fail(&b, now);
            assert_eq!(b.state(now), BreakerState::Open);
        }
        now += 35 * S;
        succeed(&b, now);
        assert_eq!(b.state(now), BreakerState::HalfOpen);
        succeed(&b, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        // Closing resets the open period to the base.
        for _ in 0..3 {
            fail(&b, now);
        }
        assert!(b.try_acquire(now + 9 * S).is_err());
        assert!(b.try_acquire(now + 10 * S).is_ok());
    }

    #[test]
    fn half_open_admits_a_bounded_number_of_trials() {
        let b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            fail(&b, now);
        }
        let later = now + 10 * S;
        let t1 = b.try_acquire(later).expect("trial 1");
        let _t2 = b.try_acquire(later).expect("trial 2");
        assert_eq!(b.try_acquire(later).unwrap_err(), HALF_OPEN_RETRY_AFTER);
        b.record(t1, true, later);
        assert!(b.try_acquire(later).is_ok(), "a finished trial frees its slot");
    }

    #[test]
    fn late_failures_from_before_opening_are_ignored() {
        let b = breaker();
        let now = Instant::now();
        let late: Vec<Ticket> = (0..5).map(|_| b.try_acquire(now).unwrap()).collect();
        for _ in 0..3 {
            fail(&b, now);
        }
        for t in late {
            b.record(t, false, now + 9 * S);
        }
        // The open period was not restarted by the late failures.
        assert_eq!(b.state(now + 10 * S), BreakerState::HalfOpen);
    }

    proptest! {
        /// Whatever happens, an open breaker admits nothing before its period ends, and the
        /// period stays within [base, max].
        #[test]
        fn open_means_no_traffic(events in proptest::collection::vec((0u8..3, 0u64..40), 1..200)) {
            let b = breaker();
            let mut now = Instant::now();
            let mut tickets = Vec::new();
            for (kind, advance_s) in events {
                now += Duration::from_millis(advance_s * 250);
                match kind {
                    0 => if let Ok(t) = b.try_acquire(now) { tickets.push(t) },
                    1 => if let Some(t) = tickets.pop() { b.record(t, false, now) },
                    _ => if let Some(t) = tickets.pop() { b.record(t, true, now) },
                }
                let inner = b.lock();
                prop_assert!(inner.open_for >= 10 * S && inner.open_for <= 35 * S);
                prop_assert!(inner.trials_in_flight <= 2);
                if inner.state == BreakerState::Open && now < inner.opened_at + inner.open_for {
                    drop(inner);
                    prop_assert!(b.try_acquire(now).is_err());
                }
            }
        }
    }
}
