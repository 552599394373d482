//! The optional global admission limit (`GLOBAL_RATE_LIMIT`, orders per second): the
//! four-layer article's entry protection. Past the limit an order is refused at once with 503,
//! `Retry-After` and a "queued, retry" message, before it costs Redis or Kafka anything.
//!
//! A token bucket per gateway process, holding one second's worth of tokens; with N gateways the
//! system admits N times the limit.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct AdmissionLimit {
    rate_per_s: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl AdmissionLimit {
    /// `None` when `rate_per_s` is 0 (off).
    pub fn new(rate_per_s: u32, now: Instant) -> Option<AdmissionLimit> {
        (rate_per_s > 0).then(|| AdmissionLimit {
            rate_per_s: f64::from(rate_per_s),
            bucket: Mutex::new((f64::from(rate_per_s), now)),
        })
    }

    /// Takes a token, or says how long until the next one.
    pub fn try_admit(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *bucket;
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate_per_s).min(self.rate_per_s);
        // The epsilon absorbs float rounding of many small refills (0.1 + 0.1 + ... < 1.0).
        if refilled >= 1.0 - 1e-9 {
            *bucket = ((refilled - 1.0).max(0.0), now);
            Ok(())
        } else {
            *bucket = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate_per_s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_rate_and_refuses_the_rest() {
        let t0 = Instant::now();
        assert!(AdmissionLimit::new(0, t0).is_none());
        let limit = AdmissionLimit::new(100, t0).unwrap();
        let admitted = (0..150).filter(|_| limit.try_admit(t0).is_ok()).count();
        assert_eq!(admitted, 100, "one second's burst");
        let wait = limit.try_admit(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        // Over the next 2 s, 200 more.
        let admitted = (1..=2000).filter(|ms| limit.try_admit(t0 + Duration::from_millis(*ms)).is_ok()).count();
        assert_eq!(admitted, 200);
    }
}
