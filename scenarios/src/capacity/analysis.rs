//! The curves' analysis: least-squares slope, the knee (Kneedle), the Universal Scalability
//! Law fit.
//!
//! - **Knee: Kneedle** (Satopää, Albrecht, Irwin, Raghavan, "Finding a 'Kneedle' in a
//!   Haystack", ICDCS workshops 2011), offline form: both axes normalised to 0..1, the knee is
//!   the point farthest above the diagonal (achieved vs offered: concave, increasing) or below
//!   it (latency vs offered: convex, increasing). A curve with fewer than four rates, or whose
//!   farthest point is within 0.05 of the diagonal, has no knee.
//! - **USL** (Gunther): X(N) = λN / (1 + σ(N−1) + κN(N−1)). Fitted by the linearisation
//!   N/C(N) − 1 = σ(N−1) + κN(N−1), C(N) = X(N)/X(1), least squares without intercept, σ and κ
//!   kept ≥ 0. Two points (N = 1, 2) fix only σ + 2κ: κ is then taken as 0 (Amdahl's law) and
//!   said so. The fit is trusted up to the largest N measured, or twice it with three or more
//!   points and R² ≥ 0.9; predictions past that are refused.

use rundir::capacity::{usl, UslFit};

/// Least-squares slope of `points` (x, y); `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The shape Kneedle looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Rises then flattens (throughput vs offered).
    Concave,
    /// Flat then rises (latency vs offered).
    Convex,
}

/// The x of the knee of `points` (any order; the same x averaged), or `None`.
pub fn kneedle(points: &[(f64, f64)], shape: Shape) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64, f64)> = Vec::new(); // x, sum y, count
    for (x, y) in pts {
        match merged.last_mut() {
            Some(last) if (last.0 - x).abs() <= 1e-9 * x.abs().max(1.0) => {
                last.1 += y;
                last.2 += 1.0;
            }
            _ => merged.push((x, y, 1.0)),
        }
    }
    if merged.len() < 4 {
        return None;
    }
    let xs: Vec<f64> = merged.iter().map(|m| m.0).collect();
    let ys: Vec<f64> = merged.iter().map(|m| m.1 / m.2).collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1]);
    let (y0, y1) = ys.iter().fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(*y), hi.max(*y)));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let mut best: Option<(f64, f64)> = None; // (difference, x)
    for (x, y) in xs.iter().zip(&ys) {
        let (xn, yn) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        let d = match shape {
            Shape::Concave => yn - xn,
            Shape::Convex => xn - yn,
        };
        if best.is_none_or(|b| d > b.0) {
            best = Some((d, *x));
        }
    }
    best.filter(|b| b.0 > 0.05).map(|b| b.1)
}

/// Fits the law to (N, X(N)); needs N = 1 among the points and at least two distinct N.
pub fn fit_usl(parameter: &str, points: &[(f64, f64)]) -> Result<UslFit, String> {
    let mut pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= 1.0 && p.1 > 0.0).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x1 = pts.iter().find(|p| (p.0 - 1.0).abs() < 1e-9).map(|p| p.1).ok_or_else(|| {
        format!("the law needs the throughput at {parameter}=1 (sweep it, e.g. --sweep {parameter}=1,2,4)")
    })?;
    let mut distinct: Vec<f64> = pts.iter().map(|p| p.0).collect();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(format!("the law needs at least two values of {parameter} with an answer"));
    }
    // y = N/C − 1 against a = N−1, b = N(N−1).
    let rows: Vec<(f64, f64, f64)> = pts
        .iter()
        .map(|(n, x)| {
            let c = x / x1;
            (n - 1.0, n * (n - 1.0), n / c - 1.0)
        })
        .collect();
    let amdahl_only = distinct.len() < 3;
    let one = |col: usize| {
        let (sxx, sxy) = rows.iter().fold((0.0, 0.0), |(sxx, sxy), r| {
            let v = if col == 0 { r.0 } else { r.1 };
            (sxx + v * v, sxy + v * r.2)
        });
        if sxx > 0.0 {
            (sxy / sxx).max(0.0)
        } else {
            0.0
        }
    };
    let (sigma, kappa) = if amdahl_only {
        (one(0), 0.0)
    } else {
        let (saa, sab, sbb, say, sby) = rows.iter().fold((0.0, 0.0, 0.0, 0.0, 0.0), |acc, r| {
            (acc.0 + r.0 * r.0, acc.1 + r.0 * r.1, acc.2 + r.1 * r.1, acc.3 + r.0 * r.2, acc.4 + r.1 * r.2)
        });
        let det = saa * sbb - sab * sab;
        let (s, k) = if det.abs() > 1e-12 { ((say * sbb - sby * sab) / det, (saa * sby - sab * say) / det) } else { (0.0, 0.0) };
        if s >= 0.0 && k >= 0.0 {
            (s, k)
        } else if s < 0.0 {
            (0.0, one(1))
        } else {
            (one(0), 0.0)
        }
    };
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    let ss_tot: f64 = pts.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let ss_res: f64 = pts.iter().map(|p| (p.1 - usl(x1, sigma, kappa, p.0)).powi(2)).sum();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 1.0 };
    let max_n = distinct[distinct.len() - 1];
    let trusted_up_to = if !amdahl_only && r2 >= 0.9 { 2.0 * max_n } else { max_n };
    let (peak_n, peak_rate) = if kappa > 0.0 && sigma < 1.0 {
        let n = ((1.0 - sigma) / kappa).sqrt();
        (Some(n), Some(usl(x1, sigma, kappa, n)))
    } else {
        (None, None)
    };
    let note = if amdahl_only {
        format!(
            "two values of {parameter}: σ only (κ taken as 0, Amdahl's law); no prediction past {parameter}={max_n}"
        )
    } else if r2 < 0.9 {
        format!("a poor fit (R² {r2:.2}): no prediction past {parameter}={max_n}")
    } else {
        format!("R² {r2:.2} over {} points: predictions trusted up to {parameter}={trusted_up_to}", pts.len())
    };
    Ok(UslFit { parameter: parameter.into(), points: pts, lambda: x1, sigma, kappa, r2, peak_n, peak_rate, trusted_up_to, note })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slope_of_a_line_and_of_too_little() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn the_knee_of_a_saturating_curve_is_where_it_flattens() {
        // Achieved = offered up to 800, then flat.
        let pts: Vec<(f64, f64)> = [100.0, 200.0, 400.0, 800.0, 1200.0, 1600.0, 3200.0]
            .iter()
            .map(|&x: &f64| (x, x.min(800.0)))
            .collect();
        assert_eq!(kneedle(&pts, Shape::Concave), Some(800.0));
        // Latency flat, then up past 800.
        let lat: Vec<(f64, f64)> =
            pts.iter().map(|p| (p.0, if p.0 <= 800.0 { 10.0 } else { 10.0 + (p.0 - 800.0) })).collect();
        assert_eq!(kneedle(&lat, Shape::Convex), Some(800.0));
        // A straight line has none; three points are too few.
        let line: Vec<(f64, f64)> = (1..8).map(|i| (i as f64, 2.0 * i as f64)).collect();
        assert_eq!(kneedle(&line, Shape::Concave), None);
        assert_eq!(kneedle(&pts[..3], Shape::Concave), None);
    }

    #[test]
    fn two_points_fit_sigma_only_and_refuse_to_extrapolate() {
        let fit = fit_usl("processors", &[(1.0, 1000.0), (2.0, 1600.0)]).unwrap();
        assert_eq!(fit.kappa, 0.0);
        assert!((usl(fit.lambda, fit.sigma, fit.kappa, 2.0) - 1600.0).abs() < 1e-6);
        assert_eq!(fit.predict(2.0).map(|x| x.round()), Some(1600.0));
        assert_eq!(fit.predict(4.0), None);
        assert!(fit_usl("processors", &[(2.0, 1.0), (4.0, 2.0)]).unwrap_err().contains("processors=1"));
        assert!(fit_usl("processors", &[(1.0, 1.0)]).is_err());
    }

    proptest! {
        /// Throughputs drawn from the law itself are fitted back (σ, κ and the peak).
        #[test]
        fn usl_fit_recovers_the_law(sigma in 0.0f64..0.3, kappa in 0.0f64..0.05, lambda in 50.0f64..5000.0) {
            let pts: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0].iter().map(|&n| (n, usl(lambda, sigma, kappa, n))).collect();
            let fit = fit_usl("processors", &pts).unwrap();
            prop_assert!((fit.sigma - sigma).abs() < 1e-6, "{fit:?}");
            prop_assert!((fit.kappa - kappa).abs() < 1e-6, "{fit:?}");
            prop_assert!(fit.r2 > 0.999);
            prop_assert_eq!(fit.trusted_up_to, 16.0);
            if kappa > 1e-4 {
                let n = ((1.0 - sigma) / kappa).sqrt();
                prop_assert!((fit.peak_n.unwrap() - n).abs() < 1e-3 * n.max(1.0));
            }
        }
    }
}
