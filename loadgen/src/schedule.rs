//! Open arrival schedules: when each request should start, whatever the system's speed.
//!
//! An [`ArrivalSchedule`] is a list of named [`Phase`]s, each with a duration and a rate —
//! constant (`@500`), a linear ramp (`@200..2000`, the article's 10% → 100% ramp-up) — and
//! evenly spaced or Poisson arrivals (`~poisson`). A step spike is two constant phases in a row.
//! [`ArrivalSchedule::arrivals`] yields every arrival's intended start, offset from the start of
//! the run: the same schedule and seed give the same arrivals.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The highest rate a phase may ask for, arrivals per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The longest a whole schedule may last.
pub const MAX_SCHEDULE: Duration = Duration::from_secs(24 * 3600);

/// How many arrivals per second a phase offers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rate {
    Constant(f64),
    /// From `from` at the phase's start to `to` at its end, linearly.
    Ramp {
        from: f64,
        to: f64,
    },
}

/// One named stretch of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    #[serde(with = "duration_text")]
    pub duration: Duration,
    pub rate: Rate,
    /// Exponential gaps between arrivals (same mean rate) instead of even spacing.
    #[serde(default)]
    pub poisson: bool,
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Phase {
    /// The rate `t` into the phase.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match self.rate {
            Rate::Constant(r) => r,
            Rate::Ramp { from, to } => {
                let share = (t.as_secs_f64() / self.duration.as_secs_f64()).clamp(0.0, 1.0);
                from + (to - from) * share
            }
        }
    }

    /// How many arrivals the phase offers (the integral of its rate).
    pub fn expected_arrivals(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        match self.rate {
            Rate::Constant(r) => r * secs,
            Rate::Ramp { from, to } => (from + to) / 2.0 * secs,
        }
    }

    /// The time into the phase by which `n` arrivals are due (the inverse of the integral).
    fn time_of(&self, n: f64) -> f64 {
        let secs = self.duration.as_secs_f64();
        match self.rate {
            Rate::Constant(r) => n / r,
            Rate::Ramp { from, to } => {
                // N(t) = from·t + (to − from)·t² / (2·secs); solve N(t) = n for t ≥ 0.
                let a = (to - from) / (2.0 * secs);
                if a.abs() < 1e-12 {
                    n / from
                } else {
                    (-from + (from * from + 4.0 * a * n).max(0.0).sqrt()) / (2.0 * a)
                }
            }
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@", self.name, humantime::format_duration(self.duration))?;
        match self.rate {
            Rate::Constant(r) => write!(f, "{r}")?,
            Rate::Ramp { from, to } => write!(f, "{from}..{to}")?,
        }
        if self.poisson {
            f.write_str("~poisson")?;
        }
        Ok(())
    }
}

/// The phases of a run, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrivalSchedule {
    pub phases: Vec<Phase>,
}

/// One arrival: when it is due (from the run's start) and in which phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Its number in the run, from 0.
    pub index: u64,
    pub phase: usize,
    pub due: Duration,
}

impl ArrivalSchedule {
    /// The whole schedule's length.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// When each phase starts, from the run's start.
    pub fn phase_starts(&self) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let start = at;
                at += p.duration;
                start
            })
            .collect()
    }

    /// Every arrival, in order. Evenly spaced phases are exact (the n-th arrival at the time the
    /// integral of the rate reaches n − ½); Poisson phases draw exponential gaps at the current
    /// rate from a generator seeded by `seed` and the phase's number.
    pub fn arrivals(&self, seed: u64) -> impl Iterator<Item = Arrival> + '_ {
        let starts = self.phase_starts();
        let mut index = 0u64;
        self.phases
            .iter()
            .enumerate()
            .flat_map(move |(p, phase)| {
                let start = starts[p];
                let times: Box<dyn Iterator<Item = f64> + Send + '_> = if phase.poisson {
                    let mut rng = StdRng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(p as u64 + 1)));
                    let secs = phase.duration.as_secs_f64();
                    let mut t = 0.0f64;
                    Box::new(std::iter::from_fn(move || loop {
                        // Thinning against the phase's highest rate keeps ramps exact in law.
                        let peak = match phase.rate {
                            Rate::Constant(r) => r,
                            Rate::Ramp { from, to } => from.max(to),
                        };
                        if peak <= 0.0 {
                            return None;
                        }
                        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                        t += -u.ln() / peak;
                        if t >= secs {
                            return None;
                        }
                        let keep: f64 = rng.gen();
                        if keep * peak <= phase.rate_at(Duration::from_secs_f64(t)) {
                            return Some(t);
                        }
                    }))
                } else {
                    let total = phase.expected_arrivals();
                    let count = total.round().max(0.0) as u64;
                    let last = (phase.duration.as_secs_f64() - 1e-6).max(0.0);
                    Box::new((0..count).map(move |n| phase.time_of(n as f64 + 0.5).clamp(0.0, last)))
                };
                times.map(move |t| (p, start + Duration::from_secs_f64(t)))
            })
            .map(move |(phase, due)| {
                let arrival = Arrival { index, phase, due };
                index += 1;
                arrival
            })
    }
}

/// A schedule that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

impl FromStr for ArrivalSchedule {
    type Err = ScheduleError;

    /// `warm:20s@100,spike:30s@2000,ramp:60s@200..2000,steady:1m@500~poisson`.
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let mut phases = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| {
                ScheduleError(format!(
                    "phase {part:?}: {why}; expected NAME:DURATION@RATE, @FROM..TO for a ramp, optional ~poisson, e.g. warm:20s@100"
                ))
            };
            let (name, rest) = part.split_once(':').ok_or_else(|| bad("no ':' after the name"))?;
            let (duration, rate) = rest.split_once('@').ok_or_else(|| bad("no '@' before the rate"))?;
            let (rate, poisson) = match rate.strip_suffix("~poisson") {
                Some(r) => (r, true),
                None => (rate, false),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad("the name must be letters, digits, '-' or '_'"));
            }
            let duration = humantime::parse_duration(duration).map_err(|e| bad(&format!("duration: {e}")))?;
            let number = |v: &str| -> Result<f64, ScheduleError> {
                let r: f64 = v.trim().parse().map_err(|_| bad(&format!("rate {v:?} is not a number")))?;
                if !(0.0..=MAX_RATE).contains(&r) {
                    return Err(bad(&format!("rate {r} must be between 0 and {MAX_RATE}")));
                }
                Ok(r)
            };
            let rate = match rate.split_once("..") {
                Some((from, to)) => Rate::Ramp { from: number(from)?, to: number(to)? },
                None => Rate::Constant(number(rate)?),
            };
            if duration.is_zero() {
                return Err(bad("the duration must be above 0"));
            }
            if phases.iter().any(|p: &Phase| p.name == name) {
                return Err(bad("the name is used twice"));
            }
            phases.push(Phase { name: name.to_string(), duration, rate, poisson });
        }
        if phases.is_empty() {
            return Err(ScheduleError("no phase; e.g. --phases warm:20s@100,spike:30s@2000".into()));
        }
        let schedule = ArrivalSchedule { phases };
        if schedule.duration() > MAX_SCHEDULE {
            return Err(ScheduleError(format!("the phases last {:?}, more than 24 h", schedule.duration())));
        }
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schedule(s: &str) -> ArrivalSchedule {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_issue_example_and_names_errors() {
        let s = schedule("warm:20s@100,spike:30s@2000,ramp:60s@200..2000,calm:10s@50~poisson");
        assert_eq!(s.phases.len(), 4);
        assert_eq!(s.phases[2].rate, Rate::Ramp { from: 200.0, to: 2000.0 });
        assert!(s.phases[3].poisson);
        assert_eq!(s.duration(), Duration::from_secs(120));
        for (bad, says) in [
            ("", "no phase"),
            ("warm20s@100", "no ':'"),
            ("warm:20s", "no '@'"),
            ("warm:20x@100", "duration"),
            ("warm:20s@fast", "not a number"),
            ("warm:20s@-1", "between 0"),
            ("a:1s@1,a:1s@1", "used twice"),
            ("w w:1s@1", "the name"),
            ("w:0s@1", "above 0"),
        ] {
            let err = bad.parse::<ArrivalSchedule>().unwrap_err().0;
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn constant_and_ramp_offer_their_integral() {
        let s = schedule("c:10s@100,r:10s@0..200");
        let arrivals: Vec<_> = s.arrivals(1).collect();
        let in_phase = |p| arrivals.iter().filter(|a| a.phase == p).count();
        assert_eq!(in_phase(0), 1000);
        assert_eq!(in_phase(1), 1000);
        // A ramp from 0 to 200: a quarter of its arrivals in the first half.
        let first_half = arrivals.iter().filter(|a| a.phase == 1 && a.due < Duration::from_secs(15)).count();
        assert!((240..=260).contains(&first_half), "{first_half}");
        assert!(arrivals.windows(2).all(|w| w[0].due <= w[1].due), "in order");
        assert!(arrivals.iter().enumerate().all(|(i, a)| a.index == i as u64));
    }

    #[test]
    fn poisson_keeps_the_mean_rate_and_depends_on_the_seed() {
        let s = schedule("p:100s@50~poisson");
        let a: Vec<_> = s.arrivals(7).map(|a| a.due).collect();
        let b: Vec<_> = s.arrivals(7).map(|a| a.due).collect();
        let c: Vec<_> = s.arrivals(8).map(|a| a.due).collect();
        assert_eq!(a, b, "same seed, same arrivals");
        assert_ne!(a, c);
        assert!((4700..=5300).contains(&a.len()), "{} arrivals for a mean of 5000", a.len());
    }

    proptest! {
        #[test]
        fn every_arrival_lies_in_its_phase(rates in proptest::collection::vec((0.0f64..300.0, 0.0f64..300.0, any::<bool>()), 1..4), seed in any::<u64>()) {
            let phases: Vec<Phase> = rates.iter().enumerate().map(|(i, (a, b, poisson))| Phase {
                name: format!("p{i}"),
                duration: Duration::from_millis(500 + 250 * i as u64),
                rate: if i % 2 == 0 { Rate::Constant(*a) } else { Rate::Ramp { from: *a, to: *b } },
                poisson: *poisson,
            }).collect();
            let s = ArrivalSchedule { phases };
            let starts = s.phase_starts();
            let mut last = Duration::ZERO;
            let mut per_phase = vec![0usize; s.phases.len()];
            for a in s.arrivals(seed) {
                prop_assert!(a.due >= starts[a.phase] && a.due < starts[a.phase] + s.phases[a.phase].duration);
                prop_assert!(a.due >= last);
                last = a.due;
                per_phase[a.phase] += 1;
            }
            for (p, phase) in s.phases.iter().enumerate() {
                if !phase.poisson {
                    prop_assert_eq!(per_phase[p] as f64, phase.expected_arrivals().round());
                }
            }
        }
    }
}
