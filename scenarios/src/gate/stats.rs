//! The statistics of the regression gate: is a figure of the head's runs worse than the base's,
//! beyond the noise of a shared runner and by more than the smallest change that matters?
//!
//! Each side is a handful of runs (one value of the figure per run: a p99, an availability, an
//! RTO). Two questions are asked of them:
//!
//! - **Is there a difference at all?** The Mann–Whitney U test (two-sided), exact: the
//!   permutation distribution of the rank sum is counted for the samples' own ranks, ties
//!   included, so it holds for five runs a side where a normal approximation would not. It
//!   assumes nothing of the figure's distribution (latency percentiles are skewed, RTOs come in
//!   steps), only that runs are independent.
//! - **How big is it?** The difference of medians (head − base), with a bootstrap percentile
//!   interval (seeded: the same runs always give the same answer).
//!
//! A figure [`Change::Regressed`] when the test says the sides differ (p < α) *and* the median
//! moved the worse way by at least the smallest effect that matters; [`Change::Improved`] the
//! same the better way; [`Change::Unchanged`] when the interval's worse end lies within that
//! effect (the runs show the head is not worse by what matters — its better end may reach
//! further: a noisy base, or an improvement the runs cannot confirm, is no reason to hold a
//! change back); otherwise [`Change::Inconclusive`] — too few or too noisy runs to say that it
//! is not worse, which is not a pass.

pub use rundir::gate::{Better, Change, Judgement};

/// What the gate asks of a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    pub better: Better,
    /// The smallest change that matters, as a share of the base's median (0.1: 10 %).
    pub min_relative: f64,
    /// ... and at least this much in the figure's unit (a base median of 0 has no share).
    pub min_absolute: f64,
    /// The test's significance level.
    pub alpha: f64,
    /// The interval's confidence (0.95).
    pub confidence: f64,
}

/// Bootstrap draws behind an interval.
const DRAWS: usize = 4_000;

/// Judges `head` against `base` (one value per run each; at least one run a side).
pub fn judge(base: &[f64], head: &[f64], c: &Criterion, seed: u64) -> Judgement {
    let base_median = median(base);
    let head_median = median(head);
    let difference = head_median - base_median;
    let threshold = (c.min_relative * base_median.abs()).max(c.min_absolute);
    let p = mann_whitney_p(base, head);
    let interval = bootstrap_interval(base, head, c.confidence, seed);
    let worse = match c.better {
        Better::Lower => difference,
        Better::Higher => -difference,
    };
    // How much worse the head may be, at the interval's worse end.
    let worst = match c.better {
        Better::Lower => interval.1,
        Better::Higher => -interval.0,
    };
    let change = if p < c.alpha && worse >= threshold && threshold > 0.0 {
        Change::Regressed
    } else if p < c.alpha && -worse >= threshold && threshold > 0.0 {
        Change::Improved
    } else if worst < threshold {
        Change::Unchanged
    } else {
        Change::Inconclusive
    };
    Judgement { change, base_median, head_median, difference, interval, threshold, p }
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Mann–Whitney U, two-sided, exact: the share of every assignment of the pooled runs' ranks to
/// two groups of these sizes whose rank sum lies at least as far from its mean as the one seen.
/// Tied values share their mean rank. 1 when either side is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 1.0;
    }
    let total = n + m;
    let mut pooled: Vec<(f64, bool)> = a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Doubled mid-ranks: integers, so the rank sums can be counted exactly.
    let mut ranks2 = vec![0usize; total];
    let mut i = 0;
    while i < total {
        let mut j = i;
        while j + 1 < total && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean, (i + j + 2) / 2; doubled: i + j + 2.
        for r in ranks2.iter_mut().take(j + 1).skip(i) {
            *r = i + j + 2;
        }
        i = j + 1;
    }
    let observed: usize = ranks2.iter().zip(&pooled).filter(|(_, p)| p.1).map(|(r, _)| *r).sum();
    let max_sum: usize = ranks2.iter().sum();
    // ways[k][s]: how many k-subsets of the ranks seen so far sum (doubled) to s.
    let mut ways = vec![vec![0f64; max_sum + 1]; n + 1];
    ways[0][0] = 1.0;
    for &r in &ranks2 {
        for k in (1..=n).rev() {
            for s in (r..=max_sum).rev() {
                let add = ways[k - 1][s - r];
                if add > 0.0 {
                    ways[k][s] += add;
                }
            }
        }
    }
    // The doubled rank sum's mean under any assignment: n × (total + 1).
    let mean = (n * (total + 1)) as f64;
    let distance = (observed as f64 - mean).abs();
    let all: f64 = ways[n].iter().sum();
    let extreme: f64 =
        ways[n].iter().enumerate().filter(|(s, _)| (*s as f64 - mean).abs() >= distance - 1e-9).map(|(_, w)| w).sum();
    (extreme / all).min(1.0)
}

/// The bootstrap percentile interval of median(head) − median(base): each side resampled with
/// replacement [`DRAWS`] times, from `seed`.
pub fn bootstrap_interval(base: &[f64], head: &[f64], confidence: f64, seed: u64) -> (f64, f64) {
    if base.is_empty() || head.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix(seed);
    let mut resample = |v: &[f64]| -> f64 {
        let draw: Vec<f64> = (0..v.len()).map(|_| v[rng.below(v.len())]).collect();
        median(&draw)
    };
    let mut diffs: Vec<f64> = (0..DRAWS).map(|_| resample(head) - resample(base)).collect();
    diffs.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| diffs[((q * (DRAWS - 1) as f64).round() as usize).min(DRAWS - 1)];
    (at(tail), at(1.0 - tail))
}

/// A small seeded generator (SplitMix64): the same seed, the same resamples.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LATENCY: Criterion =
        Criterion { better: Better::Lower, min_relative: 0.1, min_absolute: 1.0, alpha: 0.05, confidence: 0.95 };

    #[test]
    fn exact_p_values_match_the_tables() {
        // Complete separation, 5 against 5: 2 of C(10,5) = 252 assignments are as extreme.
        let p = mann_whitney_p(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert!((p - 2.0 / 252.0).abs() < 1e-12, "{p}");
        // 3 against 3, separated: 2 of 20.
        assert!((mann_whitney_p(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]) - 0.1).abs() < 1e-12);
        // Identical samples: nothing is more central.
        assert_eq!(mann_whitney_p(&[5.0; 4], &[5.0; 4]), 1.0);
        assert_eq!(mann_whitney_p(&[], &[1.0]), 1.0);
    }

    #[test]
    fn a_clear_slowdown_regresses_a_clear_speedup_improves_and_noise_is_not_a_verdict() {
        let base = [100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0, 100.0];
        let slower = [130.0, 128.0, 133.0, 131.0, 127.0, 129.0, 132.0, 130.0];
        assert_eq!(judge(&base, &slower, &LATENCY, 1).change, Change::Regressed);
        let faster = [70.0, 72.0, 68.0, 71.0, 69.0, 73.0, 67.0, 70.0];
        assert_eq!(judge(&base, &faster, &LATENCY, 1).change, Change::Improved);
        // The same build again, a little apart: unchanged (the interval is within ±10 %).
        let again = [101.0, 99.0, 100.0, 102.0, 98.0, 100.0, 101.0, 99.0];
        assert_eq!(judge(&base, &again, &LATENCY, 1).change, Change::Unchanged);
        // Two runs a side of a wild figure: the gate cannot say.
        let j = judge(&[100.0, 300.0], &[150.0, 400.0], &LATENCY, 1);
        assert_eq!(j.change, Change::Inconclusive, "{j:?}");
        // Significant but smaller than what matters: not a regression.
        let slightly = [103.0, 105.0, 101.0, 104.0, 102.0, 106.0, 100.0, 103.0];
        assert_ne!(judge(&base, &slightly, &LATENCY, 1).change, Change::Regressed);
    }

    /// CI run ci26: the same build against its baseline, four runs a side, p99 at 360 requests a
    /// run — one base run met a busy machine (115.7 ms). The head is not worse by the 50 ms that
    /// matter: unchanged. The same runs the other way round — the slow run on the head — cannot
    /// say the head is not worse: inconclusive, not a pass.
    #[test]
    fn a_noisy_base_does_not_hold_back_a_head_that_is_not_worse_but_a_noisy_head_is_undecided() {
        let p99 = Criterion { better: Better::Lower, min_relative: 0.5, min_absolute: 50.0, ..LATENCY };
        let noisy = [115.708, 16.55, 16.768, 54.779];
        let steady = [18.419, 16.483, 17.089, 16.904];
        let j = judge(&noisy, &steady, &p99, 7);
        assert_eq!(j.change, Change::Unchanged, "{j:?}");
        let j = judge(&steady, &noisy, &p99, 7);
        assert_eq!(j.change, Change::Inconclusive, "{j:?}");
        let avail = Criterion { better: Better::Higher, min_relative: 0.0, min_absolute: 0.001, ..LATENCY };
        let j = judge(&[0.95, 1.0, 1.0, 1.0], &[1.0; 4], &avail, 7);
        assert_eq!(j.change, Change::Unchanged, "{j:?}");
        let j = judge(&[1.0; 4], &[0.95, 1.0, 1.0, 1.0], &avail, 7);
        assert_eq!(j.change, Change::Inconclusive, "{j:?}");
    }

    #[test]
    fn higher_is_better_turns_the_direction() {
        let avail = Criterion { better: Better::Higher, min_relative: 0.0, min_absolute: 0.001, ..LATENCY };
        let base = [0.9995, 0.9998, 0.9996, 0.9997, 0.9999, 0.9996];
        let worse = [0.990, 0.991, 0.989, 0.992, 0.990, 0.991];
        assert_eq!(judge(&base, &worse, &avail, 3).change, Change::Regressed);
        assert_eq!(judge(&worse, &base, &avail, 3).change, Change::Improved);
    }

    proptest! {
        /// A side compared with itself is never a regression or an improvement, whatever it is.
        #[test]
        fn a_build_against_itself_never_changes(v in proptest::collection::vec(0.0f64..1000.0, 1..9), seed in any::<u64>()) {
            let j = judge(&v, &v, &LATENCY, seed);
            prop_assert!(matches!(j.change, Change::Unchanged | Change::Inconclusive), "{j:?}");
            prop_assert!((j.p - 1.0).abs() < 1e-9, "{j:?}");
        }

        /// p is a probability and symmetric in the sides; the interval is ordered, and seeded.
        #[test]
        fn p_is_a_symmetric_probability_and_the_interval_is_ordered(
            a in proptest::collection::vec(0.0f64..100.0, 1..8),
            b in proptest::collection::vec(0.0f64..100.0, 1..8),
            seed in any::<u64>(),
        ) {
            let p = mann_whitney_p(&a, &b);
            prop_assert!(p > 0.0 && p <= 1.0, "{p}");
            prop_assert!((p - mann_whitney_p(&b, &a)).abs() < 1e-9);
            let (lo, hi) = bootstrap_interval(&a, &b, 0.95, seed);
            prop_assert!(lo <= hi);
            prop_assert_eq!(bootstrap_interval(&a, &b, 0.95, seed), (lo, hi), "seeded: the same answer");
        }
    }
}
