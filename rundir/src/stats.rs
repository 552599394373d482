//! The quantile every figure of the lab uses: nearest rank, so a p99 of fewer than 100 samples
//! is its maximum (and a check asks for enough samples before it believes one); and the one
//! UTC calendar conversion the run directory's names and reports use.

/// The `q` quantile (0 < q ≤ 1) of `sorted` values, by nearest rank; `None` when empty.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// [`quantile`] of microseconds, in milliseconds.
pub fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    quantile(sorted_us, q).map(|us| us as f64 / 1000.0)
}

/// `(year, month, day, seconds into the day)` of a Unix time in seconds, UTC (Howard Hinnant's
/// civil-from-days).
pub fn utc_civil(unix_s: u64) -> (i64, i64, i64, u64) {
    let days = unix_s / 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, unix_s % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc_civil(0), (1970, 1, 1, 0));
        assert_eq!(utc_civil(951_782_400), (2000, 2, 29, 0));
        assert_eq!(utc_civil(1_795_248_000 + 3_723), (2026, 11, 21, 8 * 3600 + 3_723));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.99), None);
        assert_eq!(quantile_ms(&[1500], 0.5), Some(1.5));
    }
}
