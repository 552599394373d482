//! The quantile every figure of the lab uses: nearest rank, so a p99 of fewer than 100 samples
//! is its maximum (and a check asks for enough samples before it believes one).

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

#[cfg(test)]
mod tests {
    use super::*;

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
